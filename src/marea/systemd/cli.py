"""`marea systemd install|show`: put the shipped units in place, or print one to copy by hand."""

from __future__ import annotations

from pathlib import Path

import typer

from marea.systemd import DROP_INS, SHIPPED_CONFIG, UNITS, SystemdError, install, render, shipped_text, this_marea

systemd_app = typer.Typer(help="The systemd units of the engine and the offload server.", no_args_is_help=True)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@systemd_app.command("install")
def install_command(
    config: Path = typer.Option(Path(SHIPPED_CONFIG), "-c", "--config", help="the marea.toml the services read"),
    dest: Path = typer.Option(Path("/etc/systemd/system"), "--dest", help="where to write the units"),
    podman: bool = typer.Option(
        False, "--podman", help="also the drop-in for the offload server's `local` backend (podman on this host)"
    ),
) -> None:
    """Write marea.service and marea-offload.service (ExecStart: this installation's marea), then say what next."""
    try:
        written = install(dest.absolute(), this_marea(), config.absolute(), podman)
    except SystemdError as exc:
        raise _fail(str(exc)) from None
    for item in written:
        typer.echo(f"wrote {item.path}: {item.what}")
    typer.echo("next: systemctl daemon-reload && systemctl enable --now marea.service  (and/or marea-offload.service)")


@systemd_app.command("show")
def show_command(
    name: str = typer.Argument(..., help="one of: " + ", ".join([*UNITS, *DROP_INS])),
    config: Path = typer.Option(Path(SHIPPED_CONFIG), "-c", "--config", help="the marea.toml the service reads"),
) -> None:
    """Print a unit as `install` would write it (or a drop-in as shipped), to review or copy by hand."""
    try:
        text = shipped_text(name) if name in DROP_INS else render(name, this_marea(), config.absolute())
    except SystemdError as exc:
        raise _fail(str(exc)) from None
    typer.echo(text, nl=False)
