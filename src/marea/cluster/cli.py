"""`marea cluster create|status|ssh|destroy -c cluster.toml`: the cluster maker's command line.

Exit codes as everywhere in marea: 2 for a bad file or usage, 1 for a cloud failure (one clear line, no secret).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from marea.clouds.base import CloudError
from marea.config import ConfigError

if TYPE_CHECKING:
    from marea.cluster.maker import ClusterStatus

app = typer.Typer(help="Create, inspect and destroy a batch cluster on OpenStack.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _maker(path: Path):  # type: ignore[no-untyped-def]
    from marea.cluster.config import load_cluster
    from marea.cluster.maker import ClusterMaker

    try:
        return ClusterMaker(load_cluster(path))
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<40}"), BarColumn(), TimeElapsedColumn(), console=err, transient=False
    )


def _status_json(st: ClusterStatus, engine: dict[str, Any] | None, engine_error: str | None) -> str:
    """One JSON object: the cloud's view of the cluster and, when readable, the master engine's own status."""
    master = None
    if st.master is not None:
        master = {"name": st.master.name, "id": st.master.cloud_id, "status": st.master.status.value,
                  "address": st.master.address, "floating_ip": st.floating_ip}  # fmt: skip
    workers = [
        {"name": vm.name, "id": vm.cloud_id, "status": vm.status.value, "address": vm.address, "fault": vm.fault}
        for vm in st.workers
    ]
    doc = {"cluster": st.name, "master": master, "workers": workers, "engine": engine, "engine_error": engine_error}
    return json.dumps(doc)


def engine_summary(report: dict[str, Any]) -> str:
    """One line from the engine's `marea status --json`: its workers by state, the queue, the last cycle."""
    states = Counter(str(worker.get("state", "?")) for worker in report.get("workers", []))
    workers = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"
    line = f"engine: workers {workers}; queued jobs {report.get('queued_jobs', 0)}"
    at, last = report.get("at"), report.get("last_cycle_at")
    if isinstance(at, int | float) and isinstance(last, int | float):
        line += f"; last cycle {max(0.0, at - last):.0f} s ago"
    else:
        line += "; no cycle yet"
    if report.get("errors"):
        line += f"; {len(report['errors'])} error(s) in the last cycle"
    return line


def _print_status(st) -> None:  # type: ignore[no-untyped-def]
    if st.master is None:
        out.print(f"cluster {st.name}: no master", soft_wrap=True)
    else:
        out.print(
            f"cluster {st.name}: master {st.master.name} {st.master.status.value}, "
            f"address {st.master.address or '-'}, floating IP {st.floating_ip or '-'}",
            soft_wrap=True,
        )
    table = Table("worker", "state", "address", "fault")
    for vm in st.workers:
        table.add_row(vm.name, vm.status.value, vm.address or "-", vm.fault or "")
    out.print(table)


CONFIG = typer.Option(..., "-c", "--config", help="cluster.toml")


@app.command()
def create(config: Path = CONFIG) -> None:
    """Create the master (security groups, keypair, the cluster's only floating IP, cloud-init user-data)."""
    maker = _maker(config)
    try:
        with _progress() as bar:
            task = bar.add_task("starting", total=1.0)
            st = maker.create(lambda step, f: bar.update(task, description=step, completed=f))
    except CloudError as exc:
        raise _fail(exc.reason, 1) from None
    from marea.cluster.ssh import forget_host_keys

    forget_host_keys(maker.name)  # a new master has new host keys; an old cluster's may linger
    _print_status(st)


@app.command()
def status(
    config: Path = CONFIG,
    as_json: bool = typer.Option(False, "--json", help="one JSON object on stdout, with the engine's own status"),
) -> None:
    """Show the master, its addresses, the workers with their states, and the master engine's summary (via ssh)."""
    from marea.cluster.ssh import engine_status

    maker = _maker(config)
    try:
        st = maker.status()
    except CloudError as exc:
        raise _fail(exc.reason, 1) from None
    engine, engine_error = engine_status(maker, st)
    if as_json:
        typer.echo(_status_json(st, engine, engine_error))
        return
    _print_status(st)
    if engine is not None:
        out.print(engine_summary(engine), soft_wrap=True, highlight=False, markup=False)
    else:  # ssh's and sudo's messages may hold brackets: no markup
        out.print(f"engine: not readable: {engine_error}", soft_wrap=True, highlight=False, markup=False)


@app.command(context_settings={"allow_interspersed_args": False})
def ssh(
    config: Path = CONFIG,
    command: list[str] | None = typer.Argument(
        None, help="run this on the master and exit with its code (words are joined by ssh for the remote shell)"
    ),
) -> None:
    """Log in to the master over its floating IP, or run a command there (`marea cluster ssh -c FILE -- CMD`)."""
    from marea.cluster.ssh import SshError, master_target

    maker = _maker(config)
    try:
        argv = master_target(maker).argv(command or [])
    except CloudError as exc:
        raise _fail(exc.reason, 1) from None
    except SshError as exc:
        raise _fail(str(exc), 1) from None
    if not command:
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            raise _fail(f"cannot run ssh: {exc.strerror}", 1) from None
    try:
        code = subprocess.run(argv).returncode
    except OSError as exc:
        raise _fail(f"cannot run ssh: {exc.strerror}", 1) from None
    raise typer.Exit(code)


@app.command()
def destroy(
    config: Path = CONFIG,
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
    release_floating_ips: bool = typer.Option(
        False, "--release-floating-ips", help="give the cluster's floating IP back (default: keep it in the project)"
    ),
) -> None:
    """Delete every server and resource the cluster owns; floating IPs stay in the project unless released."""
    maker = _maker(config)
    if not yes and not typer.confirm(f"Destroy cluster {maker.name} and all its servers?", default=False):
        raise _fail("not confirmed; nothing was deleted", 1)
    try:
        with _progress() as bar:
            task = bar.add_task("starting", total=1.0)
            report = maker.destroy(release_floating_ips, lambda s, f: bar.update(task, description=s, completed=f))
    except CloudError as exc:
        raise _fail(exc.reason, 1) from None
    from marea.cluster.ssh import forget_host_keys

    forget_host_keys(maker.name)  # the floating IP will front another master, with other host keys
    kept = ", ".join(report.floating_ips_kept) or "none"
    released = ", ".join(report.floating_ips_released) or "none"
    out.print(
        f"deleted {report.servers} server(s), {report.ports} port(s), {report.security_groups} security group(s); "
        f"floating IPs kept in the project: {kept}; released: {released}",
        soft_wrap=True,
    )
