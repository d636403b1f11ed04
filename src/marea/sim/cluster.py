"""The simulated world: a cloud that boots VMs and a batch system that runs jobs on them, in simulated time.

The cloud: a boot takes a time drawn from the configured distribution; a boot fails (the VM never joins) with
the configured probability; the project quota limits instances and cores. The batch system: jobs wait in one
FIFO queue and start on the free cores (and memory, GPUs) of joined, non-draining workers; a job that does not
fit is skipped and later ones that fit start (backfill without reservations, what HTCondor's matchmaking and a
busy Slurm backfill scheduler do for small jobs). Jobs run for their recorded run time and are never killed by
the simulation itself; a policy that deletes a busy VM gets its jobs back in the queue, counted as killed.

This module keeps the state and the accounting; it decides nothing about scaling (the controllers do).
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field

from marea.lifecycle import Batch, Cloud, check_move, observe
from marea.model import Flavour, InstanceState, Resources
from marea.sim.trace import TraceJob

Shape = tuple[float, float, int]  # cores, memory MiB, GPUs


@dataclass(frozen=True, slots=True)
class CloudModel:
    """What the simulated cloud does: boot times (uniform in mean +- jitter), failures, quota."""

    boot_time_s: float = 420.0
    boot_time_jitter_s: float = 0.0
    boot_failure_rate: float = 0.0
    quota_instances: int | None = None
    quota_cores: int | None = None
    seed: int = 0
    #: VM-seconds every boot costs on top of the VM's lifetime, failed or short boots included (see
    #: SimulateSection.boot_price_vm_s): what makes a shorter idle threshold, and so more boots, not free
    boot_price_vm_s: float = 0.0


#: how the batch system places a job among the workers it fits: "pack" fills the oldest worker first (Slurm's
#: default: nodes in order, no LLN), "spread" puts it on the worker with the most free cores (HTCondor's default
#: breadth-first matchmaking, NEGOTIATOR_DEPTH_FIRST = false; Kubernetes' LeastAllocated scoring)
PLACEMENTS = ("pack", "spread")


@dataclass(slots=True, eq=False)
class SimJob:
    trace: TraceJob
    shape: Shape
    #: submission order: breaks ties between jobs submitted at the same instant (FIFO), deterministically
    seq: int = 0
    start: float = -1.0
    end_at: float = -1.0
    worker: SimWorker | None = None
    killed: int = 0


@dataclass(slots=True, eq=False)
class SimWorker:
    """One VM: its lifecycle state (the engine's states), its free room, and its accounting."""

    id: str
    seq: int
    flavour: Flavour
    group: str
    created_at: float
    state: InstanceState
    state_since: float
    free_cores: float
    free_memory_mb: float
    free_gpus: int
    will_join: bool = True
    jobs: int = 0
    running: set[SimJob] = field(default_factory=set)
    idle_since: float | None = None
    busy_since: float | None = None
    busy_total: float = 0.0
    deleted_at: float | None = None

    @property
    def joined(self) -> bool:
        return self.state in (InstanceState.IDLE, InstanceState.BUSY, InstanceState.DRAINING)

    def fits(self, shape: Shape) -> bool:
        return shape[0] <= self.free_cores and shape[1] <= self.free_memory_mb and shape[2] <= self.free_gpus

    @property
    def free(self) -> Resources:
        return Resources(self.free_cores, self.free_memory_mb, self.free_gpus)


_END, _JOIN = 0, 1


@dataclass(slots=True)
class Accounting:
    vm_seconds: float = 0.0
    busy_seconds: float = 0.0
    boots: int = 0
    failed_boots: int = 0
    jobs_killed: int = 0
    joins: int = 0
    refused_boots: int = 0
    boot_price_seconds: float = 0.0


class SimCluster:
    """Cloud and batch system state at the current simulated time `now`, with an event heap for job ends
    and VM joins. Every mutation sets `changed`, which tells event-driven controllers to look again.
    """

    def __init__(self, cloud: CloudModel, start: float, placement: str = "pack") -> None:
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r}: choose among {', '.join(PLACEMENTS)}")
        self.cloud = cloud
        self.spread = placement == "spread"
        self.now = start
        self.rng = random.Random(cloud.seed)
        self.workers: dict[str, SimWorker] = {}  # alive (not gone), in creation order
        self.queues: dict[Shape, deque[SimJob]] = {}
        self.queued = 0
        self.queued_cores = 0.0
        self.running = 0
        self.running_cores = 0.0
        self.changed = False
        self.n_booting = 0  # alive VMs not joined yet
        self.n_busy = 0  # VMs running at least one job
        self.acct = Accounting()
        self._events: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self._worker_seq = 0
        self._job_seq = 0

    # ---- events -------------------------------------------------------------------------------------
    def _push(self, when: float, kind: int, obj: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (when, self._seq, kind, obj))

    def next_event_time(self) -> float | None:
        return self._events[0][0] if self._events else None

    def process_events_until(self, t: float) -> None:
        """Apply every job end and VM join due at or before `t` (ends first at equal times, then joins)."""
        events = self._events
        while events and events[0][0] <= t:
            when, _, kind, obj = heapq.heappop(events)
            self.now = when
            if kind == _END:
                assert isinstance(obj, SimJob)
                if obj.worker is not None and obj.end_at == when:  # else killed with its VM, requeued
                    self._end_job(obj)
            else:
                assert isinstance(obj, SimWorker)
                self._join(obj)
        self.now = t

    # ---- cloud ---------------------------------------------------------------------------------------
    def alive_workers(self) -> int:
        return len(self.workers)

    def alive_cores(self) -> int:
        return sum(w.flavour.cores for w in self.workers.values())

    def within_quota(self, flavour: Flavour) -> bool:
        c = self.cloud
        if c.quota_instances is not None and self.alive_workers() + 1 > c.quota_instances:
            return False
        return c.quota_cores is None or self.alive_cores() + flavour.cores <= c.quota_cores

    def boot(self, flavour: Flavour, group: str = "", joined: bool = False) -> SimWorker | None:
        """Create a VM now; it joins after a sampled boot time, or never when the boot fails. The cloud
        refuses (None) a VM beyond the project quota. `joined=True` makes a worker that is already there (the
        initial cluster), not counted as a boot.
        """
        if not joined and not self.within_quota(flavour):
            self.acct.refused_boots += 1
            return None
        self._worker_seq += 1
        now = self.now
        w = SimWorker(
            id=f"vm-{self._worker_seq:06d}",
            seq=self._worker_seq,
            flavour=flavour,
            group=group,
            created_at=now,
            state=InstanceState.BOOTING,
            state_since=now,
            free_cores=float(flavour.cores),
            free_memory_mb=float(flavour.memory_mb),
            free_gpus=flavour.gpus,
        )
        self.workers[w.id] = w
        self.n_booting += 1
        self.changed = True
        if joined:
            self._join(w)
            return w
        self.acct.boots += 1
        c = self.cloud
        if c.boot_price_vm_s:
            self.acct.vm_seconds += c.boot_price_vm_s
            self.acct.boot_price_seconds += c.boot_price_vm_s
        if c.boot_failure_rate > 0 and self.rng.random() < c.boot_failure_rate:
            w.will_join = False
            return w
        duration = c.boot_time_s
        if c.boot_time_jitter_s > 0:
            duration += self.rng.uniform(-c.boot_time_jitter_s, c.boot_time_jitter_s)
        self._push(now + max(0.0, duration), _JOIN, w)
        return w

    def _join(self, w: SimWorker) -> None:
        if w.deleted_at is not None:
            return
        self.n_booting -= 1
        self._observe(w, Batch.IDLE)
        self.acct.joins += 1
        self.changed = True
        self.schedule(only=w)

    def drain(self, w: SimWorker) -> None:
        """Accept no new jobs on `w`; running jobs finish. An idle worker is drained at once."""
        move(w, InstanceState.DRAINING)
        w.state_since = self.now
        self.changed = True

    def delete(self, w: SimWorker, failed_boot: bool = False) -> None:
        """Remove the VM now. Jobs still on it (a policy that does not drain) go back to the queue."""
        if w.deleted_at is not None:
            return
        now = self.now
        if not w.joined:
            self.n_booting -= 1
        if w.jobs:
            self.n_busy -= 1
        for job in list(w.running):
            self._requeue(job)
        w.running.clear()
        w.jobs = 0
        if w.busy_since is not None:
            w.busy_total += now - w.busy_since
            w.busy_since = None
        w.deleted_at = now
        move(w, InstanceState.GONE)
        self.acct.vm_seconds += now - w.created_at
        self.acct.busy_seconds += w.busy_total
        if failed_boot:
            self.acct.failed_boots += 1
        del self.workers[w.id]
        self.changed = True

    def finish(self) -> None:
        """Close the accounting of every VM still alive at the end of the run."""
        now = self.now
        for w in list(self.workers.values()):
            if w.busy_since is not None:
                w.busy_total += now - w.busy_since
                w.busy_since = None
            self.acct.vm_seconds += now - w.created_at
            self.acct.busy_seconds += w.busy_total

    # ---- batch system --------------------------------------------------------------------------------
    def submit(self, tj: TraceJob) -> SimJob:
        self._job_seq += 1
        job = SimJob(tj, (tj.cores, tj.memory_mb, tj.gpus), self._job_seq)
        self._enqueue(job)
        return job

    def _enqueue(self, job: SimJob) -> None:
        q = self.queues.get(job.shape)
        if q is None:
            q = self.queues[job.shape] = deque()
        q.append(job)
        self.queued += 1
        self.queued_cores += job.shape[0]
        self.changed = True

    def _requeue(self, job: SimJob) -> None:
        """A killed job goes back to the head of its queue: it keeps its place and its submit time."""
        job.killed += 1
        self.acct.jobs_killed += 1
        self.running -= 1
        self.running_cores -= job.shape[0]
        job.worker = None
        job.start = -1.0
        q = self.queues.setdefault(job.shape, deque())
        q.appendleft(job)
        self.queued += 1
        self.queued_cores += job.shape[0]

    def schedulable(self) -> list[SimWorker]:
        return [w for w in self.workers.values() if w.state in (InstanceState.IDLE, InstanceState.BUSY)]

    def schedule(self, only: SimWorker | None = None) -> None:
        """Start queued jobs in FIFO order wherever they fit; skip (and keep) those that fit nowhere.

        After a pass no queued job fits any schedulable worker, so when only one worker gained room (a job
        ended, a VM joined) only that worker needs to be tried: the result is the same as a full pass.
        """
        if not self.queued:
            return
        if only is not None:
            if only.state not in (InstanceState.IDLE, InstanceState.BUSY):
                return
            candidates = [only]
        else:
            candidates = [w for w in self.schedulable() if w.free_cores > 0 or w.free_gpus > 0]
        if not candidates:
            return
        heads: list[tuple[float, int, Shape]] = []
        for shape, q in self.queues.items():
            if q:
                heads.append((q[0].trace.submit, q[0].seq, shape))
        heapq.heapify(heads)
        while heads:
            _, _, shape = heapq.heappop(heads)
            q = self.queues[shape]
            while q:
                target = self._place(candidates, shape)
                if target is None:
                    break  # later jobs of this shape do not fit either
                self._start(q.popleft(), target)
                if q and heads and (q[0].trace.submit, q[0].seq) > heads[0][:2]:
                    heapq.heappush(heads, (q[0].trace.submit, q[0].seq, shape))
                    break

    def _place(self, candidates: list[SimWorker], shape: Shape) -> SimWorker | None:
        """The worker a job of `shape` starts on (None: fits nowhere): the oldest that fits (pack) or the one
        with the most free cores, the oldest among equals (spread)."""
        if not self.spread:
            for w in candidates:
                if w.fits(shape):
                    return w
            return None
        best: SimWorker | None = None
        for w in candidates:
            if w.fits(shape) and (best is None or w.free_cores > best.free_cores):
                best = w
        return best

    def _observe(self, w: SimWorker, batch: Batch) -> None:
        """What the engine's poll would do on seeing `w` so: the engine's lifecycle table (`lifecycle.observe`)
        moves the simulated worker, so the simulator makes exactly the engine's moves."""
        t = observe(w.state, Cloud.UP, batch, now=self.now, idle_since=w.idle_since, ever_joined=w.joined)
        if t.state is not w.state:
            move(w, t.state)
            w.state_since = self.now
        w.idle_since = t.idle_since

    def _start(self, job: SimJob, w: SimWorker) -> None:
        now = self.now
        shape = job.shape
        w.free_cores -= shape[0]
        w.free_memory_mb -= shape[1]
        w.free_gpus -= shape[2]
        if w.jobs == 0:
            self.n_busy += 1
            w.busy_since = now
            self._observe(w, Batch.BUSY)
        w.jobs += 1
        w.running.add(job)
        job.worker = w
        job.start = now
        job.end_at = now + job.trace.runtime
        self.queued -= 1
        self.queued_cores -= shape[0]
        self.running += 1
        self.running_cores += shape[0]
        self.changed = True
        self._push(job.end_at, _END, job)

    def _end_job(self, job: SimJob) -> None:
        w = job.worker
        assert w is not None
        now = self.now
        shape = job.shape
        w.free_cores += shape[0]
        w.free_memory_mb += shape[1]
        w.free_gpus += shape[2]
        w.jobs -= 1
        w.running.discard(job)
        job.worker = None
        self.running -= 1
        self.running_cores -= shape[0]
        self.changed = True
        if w.jobs == 0:
            self.n_busy -= 1
            if w.busy_since is not None:
                w.busy_total += now - w.busy_since
                w.busy_since = None
            self._observe(w, Batch.IDLE)  # a draining worker stays draining (drained)
        if w.state is not InstanceState.DRAINING:
            self.schedule(only=w)


def move(w: SimWorker, new: InstanceState) -> None:
    """Change a simulated worker's state through the engine's own lifecycle table: the simulator makes only the
    moves the engine may make (an illegal one is a simulator bug and stops the run)."""
    check_move(w.id, w.state, new)
    w.state = new
