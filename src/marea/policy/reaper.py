"""Scale down: which workers to drain, which drained or failed VMs to delete.

The rules that make marea safe where elastiq was not: only a worker that is idle (no job on it) for longer than
the threshold is ever chosen, never below the minimum, never one the queued work was just packed into, and a
chosen worker is always drained first; it is deleted only once the batch system says it runs nothing. A VM that
never joins within the join timeout, or that the cloud put in error, is deleted and counted as a failed boot.
"""

from __future__ import annotations

from marea.model import (
    ACTIVE_STATES,
    STARTING_STATES,
    Action,
    ActionKind,
    ClusterView,
    InstanceState,
    PolicySettings,
)


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
        elif inst.state is InstanceState.DRAINING and inst.drained:
            actions.append(Action(ActionKind.DELETE, f"{inst.id} is drained: no job runs on it", instance_id=inst.id))

    timed_out = {a.instance_id for a in actions}
    active = sum(1 for i in view.instances if i.state in ACTIVE_STATES and i.id not in timed_out)
    candidates = [
        i
        for i in view.instances
        if i.state is InstanceState.IDLE
        and i.id not in needed
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
    return actions
