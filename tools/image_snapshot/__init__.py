"""Build an EBS snapshot whose containerd image store already holds the inference images.

A GPU node whose EC2NodeClass maps a volume from this snapshot as /dev/xvdb
starts with the images on disk instead of pulling 10-20 GB per image (see
docs/image-snapshot.md and domain/image_cache.py).

What a build does, in order: resolve the EKS-optimized AMI (AL2023 or
Bottlerocket) from its SSM public parameter; launch a temporary instance (IMDSv2
only, no key pair, no inbound rules, tagged with the build ID) with a blank data
volume; through SSM Run Command prepare the volume, pull every image into
containerd's `k8s.io` namespace, check them and flush the volume; stop the
instance; snapshot the data volume with tags naming its images and content hash;
wait for the snapshot. The instance and its security group are deleted afterwards
whatever happened, and a snapshot of a failed build is deleted too.

The package, one concern per module:
- `cli`: the command line (`gpuinf-image-snapshot`, `python -m tools.image_snapshot`):
  arguments, their validation into `Options`, `main()`.
- `options`: `Options`, what one build is asked for, with its defaults and limits.
- `plan`: the build as data, every AWS call and shell script in order (`--dry-run` prints it).
- `scripts`: the shell scripts, rendered from the `.sh` files in `templates/`.
- `placeholders`: `{{name}}` values that only a running build knows (IDs, the ECR password).
- `executor`: runs a plan against boto3: waits, retries, cleanup whatever happened.
- `report`: what the command prints: the plan, the result, the stack config to set.
"""
