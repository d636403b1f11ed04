"""`marea offload serve`: the interLink plugin server, on a unix socket (default) or TCP with a token."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, get_args

import typer

from marea.config import ConfigError, MareaConfig, OffloadSection, load_config

offload_app = typer.Typer(help="The interLink offload plugin server.", no_args_is_help=True)

#: the backends the configuration accepts (`[offload] backend`): one list for validation and for --help
BACKENDS: tuple[str, ...] = get_args(OffloadSection.model_fields["backend"].annotation)
#: uvicorn's log levels (uvicorn.config.LOG_LEVELS, read here without importing uvicorn at start)
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@offload_app.command("serve")
def serve_command(
    config: Annotated[Path | None, typer.Option("-c", "--config", help="marea.toml")] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help=f"one of: {', '.join(BACKENDS)} (default: offload.backend)")
    ] = None,
    socket: Annotated[Path | None, typer.Option("--socket", help="unix socket path (default transport)")] = None,
    port: Annotated[int | None, typer.Option("--port", help="serve TCP on this port (needs a token)")] = None,
    host: Annotated[str | None, typer.Option("--host", help="TCP address to bind")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="allow TCP without a bearer token")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help=f"one of: {', '.join(LOG_LEVELS)}")] = "info",
) -> None:
    """Serve interLink's plugin API (0.6 contract) for the chosen backend."""
    try:
        cfg = load_config(config) if config is not None else MareaConfig()
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    name = backend or cfg.offload.backend
    if name not in BACKENDS:
        raise _fail(f"--backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if log_level not in LOG_LEVELS:
        raise _fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    if socket is not None and port is not None:
        raise _fail("give either --socket or --port, not both")
    tcp_port = port if port is not None else (cfg.offload.port if socket is None else 0)
    token = os.environ.get("MAREA_OFFLOAD_TOKEN") or (
        cfg.offload.token.get_secret_value() if cfg.offload.token else None
    )
    if tcp_port and not token and not insecure:
        raise _fail("TCP needs a bearer token (offload.token or MAREA_OFFLOAD_TOKEN), or --insecure")
    from marea.offload.backends.base import BackendError
    from marea.offload.server import build_app, serve

    try:
        app = build_app(cfg, name, token if tcp_port else None)
    except (OSError, ValueError, BackendError) as exc:  # e.g. the backend's bindings are not installed
        raise _fail(str(exc), 1) from None
    sock_path = None if tcp_port else (socket or cfg.path(cfg.offload.socket))
    try:
        serve(app, sock_path, host or cfg.offload.host, tcp_port, log_level)
    except OSError as exc:
        raise _fail(str(exc), 1) from None
