"""Scale down: which workers to drain, which drained or failed VMs to delete.

The rules that make marea safe where elastiq was not: a chosen worker is always drained first, never below the
minimum, never one the queued work was just packed into (or a draining one it resumes); it is deleted only once
the batch system says it runs nothing. Two kinds of worker are drained:
- idle (no job on it) for longer than the threshold, longest idle first (with headroom on, the youngest idle
  workers that make up the warm capacity are kept: marea.policy.headroom);
- consolidation: with no job queued, a busy worker whose running load would fit in the free room of one of
  the workers kept, least loaded first. Its jobs run to their end (nothing is killed or moved) but no new job
  lands on it, so the least loaded workers empty first and each is deleted the moment its last job ends,
  instead of idling for the threshold; new work that finds no room elsewhere resumes it before any VM boots.
A VM that never joins within the join timeout, or that the cloud put in error, is deleted and counted as a
failed boot. A drain longer than `drain_timeout_s` is reported (WAIT); the worker stays draining, its jobs are
never killed, and it is the first draining worker new work takes back.
"""

from __future__ import annotations

from marea.model import (
    ACTIVE_STATES,
    STARTING_STATES,
    Action,
    ActionKind,
    ClusterView,
    InstanceState,
    InstanceView,
    PolicySettings,
    Resources,
)
from marea.policy import headroom


def plan_scale_down(view: ClusterView, settings: PolicySettings, needed: frozenset[str] = frozenset()) -> list[Action]:
    """Deletes of failed, timed-out and drained VMs, then drains of idle workers above the minimum."""
    now = view.now
    actions: list[Action] = []
    for inst in view.instances:
        if inst.state is InstanceState.FAILED:
            actions.append(
                Action(
                    ActionKind.DELETE,
                    f"{inst.id} failed: {inst.failure or 'unknown error'}",
                    instance_id=inst.id,
                    failed_boot=True,
                )
            )
        elif inst.state in STARTING_STATES and now - inst.created_at > settings.join_timeout_s:
            actions.append(
                Action(
                    ActionKind.DELETE,
                    f"{inst.id} did not join the batch system within {settings.join_timeout_s:g} s",
                    instance_id=inst.id,
                    failed_boot=True,
                )
            )
        elif inst.state is InstanceState.DRAINING and inst.drained and inst.id not in needed:
            actions.append(Action(ActionKind.DELETE, f"{inst.id} is drained: no job runs on it", instance_id=inst.id))
        elif (
            inst.state is InstanceState.DRAINING
            and inst.id not in needed
            and settings.drain_timeout_s is not None
            and now - inst.state_since > settings.drain_timeout_s
        ):
            actions.append(
                Action(
                    ActionKind.WAIT,
                    f"{inst.id} has been draining for {now - inst.state_since:.0f} s (> drain_timeout_s "
                    f"{settings.drain_timeout_s:g} s): its jobs still run and are not killed; it stays draining",
                    instance_id=inst.id,
                )
            )

    timed_out = {a.instance_id for a in actions if a.kind is ActionKind.DELETE}
    active = sum(1 for i in view.instances if i.state in ACTIVE_STATES and i.id not in timed_out)
    warm = headroom.kept_idle(view, settings, needed)
    if settings.cancel_surplus_boots:
        cancelled = _cancel_surplus(
            view, settings, needed | timed_out, active, headroom.kept_booting(view, settings, needed)
        )
        actions += cancelled
        active -= len(cancelled)
    candidates = [
        i
        for i in view.instances
        if i.state is InstanceState.IDLE
        and i.id not in needed
        and i.id not in warm
        and i.idle_since is not None
        and now - i.idle_since > settings.idle_threshold_s
    ]
    candidates.sort(key=lambda i: (i.idle_since, i.id))  # longest idle first
    for inst in candidates:
        if active <= settings.min_workers:
            break
        assert inst.idle_since is not None
        actions.append(
            Action(
                ActionKind.DRAIN,
                f"{inst.id} idle for {now - inst.idle_since:.0f} s (> {settings.idle_threshold_s:g} s), "
                f"{active} active workers > minimum {settings.min_workers}",
                instance_id=inst.id,
            )
        )
        active -= 1
    drained_now = {a.instance_id for a in actions if a.kind is ActionKind.DRAIN}
    actions += _consolidate(view, settings, needed, drained_now | timed_out, active)
    return actions


def _cancel_surplus(
    view: ClusterView, settings: PolicySettings, excluded: frozenset[str | None], active: int, warm: int = 0
) -> list[Action]:
    """Deletes of booting VMs no queued work was packed into, the youngest first (most boot left to save),
    sparing the `warm` oldest of them that headroom (when on) holds as warm capacity.

    Why: a VM booted for a job that has meanwhile started elsewhere would join, idle for the idle threshold and
    be drained: its remaining boot and the threshold are pure waste. Only VMs the batch system has not seen
    (BOOTING) are cancelled, never below the minimum; the engine's delete still asks the batch system first, and
    a worker that joined and took a job in the meantime is drained and removed only when its job ends.
    """
    booting = sorted(
        (i for i in view.instances if i.state is InstanceState.BOOTING and i.id not in excluded),
        key=lambda i: (-i.created_at, i.id),
    )
    actions: list[Action] = []
    for inst in booting[: max(0, len(booting) - warm)]:
        if active <= settings.min_workers:
            break
        actions.append(
            Action(
                ActionKind.DELETE,
                f"{inst.id} still booting ({view.now - inst.created_at:.0f} s) and no queued work needs it: cancelled",
                instance_id=inst.id,
            )
        )
        active -= 1
    return actions


def _used(inst: InstanceView, total: Resources) -> Resources:
    assert inst.free is not None
    return total - inst.free


def _consolidate(
    view: ClusterView, settings: PolicySettings, needed: frozenset[str], excluded: set[str | None], active: int
) -> list[Action]:
    """Drains of partly used busy workers whose load fits in the free room of a busier worker, least loaded
    first.

    Only with nothing queued (capacity exceeds demand). Jobs do not move, so the test is conservative: the
    whole load of the candidate must fit in the free room of ONE other busy worker at least as loaded, whose
    room is then reserved (and which is never drained in the same cycle). Idle workers are neither candidates
    nor hosts: the idle rule handles them, and draining a busy worker to keep an idle one would only swap a
    working VM for an idle one. A full worker takes no new work anyway: it is left alone.
    """
    if not settings.consolidate or any(d.count > 0 for d in view.demand):
        return []
    flavours = {f.name: f.resources for f in settings.flavours}
    busy = [
        i
        for i in view.instances
        if i.state is InstanceState.BUSY and i.id not in excluded and i.free is not None and i.flavour in flavours
    ]

    def share(total: Resources, free: Resources) -> tuple[float, float]:
        used = total - free
        return (used.cores / max(1.0, total.cores), used.memory_mb / max(1.0, total.memory_mb))

    room = {i.id: i.free for i in busy if i.free is not None}
    totals = {i.id: flavours[i.flavour] for i in busy}
    loads = {iid: share(totals[iid], r) for iid, r in room.items()}
    candidates = sorted(
        (i for i in busy if i.id not in needed and i.free is not None and (i.free.cores > 0 or i.free.gpus > 0)),
        key=lambda i: (loads[i.id], i.id),
    )
    actions: list[Action] = []
    hosts: set[str] = set()  # workers whose room was reserved for a drained worker's load: they stay
    for cand in candidates:
        if active <= settings.min_workers:
            break
        if cand.id in hosts:
            continue
        load = _used(cand, flavours[cand.flavour])
        if load.cores <= 0 and load.gpus <= 0 and load.memory_mb <= 0:
            continue  # reported busy with nothing allocated: left to the idle rule
        # best fit among busier workers: the one with the least free room that still holds the whole load
        targets = [
            (r.cores, r.memory_mb, iid)
            for iid, r in room.items()
            if iid != cand.id and load.fits_in(r) and (loads[iid], iid) > (loads[cand.id], cand.id)
        ]
        if not targets:
            continue
        target = min(targets)[2]
        hosts.add(target)
        room[target] = room[target] - load
        loads[target] = share(totals[target], room[target])  # the host is busier now: later loads may follow
        del room[cand.id]
        actions.append(
            Action(
                ActionKind.DRAIN,
                f"{cand.id} consolidated: nothing queued and its load ({load}) fits in the free room of "
                f"{target}; drained so the least loaded workers empty first (its jobs run to their end)",
                instance_id=cand.id,
            )
        )
        active -= 1
    return actions
