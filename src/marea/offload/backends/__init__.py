"""Offload backends: where an offloaded pod runs (local podman, a Slurm job, a remote Kubernetes cluster)."""
