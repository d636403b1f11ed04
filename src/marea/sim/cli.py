"""`marea simulate`: replay a trace through marea's policy and the baselines; print a table or JSON, plot.

Exit codes: 0 done, 2 bad usage, bad configuration or an unreadable trace (one line on stderr).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from marea.config import ConfigError, MareaConfig, load_config
from marea.extras import require
from marea.sim.trace import TraceError, TraceFormat, read_trace

# numpy and matplotlib (the `sim` extra) are imported only when the command runs, so `marea` starts fast
POLICIES = ("marea", "elastiq", "static", "oracle", "instant")
TRACE_FORMATS: tuple[str, ...] = get_args(TraceFormat)

_err = Console(stderr=True)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _fail(message: str) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _progress_bar() -> Progress:
    """One bar per policy on stderr, in jobs replayed: a year-long trace takes minutes. Shown only on a
    terminal: a pipe or a CI log gets no repainted lines (and stdout stays the table or the JSON)."""
    return Progress(
        TextColumn("{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("jobs"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_err,
        disable=not _err.is_terminal,
    )


def parse_duration(text: str, option: str) -> float:
    """`3600`, `90m`, `12h`, `30d` -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise _fail(f"{option}: {text!r} is not a duration (examples: 3600, 90m, 12h, 30d)")
    return float(m.group(1)) * _UNIT[m.group(2)]


def simulate_command(
    trace_file: Path = typer.Argument(..., help="trace: SWF (.swf, .swf.gz), condor_history -json, sacct --json"),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="marea.toml: the policy, the flavours and the simulate section"
    ),
    policies: str = typer.Option(",".join(POLICIES), "--policies", help="comma-separated: " + ",".join(POLICIES)),
    start: str | None = typer.Option(None, "--from", help="replay jobs submitted from this time after the start"),
    end: str | None = typer.Option(None, "--to", help="... up to this time after the start (e.g. 30d)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of the table"),
    plot: Path | None = typer.Option(None, "--plot", help="write the workers/wait plot to this PNG"),
    fmt: str = typer.Option("auto", "--format", help="one of: " + ", ".join(TRACE_FORMATS)),
) -> None:
    """Replay a workload trace in simulated time through marea's policy and the baselines."""
    names = [p.strip() for p in policies.split(",") if p.strip()]
    bad = [n for n in names if n not in POLICIES]
    if bad or not names:
        raise _fail(f"--policies: unknown policy {bad[0]!r}" if bad else "--policies: none given")
    if fmt not in TRACE_FORMATS:
        raise _fail(f"--format: {fmt!r} is not one of {', '.join(TRACE_FORMATS)}")
    try:
        cfg = load_config(config) if config is not None else MareaConfig()
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    require("numpy", *(["matplotlib"] if plot is not None else []))  # the `sim` extra, before minutes of work
    lo = parse_duration(start, "--from") if start is not None else None
    hi = parse_duration(end, "--to") if end is not None else None
    if lo is not None and hi is not None and hi <= lo:
        raise _fail("--to must be after --from")
    fmt_typed: TraceFormat = fmt  # type: ignore[assignment]
    try:
        trace = read_trace(trace_file, fmt_typed, cfg.simulate.swf_memory, cfg.simulate.keep_failed_jobs)
    except TraceError as exc:
        raise _fail(str(exc)) from None
    trace = trace.window(lo, hi)
    if not trace.jobs:
        raise _fail(f"{trace_file}: no job to replay in the chosen window")
    from marea.sim.report import results_json, results_table
    from marea.sim.run import UnknownPolicy, run_policies

    try:
        with _progress_bar() as bar:
            tasks = {n: bar.add_task(n, total=len(trace.jobs)) for n in names}
            results = run_policies(names, trace, cfg, advance=lambda n, done: bar.update(tasks[n], completed=done))
    except UnknownPolicy as exc:
        raise _fail(str(exc)) from None
    if plot is not None:
        from marea.sim.plots import plot_results

        plot_results(results, plot, cfg.flavours[0].cores, title=f"{trace.name}: workers over time")
    if as_json:
        typer.echo(results_json(results, trace))
    else:
        out = Console() if Console().is_terminal else Console(width=160)  # a pipe gets the whole table
        out.print(results_table(results, trace))
        if plot is not None:
            typer.echo(f"plot written to {plot}")
