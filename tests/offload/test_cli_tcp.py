"""`marea offload serve`: usage errors exit 2 with one line; TCP needs a bearer token, which never shows up
in the server's output."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TOKEN = "tok-0123456789abcdef-secret"


def serve(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "marea.cli", "offload", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    cases = [
        (["--port", "1"], "bearer token"),
        (["--backend", "nope"], "--backend"),
        (["-c", str(tmp_path / "missing.toml")], "not found"),
        (["--socket", str(tmp_path / "s"), "--port", "1"], "either"),
    ]
    bad = tmp_path / "bad.toml"
    bad.write_text("[offload]\nrefresh_s = -1\n")
    cases.append((["-c", str(bad)], "offload.refresh_s"))
    for args, words in cases:
        p = serve(*args, env={"MAREA_OFFLOAD_TOKEN": ""}, cwd=tmp_path)
        out, _ = p.communicate(timeout=30)
        assert p.returncode == 2, (args, out)
        assert words in out and "Traceback" not in out


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_tcp_requires_the_bearer_token(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "marea.toml"
    cfg.write_text(f'[offload]\nstate_dir = "{tmp_path / "state"}"\nbackend = "local"\n')
    p = serve("-c", str(cfg), "--port", str(port), env={"MAREA_OFFLOAD_TOKEN": TOKEN}, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.request("GET", f"{base}/status", json=[]).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.request("GET", f"{base}/status", json=[], headers=wrong).status_code == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        r = httpx.request("GET", f"{base}/status", json=[], headers=good)
        assert r.status_code == 200 and "resources" in r.json()
        assert httpx.post(f"{base}/create", content=b"{", headers=good).status_code == 400
    finally:
        p.terminate()
        out, _ = p.communicate(timeout=30)
    assert TOKEN not in out
