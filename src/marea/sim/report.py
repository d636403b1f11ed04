"""Present simulation results: a rich table for people, one JSON object for programs."""

from __future__ import annotations

import json
from collections.abc import Mapping

from rich.table import Table

from marea.sim.simulator import PolicyResult
from marea.sim.trace import Trace


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def results_table(results: Mapping[str, PolicyResult], trace: Trace) -> Table:
    days = (trace.end - trace.start) / 86400.0
    title = f"{trace.name}: {len(trace.jobs)} jobs over {days:.1f} days"
    if trace.dropped:
        title += f" ({trace.dropped} dropped: {trace.dropped_reason})"
    table = Table(title=title)
    for col in ("policy", "VM-hours", "idle VM-hours", "wait p50", "wait p95", "wait max"):
        table.add_column(col, justify="right" if col != "policy" else "left")
    for col in ("never started", "boots", "failed boots", "decisions", "run time"):
        table.add_column(col, justify="right")
    oracle = results.get("oracle")
    for name, r in results.items():
        vmh = f"{r.vm_hours:,.1f}"
        if oracle is not None and name != "oracle" and oracle.vm_hours > 0:
            vmh += f" ({r.vm_hours / oracle.vm_hours:.2f}x)"
        table.add_row(
            name,
            vmh,
            f"{r.idle_vm_hours:,.1f}",
            _duration(r.wait_p50_s),
            _duration(r.wait_p95_s),
            _duration(r.wait_max_s),
            str(r.jobs_never_started),
            str(r.boots),
            str(r.failed_boots),
            str(r.policy_calls),
            f"{r.wall_s:.1f} s",
        )
    return table


def results_json(results: Mapping[str, PolicyResult], trace: Trace) -> str:
    """`{"policies": {name: {...}}, "trace": {...}}`: one object, one line."""
    doc = {
        "policies": {name: r.as_dict() for name, r in results.items()},
        "trace": {
            "name": trace.name,
            "jobs": len(trace.jobs),
            "dropped": trace.dropped,
            "span_s": trace.end - trace.start,
        },
    }
    return json.dumps(doc)
