"""Core value types shared by the policy, the engine, the drivers and the simulator.

Everything here is a plain frozen dataclass or an enum: no I/O, no clock reads. The policy package imports
nothing of marea but this module, so these types are the whole vocabulary of a scaling decision.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of compute: cores, memory in MiB and GPUs. Used for jobs, slots, flavours and quotas."""

    cores: float = 0.0
    memory_mb: float = 0.0
    gpus: int = 0

    def fits_in(self, other: Resources) -> bool:
        """True when this amount fits inside `other` in every dimension."""
        return self.cores <= other.cores and self.memory_mb <= other.memory_mb and self.gpus <= other.gpus

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cores + other.cores, self.memory_mb + other.memory_mb, self.gpus + other.gpus)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cores - other.cores, self.memory_mb - other.memory_mb, self.gpus - other.gpus)

    def scaled(self, n: int) -> Resources:
        return Resources(self.cores * n, self.memory_mb * n, self.gpus * n)

    def copies_that_fit(self, job: Resources) -> int:
        """How many copies of `job` fit in this amount (a large number when the job asks for nothing)."""
        limits = []
        if job.cores > 0:
            limits.append(int(self.cores // job.cores))
        if job.memory_mb > 0:
            limits.append(int(self.memory_mb // job.memory_mb))
        if job.gpus > 0:
            limits.append(self.gpus // job.gpus)
        if not limits:
            return 1 << 30
        return max(0, min(limits))

    def __str__(self) -> str:
        text = f"{self.cores:g} cores, {self.memory_mb:g} MiB"
        if self.gpus:
            text += f", {self.gpus} GPUs"
        return text


@dataclass(frozen=True, slots=True)
class Flavour:
    """A VM size the cloud offers and the admin allowed. Order in the config is the admin's preference."""

    name: str
    cores: int
    memory_mb: int
    gpus: int = 0

    @property
    def resources(self) -> Resources:
        return Resources(float(self.cores), float(self.memory_mb), self.gpus)


@dataclass(frozen=True, slots=True)
class DemandGroup:
    """`count` queued jobs of one shape. Sources group jobs so that the planner works on shapes, not jobs.

    `group` separates demand that only some workers may serve (a Slurm partition, an HTCondor requirement
    class); the empty string means any worker of the cluster.
    """

    request: Resources
    count: int = 1
    group: str = ""
    oldest_submit_time: float | None = None
    #: the only flavours this demand may boot, in no particular order (empty: any that fits); a Kubernetes pod
    #: pinned to instance types, or one that tolerates only some flavours' taints. Such demand gets a `group`
    #: of its own, so that workers of other flavours are not counted as room for it.
    flavours: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Unsatisfiable:
    """Queued work that no configured flavour could ever run: reported, never turned into a boot."""

    job_ids: tuple[str, ...]
    reason: str


class InstanceState(enum.StrEnum):
    """Lifecycle of one worker VM, as the engine stores it.

    requested -> booting -> joined -> (idle <-> busy) -> draining -> deleting -> gone, or failed with a reason
    (a failed instance is still deleted from the cloud, then becomes gone).
    """

    REQUESTED = "requested"  # intent persisted, cloud create not yet confirmed
    BOOTING = "booting"  # the cloud accepted it; not yet seen in the batch system
    IDLE = "idle"  # joined, no work on it
    BUSY = "busy"  # joined, running work
    DRAINING = "draining"  # told to accept no new work; existing work runs to completion
    DELETING = "deleting"  # removal from the batch system and the cloud in progress
    FAILED = "failed"  # never joined, or the cloud reported an error: will be deleted
    GONE = "gone"  # deleted everywhere; kept for history

    @property
    def joined(self) -> bool:
        return self in (InstanceState.IDLE, InstanceState.BUSY)

    @property
    def alive(self) -> bool:
        """Occupies (or may occupy) a VM in the cloud."""
        return self is not InstanceState.GONE


#: States in which a worker still counts as capacity the cluster will have.
ACTIVE_STATES = frozenset({InstanceState.REQUESTED, InstanceState.BOOTING, InstanceState.IDLE, InstanceState.BUSY})
#: States of an instance whose VM has not joined the batch system yet.
STARTING_STATES = frozenset({InstanceState.REQUESTED, InstanceState.BOOTING})


@dataclass(frozen=True, slots=True)
class InstanceView:
    """What the policy knows of one instance: its state, its size, and the times that matter.

    `free` is the unallocated part of a joined worker as the batch system reports it (None: unknown, treat as
    the whole flavour). `drained` is True once a draining worker runs nothing any more.
    """

    id: str
    flavour: str
    state: InstanceState
    state_since: float
    created_at: float
    group: str = ""
    free: Resources | None = None
    idle_since: float | None = None
    drained: bool = False
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class Quota:
    """What the cloud project still has room for, beyond what is already running (None: no limit)."""

    instances: int | None = None
    cores: int | None = None
    memory_mb: int | None = None
    gpus: int | None = None


@dataclass(frozen=True, slots=True)
class BootFailures:
    """Recent boot failures, for exponential backoff. Kept in the store, so a restart does not reset them."""

    consecutive: int = 0
    last_at: float | None = None
    last_reason: str = ""


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """The knobs of the scaling policy; built from the config, kept here so the policy imports no config."""

    flavours: tuple[Flavour, ...]
    min_workers: int = 0
    max_workers: int = 10
    #: the upper bound of the adaptive parallel-boot limit (the ramp, marea.policy.ramp)
    max_parallel_boots: int = 200
    idle_threshold_s: float = 300.0
    join_timeout_s: float = 600.0
    #: a drain still running after this long is reported (its jobs are never killed); None: never reported
    drain_timeout_s: float | None = None
    backoff_base_s: float = 30.0
    backoff_max_s: float = 1800.0
    #: the flavour booted to reach min_workers (default: the first flavour)
    min_flavour: str | None = None
    #: where the adaptive parallel-boot limit starts (a fresh cluster, or one with no ramp state stored)
    initial_parallel_boots: int = 10
    #: drain partly used busy workers whose running jobs would fit in the free room of a busier one (least
    #: loaded first), when no job is queued: they are deleted the moment their last job ends instead of idling
    consolidate: bool = False
    #: queued work waits this long for room on busy workers before a VM boots for it
    boot_patience_s: float = 0.0
    #: delete booting VMs no queued work needs any more
    cancel_surplus_boots: bool = False
    #: keep warm capacity (marea.policy.headroom): about the work newly queued over one boot time
    headroom: bool = False
    #: the most workers headroom keeps warm (idle, or booting for no queued work)
    headroom_max_workers: int = 2
    #: the window over which the arrival rate of queued work is measured
    headroom_window_s: float = 1800.0
    #: the boot time headroom covers: a VM's time from the create call to joining the batch system
    headroom_boot_s: float = 300.0


@dataclass(frozen=True, slots=True)
class ArrivalRate:
    """Work newly seen queued per second, averaged over the last `window_s` (marea.policy.arrivals).

    "Newly seen queued": the growth of each demand shape's count between two observations. A job that starts
    at once on free room is never queued at an observation and is not counted: this is the rate of work that
    found no room, which is the work warm capacity would have served.
    """

    cores_per_s: float = 0.0
    memory_mb_per_s: float = 0.0
    window_s: float = 0.0


@dataclass(frozen=True, slots=True)
class BootRound:
    """One cycle's creates that the cloud accepted, judged together once the cloud has confirmed them all.

    Why kept: Nova accepts a create and may put the server in ERROR a moment later (its conductor rechecks the
    quota), so an accepted create proves nothing yet. `size` is how many creates the round counts for: those the
    cycle had accepted, or half the limit when they brought the boots in flight up to the limit (the limit was
    the bottleneck, marea.policy.ramp); `waiting` the instance ids not confirmed yet (seen ACTIVE, or joined).
    """

    size: int
    waiting: frozenset[str]


@dataclass(frozen=True, slots=True)
class BootRamp:
    """The adaptive parallel-boot limit as the last cycles left it. Kept in the store: a restart keeps it.

    `limit` None: no cycle has moved it yet, the policy starts from `initial_parallel_boots`. `rounds`: the
    rounds of creates asked at the current limit whose confirmation is still awaited (marea.policy.ramp); they
    are in the store with the limit (one write, at the end of each cycle), so a restart neither counts a
    confirmation twice nor forgets a round; a crash within the cycle that asked a round loses only that round,
    which can delay a doubling, never cause one.
    """

    limit: int | None = None
    rounds: tuple[BootRound, ...] = ()


@dataclass(frozen=True, slots=True)
class ClusterView:
    """Everything the policy sees at one instant."""

    now: float
    instances: tuple[InstanceView, ...]
    demand: tuple[DemandGroup, ...] = ()
    quota: Quota = field(default_factory=Quota)
    failures: BootFailures = field(default_factory=BootFailures)
    ramp: BootRamp = field(default_factory=BootRamp)
    #: the recent arrival rate of queued work (zero unless headroom is on: only headroom reads it)
    arrivals: ArrivalRate = field(default_factory=ArrivalRate)


class ActionKind(enum.StrEnum):
    BOOT = "boot"
    DRAIN = "drain"
    DELETE = "delete"
    RESUME = "resume"  # a draining worker taken back for new work, instead of booting a VM
    WAIT = "wait"  # a decision not to act, recorded with its reason (quota, backoff, caps)


@dataclass(frozen=True, slots=True)
class Action:
    """One step of a plan. `reason` is for humans: it is logged, stored and shown by `status --explain`."""

    kind: ActionKind
    reason: str
    flavour: str | None = None
    count: int = 0
    instance_id: str | None = None
    failed_boot: bool = False
    group: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...] = ()

    def of_kind(self, kind: ActionKind) -> list[Action]:
        return [a for a in self.actions if a.kind is kind]

    @property
    def boots(self) -> int:
        return sum(a.count for a in self.actions if a.kind is ActionKind.BOOT)
