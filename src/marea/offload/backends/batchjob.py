"""What the backends that make one pod one batch job (`slurm`, `htcondor`) share.

The pod directory, the job's name, the bookkeeping of finished and vanished jobs, and the virtual node's
capacity: the size the elastic cluster can grow to, because pods beyond what is free now are not refused but
pend as jobs, and pending jobs are what makes the engine boot workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from marea.config import MareaConfig
from marea.offload.backends.base import Backend, PodStatuses
from marea.offload.backends.local import server_id
from marea.offload.backends.runnerfiles import lose_unfinished
from marea.offload.security import SecurityPolicy
from marea.offload.state import PodRecord

#: how long a job may be missing from the batch system, with no result, before its pod is declared lost
LOST_AFTER_S = 60.0


def job_name(rec: PodRecord) -> str:
    return f"marea-{rec.namespace}-{rec.name}"[:100]


class BatchJobBackend(Backend):
    """One pod = one batch job whose body is the pod runner (`marea.offload.runner`)."""

    def __init__(self, cfg: MareaConfig, pods_dir: Path, default_python: str) -> None:
        self.cfg = cfg
        self.settings = cfg.offload
        self.pods_dir = pods_dir
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        #: labels this server's jobs and containers apart from other servers' (stable per state directory)
        self.server_id = server_id(pods_dir)
        #: python3 on the nodes that runs the pod runner
        self.python = self.settings.python or default_python
        #: statuses of pods whose job has ended: never asked for again
        self.final: dict[str, PodStatuses] = {}
        #: when a job was first missing from the batch system (it is declared lost after a while)
        self.missing_since: dict[str, float] = {}

    @property
    def policy(self) -> SecurityPolicy:
        return SecurityPolicy.from_config(self.settings.security)

    def pod_dir(self, rec: PodRecord) -> Path:
        return Path(rec.objects.get("dir") or self.pods_dir / rec.uid)

    def split_final(self, recs: list[PodRecord]) -> tuple[dict[str, PodStatuses], list[PodRecord]]:
        """The statuses of pods already final (no batch-system query for them) and the pods still to refresh."""
        out = {r.uid: self.final[r.uid] for r in recs if r.uid in self.final}
        return out, [r for r in recs if r.uid not in out]

    def forget(self, rec: PodRecord) -> None:
        """The pod is deleted: drop what is kept about it."""
        self.final.pop(rec.uid, None)
        self.missing_since.pop(rec.uid, None)

    def missing(self, rec: PodRecord, st: PodStatuses, now: float, message: str) -> PodStatuses:
        """The job is not in the batch system's answer: a moment's gap (a restarted controller, a job between
        queue and history) is waited out; after LOST_AFTER_S the pod's unfinished containers are lost."""
        first = self.missing_since.setdefault(rec.uid, now)
        if now - first > LOST_AFTER_S:
            st = lose_unfinished(st, "JobLost", message)
            self.final[rec.uid] = st
        return st

    def capacity(self, recs: list[PodRecord]) -> dict[str, Any]:
        """max_workers x the largest flavour (cpu, memory, GPUs) and `max_pods`."""
        cfg = self.cfg
        biggest = max(cfg.flavours, key=lambda f: (f.cores, f.memory_mb))
        n = max(1, cfg.policy.max_workers)
        return {
            "cpu": str(n * biggest.cores),
            "memory": f"{n * biggest.memory_mb}Mi",
            "pods": str(cfg.offload.max_pods),
            "accelerators": [{"resourceType": "nvidia.com/gpu", "available": str(n * biggest.gpus)}]
            if biggest.gpus
            else [],
        }
