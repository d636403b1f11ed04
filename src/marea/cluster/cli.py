"""`marea cluster create|status|destroy -c cluster.toml`: the cluster maker's command line.

Exit codes as everywhere in marea: 2 for a bad file or usage, 1 for a cloud failure (one clear line, no secret).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from marea.clouds.base import CloudError
from marea.config import ConfigError

app = typer.Typer(help="Create, inspect and destroy a batch cluster on OpenStack.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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
    _print_status(st)


@app.command()
def status(config: Path = CONFIG) -> None:
    """Show the master, its addresses and the workers with their states."""
    maker = _maker(config)
    try:
        st = maker.status()
    except CloudError as exc:
        raise _fail(exc.reason, 1) from None
    _print_status(st)


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
    kept = ", ".join(report.floating_ips_kept) or "none"
    released = ", ".join(report.floating_ips_released) or "none"
    out.print(
        f"deleted {report.servers} server(s), {report.ports} port(s), {report.security_groups} security group(s); "
        f"floating IPs kept in the project: {kept}; released: {released}",
        soft_wrap=True,
    )
