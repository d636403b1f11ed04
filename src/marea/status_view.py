"""Rich rendering of `marea status` and of the demo summary (presentation only; data comes from elsewhere)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from marea.demo import DemoResult


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def render_status(console: Console, report: dict[str, Any], explain: bool) -> None:
    workers = Table(title=f"cluster {report['cluster']}: {len(report['workers'])} worker(s)")
    for col in ("worker", "flavour", "state", "age", "in state", "idle", "address"):
        workers.add_column(col)
    for w in report["workers"]:
        workers.add_row(
            w["id"], w["flavour"], w["state"], _ago(w["age_s"]), _ago(w["in_state_s"]), _ago(w["idle_s"]),
            w["address"] or "-",
        )  # fmt: skip
    console.print(workers)
    demand = ", ".join(
        f"{d['count']} x ({d['cores']:g} cores, {d['memory_mb']:g} MiB"
        + (f", {d['gpus']} GPUs" if d["gpus"] else "")
        + ")"
        for d in report["demand"]
    )
    console.print(f"queued jobs: {report['queued_jobs']}; demand: {demand or 'none'}")
    bf = report["boot_failures"]
    if bf["total"]:
        console.print(f"failed boots: {bf['total']} in all, {bf['consecutive']} in a row; last: {bf['last_reason']}")
    for u in report["unsatisfiable"]:
        console.print(f"[yellow]not demand:[/] {u['reason']}")
    if explain:
        for reason in report["waiting"]:
            console.print(f"[yellow]waiting:[/] {reason}")
        for e in report["errors"]:
            console.print(f"[red]error:[/] {e}")
    last = report.get("last_cycle_at")
    if last is not None:
        console.print(f"last engine cycle: {_ago(time.time() - last)} ago")
    decisions = Table(title="recent decisions" + (" (with reasons)" if explain else ""))
    decisions.add_column("when")
    decisions.add_column("what")
    decisions.add_column("reason", overflow="fold")
    for d in report["decisions"]:
        when = time.strftime("%H:%M:%S", time.localtime(d["at"]))
        decisions.add_row(when, d["kind"], d["reason"])
    console.print(decisions)


def render_demo(console: Console, result: DemoResult) -> None:
    t = Table(title="marea demo: " + ("[green]ok[/]" if result.ok else "[red]FAILED[/]"))
    t.add_column("measure")
    t.add_column("value", justify="right")
    for key, value in asdict(result).items():
        if key != "ok":
            t.add_row(key.replace("_", " "), str(value))
    console.print(t)
