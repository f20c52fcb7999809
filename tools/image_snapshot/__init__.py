"""Build an EBS snapshot holding container images for GPU node image caches."""
