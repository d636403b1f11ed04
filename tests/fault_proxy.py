"""A fault-injecting HTTP proxy on real sockets, put in front of the OpenStack testbed's API endpoints.

One listening port per upstream endpoint (Keystone, Nova, Neutron, Glance). Every request is forwarded to the
real service unless a fault is drawn for it:

- `error`: answered 500/502/503 by the proxy; the service never sees it;
- `latency`: forwarded after `latency_s` seconds;
- `drop_before`: the connection is closed without an answer; the service never sees the request;
- `drop_after`: forwarded, then the connection is closed without the answer (the call took effect: a create
  whose answer is lost);
- `quota`: a server create (POST .../servers) is refused 403 with Nova's own quota message.

Answers are rewritten so that every URL naming an upstream names its proxy instead: the token's service catalog,
version documents and pagination links all lead back through the proxy, and the client needs no endpoint
overrides (the shared testbed is not reconfigured). Faults are drawn from a seeded generator, and counted.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
QUOTA_BODY = json.dumps(
    {"forbidden": {"code": 403, "message": "Quota exceeded for instances: Requested 1, but already used 10 of 10"}}
).encode()


@dataclass
class Faults:
    """Probabilities per request (drawn in this order; at most one of error/drop/quota, latency on top)."""

    error: float = 0.30
    latency: float = 0.20
    latency_s: float = 2.0
    drop_before: float = 0.03
    drop_after: float = 0.03
    quota: float = 0.10
    enabled: bool = True


class FaultProxy:
    """Proxies for a set of upstream base URLs (scheme://host:port), each on its own 127.0.0.1 port."""

    def __init__(self, upstreams: list[str], faults: Faults, seed: int = 0) -> None:
        self.faults = faults
        self.rng = random.Random(seed)
        self.rng_lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.servers: list[ThreadingHTTPServer] = []
        self.rewrite: dict[bytes, bytes] = {}
        for upstream in sorted(set(upstreams)):
            parts = urlsplit(upstream)
            server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(parts.hostname or "", parts.port or 80))
            server.daemon_threads = True
            self.servers.append(server)
            self.rewrite[f"{parts.hostname}:{parts.port}".encode()] = f"127.0.0.1:{server.server_port}".encode()
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in self.servers]

    def url_for(self, upstream: str) -> str:
        """The proxied form of an upstream URL."""
        out = upstream.encode()
        for a, b in self.rewrite.items():
            out = out.replace(a, b)
        return out.decode()

    def start(self) -> FaultProxy:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        for s in self.servers:
            s.shutdown()
            s.server_close()

    def draw(self, is_create: bool) -> tuple[str | None, bool]:
        """(fault or None, add latency) for one request."""
        f = self.faults
        with self.rng_lock:
            if not f.enabled:
                return None, False
            latency = self.rng.random() < f.latency
            r = self.rng.random()
            fault = None
            if r < f.error:
                fault = "error"
            elif r < f.error + f.drop_before:
                fault = "drop_before"
            elif r < f.error + f.drop_before + f.drop_after:
                fault = "drop_after"
            elif is_create and r < f.error + f.drop_before + f.drop_after + f.quota:
                fault = "quota"
            self.counts["requests"] += 1
            if fault:
                self.counts[fault] += 1
            if latency:
                self.counts["latency"] += 1
        return fault, latency

    def _handler(self, host: str, port: int) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _drop(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                is_create = self.command == "POST" and self.path.rstrip("/").endswith("/servers")
                fault, latency = proxy.draw(is_create)
                if latency:
                    time.sleep(proxy.faults.latency_s)
                if fault == "error":
                    code = proxy.rng.choice([500, 502, 503])
                    msg = json.dumps({"error": {"code": code, "message": "injected by the fault proxy"}}).encode()
                    self._answer(code, [("Content-Type", "application/json")], msg)
                    return
                if fault == "drop_before":
                    self._drop()
                    return
                if fault == "quota":
                    self._answer(403, [("Content-Type", "application/json")], QUOTA_BODY)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Host"] = f"{host}:{port}"
                conn = http.client.HTTPConnection(host, port, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    out_headers = resp.getheaders()
                    status = resp.status
                finally:
                    conn.close()
                if fault == "drop_after":
                    self._drop()
                    return
                for a, b in proxy.rewrite.items():
                    data = data.replace(a, b)
                rewritten = []
                for k, v in out_headers:
                    for a, b in proxy.rewrite.items():
                        v = v.replace(a.decode(), b.decode())
                    rewritten.append((k, v))
                self._answer(status, rewritten, data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward

        return Handler
