"""Assemble and run the offload server: config -> backend -> service -> app -> uvicorn on a socket.

The unix socket is created here (not by uvicorn, which makes it world-writable) with mode 0600: on a shared
host only the user running interLink's API server (same user, or root) may talk to the plugin.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import uvicorn

from marea.config import MareaConfig
from marea.offload.app import ASGIApp, create_app
from marea.offload.backends.base import Backend
from marea.offload.security import SecurityPolicy
from marea.offload.service import OffloadService
from marea.offload.state import PodStore


def make_backend(cfg: MareaConfig, name: str, state_dir: Path) -> Backend:
    pods_dir = state_dir / "pods"
    if name == "local":
        from marea.offload.backends.local import LocalBackend

        return LocalBackend(cfg.offload, pods_dir)
    if name == "slurm":
        from marea.offload.backends.slurm import SlurmBackend

        return SlurmBackend(cfg, pods_dir)
    if name == "htcondor":
        from marea.offload.backends.htcondor import HTCondorBackend

        return HTCondorBackend(cfg, pods_dir)
    if name == "kubernetes":
        from marea.offload.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(cfg.offload)
    raise ValueError(f"unknown backend {name!r}")


def build_app(cfg: MareaConfig, backend_name: str, token: str | None) -> ASGIApp:
    state_dir = cfg.path(cfg.offload.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    backend = make_backend(cfg, backend_name, state_dir)
    service = OffloadService(
        backend,
        PodStore(state_dir / "offload.db"),
        cfg.offload.refresh_s,
        security=SecurityPolicy.from_config(cfg.offload.security),
    )
    return create_app(service, token)


def unix_socket(path: Path) -> socket.socket:
    """Bind a unix socket with mode 0600 from the start (umask), replacing a stale socket file."""
    if path.is_socket():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
        else:
            raise OSError(f"{path}: another server is listening there")
        finally:
            probe.close()
    elif path.exists():
        raise OSError(f"{path}: exists and is not a socket")
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(2048)
    return sock


def serve(app: ASGIApp, socket_path: Path | None, host: str, port: int, log_level: str = "info") -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    if socket_path is not None:
        sock = unix_socket(socket_path)
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
            if socket_path.is_socket():
                socket_path.unlink()
    else:
        server.run()
