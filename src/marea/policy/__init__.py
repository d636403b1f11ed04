"""Pure scaling decisions: state and time in, a plan out. No I/O, no clock reads, no imports of drivers.

The engine and the simulator both call `decide`, so what the simulator measures is what the engine does.
"""

from __future__ import annotations

from marea.model import ActionKind, ClusterView, Plan, PolicySettings
from marea.policy.planner import backoff_until, plan_scale_up
from marea.policy.ramp import next_ramp, parallel_limit
from marea.policy.reaper import plan_scale_down

__all__ = ["backoff_until", "decide", "next_ramp", "parallel_limit"]


def decide(view: ClusterView, settings: PolicySettings) -> Plan:
    """One reconcile decision: deletes, drains, resumes, boots, then the reasons for not doing more."""
    up = plan_scale_up(view, settings)
    down = plan_scale_down(view, settings, up.needed_instances)
    order = {ActionKind.DELETE: 0, ActionKind.DRAIN: 1, ActionKind.RESUME: 2, ActionKind.BOOT: 3, ActionKind.WAIT: 4}
    return Plan(tuple(sorted([*down, *up.actions], key=lambda a: order[a.kind])))
