"""Headroom: a small warm capacity sized on the recent arrival rate of queued work, so that a job arriving at a
busy cluster need not wait a whole boot. Optional (`headroom`, off by default) and measured: docs/simulator.md.

Little's law: the work that arrives during one boot time is about rate x boot time; holding that much capacity
warm lets it start at once instead of after a boot. The rate is that of work newly seen queued
(marea.policy.arrivals), in cores and memory; the target is that work in whole VMs of the first flavour
(rounded to the nearest: half a VM of expected work or more keeps one), capped by `headroom_max_workers` and
`max_workers`. Warm workers are the idle ones (joined, no job) and the booting ones no queued work was packed
into, in the default group. The planner boots up to the target; the reaper keeps the youngest idle workers
that make it up (the longest idle still go first). Pure: the view and the settings in, numbers out.
"""

from __future__ import annotations

from marea.model import STARTING_STATES, ClusterView, InstanceState, InstanceView, PolicySettings


def target_workers(view: ClusterView, settings: PolicySettings) -> int:
    """How many workers to hold warm now: 0 when headroom is off or nothing arrived within the window."""
    if not settings.headroom or not settings.flavours:
        return 0
    flavour = settings.flavours[0]
    a, boot = view.arrivals, settings.headroom_boot_s
    vms = max(a.cores_per_s * boot / max(1, flavour.cores), a.memory_mb_per_s * boot / max(1, flavour.memory_mb))
    return max(0, min(int(vms + 0.5), settings.headroom_max_workers, settings.max_workers))


def _spare(view: ClusterView, needed: frozenset[str]) -> tuple[list[InstanceView], int]:
    """The idle workers and the number of starting ones that no queued work was packed into."""
    idle = [i for i in view.instances if i.state is InstanceState.IDLE and i.group == "" and i.id not in needed]
    starting = sum(1 for i in view.instances if i.state in STARTING_STATES and i.group == "" and i.id not in needed)
    return idle, starting


def shortfall(view: ClusterView, settings: PolicySettings, needed: frozenset[str], booting_now: int = 0) -> int:
    """How many VMs to boot for warm capacity, beyond the `booting_now` spare ones this plan already boots."""
    target = target_workers(view, settings)
    if target == 0:
        return 0
    idle, starting = _spare(view, needed)
    return max(0, target - len(idle) - starting - booting_now)


def kept_idle(view: ClusterView, settings: PolicySettings, needed: frozenset[str]) -> frozenset[str]:
    """The idle workers the reaper leaves alone: the youngest ones, as many as the target less the spare
    workers still booting."""
    target = target_workers(view, settings)
    if target == 0:
        return frozenset()
    idle, starting = _spare(view, needed)
    keep = max(0, target - starting)
    idle.sort(key=lambda i: (i.idle_since if i.idle_since is not None else view.now, i.id), reverse=True)
    return frozenset(i.id for i in idle[:keep])


def kept_booting(view: ClusterView, settings: PolicySettings, needed: frozenset[str]) -> int:
    """How many spare booting VMs are warm capacity (the target less the spare idle workers): the reaper's
    cancelling of surplus boots spares that many, so that headroom's boots are not cancelled the next cycle."""
    target = target_workers(view, settings)
    if target == 0:
        return 0
    idle, _ = _spare(view, needed)
    return max(0, target - len(idle))


def reason(view: ClusterView, settings: PolicySettings, count: int) -> str:
    """Why warm capacity was booted, for the decision log."""
    a = view.arrivals
    return (
        f"{count} x {settings.flavours[0].name} for headroom: {a.cores_per_s * 3600:.0f} cores/h queued over the "
        f"last {a.window_s:.0f} s x {settings.headroom_boot_s:g} s boot -> {target_workers(view, settings)} "
        "warm worker(s)"
    )
