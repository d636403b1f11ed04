"""Build the batch-system driver a configuration asks for."""

from __future__ import annotations

from marea.batch.base import BatchSystem
from marea.config import MareaConfig


def make_batch(cfg: MareaConfig) -> BatchSystem:
    system = cfg.batch.system
    if system == "slurm":
        from marea.batch.slurm import SlurmBatch

        return SlurmBatch(cfg.batch.slurm)
    raise NotImplementedError(f"batch system {system!r} is not available in this build")
