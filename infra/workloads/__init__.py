"""Pulumi components for what runs on the cluster: inference services, batch jobs, the load
generator, their namespaces. The code that runs inside their containers is the `workloads` package."""
