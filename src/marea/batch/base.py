"""The interface to a batch system: demand, workers, drain, removal.

Shaped for the three systems marea drives: Slurm (pending jobs' CPUs and memory; nodes from sinfo; drain with
`scontrol update state=DRAIN`), HTCondor (idle jobs' RequestCpus/RequestMemory/RequestGPUs; startd slots;
`condor_drain -graceful`) and Kubernetes (unschedulable pods' requests; nodes; cordon + evict). Like cloud
drivers, batch drivers carry out and report; they never decide.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from marea.model import DemandGroup, Flavour, Resources, Unsatisfiable

#: the startd attribute an HTCondor worker advertises with the name marea gave its VM (the key the engine finds
#: it by); here, not in the driver, because the cluster maker writes it into worker user-data without bindings
HTCONDOR_WORKER_ATTR = "MareaWorker"


class BatchError(Exception):
    """A batch-system call failed; the message is short and free of secrets."""


@dataclass(frozen=True, slots=True)
class Worker:
    """One worker as the batch system sees it, keyed by the name marea gave the VM."""

    name: str
    total: Resources
    free: Resources
    busy: bool
    #: told to accept no new work
    draining: bool = False
    #: draining and nothing runs on it any more: safe to delete
    drained: bool = False
    #: the batch system has lost contact with it (Slurm `down*`, HTCondor ad expired)
    lost: bool = False
    address: str | None = None


@dataclass(frozen=True, slots=True)
class BatchSnapshot:
    demand: tuple[DemandGroup, ...] = ()
    unsatisfiable: tuple[Unsatisfiable, ...] = ()
    workers: dict[str, Worker] = field(default_factory=dict)
    #: jobs queued for this cluster in total (for status), including unsatisfiable ones
    queued_jobs: int = 0


class BatchSystem(abc.ABC):
    name: str = "abstract"

    @abc.abstractmethod
    def snapshot(self, flavours: tuple[Flavour, ...]) -> BatchSnapshot:
        """Queued demand (grouped by shape) and the workers, read in one pass."""

    @abc.abstractmethod
    def drain(self, worker: str, reason: str) -> None:
        """Stop new work from starting on `worker`; running work continues. Idempotent."""

    @abc.abstractmethod
    def resume(self, worker: str) -> None:
        """Undo a drain: `worker` accepts new work again (its running work never stopped). Idempotent; a worker
        that is not draining is left as it is. Slurm: state=RESUME; HTCondor: cancel the drain; Kubernetes:
        uncordon."""

    @abc.abstractmethod
    def remove(self, worker: str) -> bool:
        """Forget a drained worker before its VM is deleted. True when removed or unknown; False when the
        batch system refuses because work still runs there (the caller must not delete the VM then)."""

    def pending_jobs(self) -> frozenset[str] | None:
        """The ids of the jobs queued for this cluster, read as cheaply as the batch system allows: the change
        detector the engine polls between full cycles (a new id wakes the next cycle early). None: this driver
        has no cheap detector, the engine waits the whole interval."""
        return None

    def join_variables(self, worker: str) -> dict[str, str]:
        """Placeholders for the user-data of the new worker `worker` that tell it how to join (controller,
        keys; a credential of its own where the batch system allows one)."""
        return {}

    def close(self) -> None:
        """Release connections."""
