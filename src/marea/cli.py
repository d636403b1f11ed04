"""The `marea` command line: one entry point for the engine, the offload server, clusters and the simulator.

Exit codes: 0 success, 1 a run-time failure, 2 bad usage or bad configuration (one clear line on stderr).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from marea.config import ConfigError, MareaConfig, load_config
from marea.offload.cli import offload_app

app = typer.Typer(
    name="marea",
    help="Elastic batch clusters on research clouds, and an interLink offload plugin.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Check and convert configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(offload_app, name="offload")

err = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear line on stderr and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def load_or_exit(path: Path) -> MareaConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise fail(str(exc)) from None


@config_app.command("check")
def config_check(file: Path = typer.Argument(..., help="marea.toml to validate")) -> None:
    """Validate a marea.toml; exit 2 with one line naming the key when it is wrong."""
    cfg = load_or_exit(file)
    typer.echo(
        f"{file}: ok (cluster {cfg.cluster.name}, {cfg.cloud.driver} cloud, {cfg.batch.system} batch, "
        f"{cfg.policy.min_workers}-{cfg.policy.max_workers} workers, {len(cfg.flavours)} flavour(s))"
    )


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
