"""Build the batch-system driver a configuration asks for."""

from __future__ import annotations

from marea.batch.base import BatchSystem
from marea.config import MareaConfig


def make_batch(cfg: MareaConfig) -> BatchSystem:
    system = cfg.batch.system
    if system == "slurm":
        from marea.batch.slurm import SlurmBatch

        return SlurmBatch(cfg.batch.slurm)
    if system == "htcondor":
        from marea.batch.htcondor import HTCondorBatch

        hc = cfg.batch.htcondor
        files = {
            k: str(cfg.path(v))
            for k in ("condor_config", "token_file", "revocation_file", "token_registry")
            if (v := getattr(hc, k))
        }
        return HTCondorBatch(hc.model_copy(update=files))
    if system == "kubernetes":
        from marea.batch.kubernetes import KubernetesBatch

        kube = cfg.batch.kubernetes
        path = {"kubeconfig": str(cfg.path(kube.kubeconfig))} if kube.kubeconfig else {}
        return KubernetesBatch(kube.model_copy(update=path), cluster=cfg.cluster.name)
    raise NotImplementedError(f"batch system {system!r} is not available in this build")
