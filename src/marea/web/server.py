"""Serve the web endpoint from inside the engine process: uvicorn in a thread, on a socket bound up front.

Why uvicorn + starlette rather than prometheus_client's own server: the endpoint serves more than /metrics
(the status JSON, the page and its assets, service discovery), both are dependencies already, and uvicorn
listens on a unix socket as readily as on TCP. The socket is bound before the thread starts, so a port in use
is known at once, as one clear line; the engine then runs on without its endpoint (scaling matters more than
its dashboard, and Prometheus' `up == 0` alert tells the admin).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

log = logging.getLogger("marea.web")


class ListenError(Exception):
    """The endpoint cannot listen where configured; the message is one line naming the address."""


@dataclass(frozen=True, slots=True)
class Listen:
    """Where to listen: a TCP host and port, or a unix socket path."""

    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def url(self) -> str:
        if self.path:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def parse_listen(value: str) -> Listen:
    """`host:port`, `[v6]:port` or `unix:/path` (the config's pattern already checked the shape)."""
    if value.startswith("unix:"):
        path = value.removeprefix("unix:")
        if not path.startswith("/"):
            raise ListenError(f"web.listen: {value!r}: a unix socket needs an absolute path")
        return Listen(path=path)
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ListenError(f"web.listen: {value!r}: expected host:port with a port from 1 to 65535")
    return Listen(host=host.strip("[]"), port=int(port))


def bind(listen: Listen) -> socket.socket:
    """A listening socket; a stale unix socket file (a crashed engine's) is replaced, any other file is not."""
    try:
        if listen.path:
            p = Path(listen.path)
            if p.exists() or p.is_symlink():
                if not stat.S_ISSOCK(p.lstat().st_mode):
                    raise ListenError(f"web.listen: {listen.path} exists and is not a socket")
                p.unlink()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(listen.path)
            os.chmod(listen.path, 0o660)
        else:
            infos = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM)
            family, _, _, _, addr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
        sock.listen(64)
    except OSError as exc:
        raise ListenError(f"web.listen: cannot listen on {listen.url}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


class WebServer:
    """uvicorn serving `app` on an already bound socket, in a daemon thread, until `stop`."""

    def __init__(self, app: ASGIApp, listen: Listen) -> None:
        self.listen = listen
        self.sock = bind(listen)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="marea-web")  # fmt: skip

    def start(self) -> None:
        self.thread.start()
        log.info("web endpoint on %s (/metrics, /api/status, /)", self.listen.url)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.listen.path:
            with contextlib.suppress(OSError):
                os.unlink(self.listen.path)
