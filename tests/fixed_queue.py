"""A batch system with a fixed queue, for engine tests whose subject is a cloud driver.

Used where no worker can ever join (the OpenStack testbed's fake servers and moto's instances run no
user-data): the demand side is then a constant, and what is checked is how the engine uses the cloud.
"""

from __future__ import annotations

from marea.batch.base import BatchSnapshot, BatchSystem
from marea.model import DemandGroup, Flavour, Resources


class FixedQueue(BatchSystem):
    """`jobs` queued jobs of one shape that never start."""

    name = "fixed-queue"

    def __init__(self, jobs: int, cores: float = 1.0, memory_mb: float = 1000.0) -> None:
        self.jobs, self.request = jobs, Resources(cores, memory_mb)

    def snapshot(self, flavours: tuple[Flavour, ...]) -> BatchSnapshot:
        return BatchSnapshot(demand=(DemandGroup(self.request, self.jobs),), queued_jobs=self.jobs)

    def drain(self, worker: str, reason: str) -> None:
        pass

    def resume(self, worker: str) -> None:
        pass

    def remove(self, worker: str) -> bool:
        return True
