"""Helpers for the one-engine-per-cluster tests: a `marea run` that starts anywhere, as a real process.

The engine's batch side is Slurm whose client command is `false`: every cycle fails to read the queue and acts
on nothing, but the daemon runs and holds its lock like any other, which is all these tests look at.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import run_cli, wait_until


def idle_engine_config(tmp_path: Path, cluster: str, state: str = "state.db") -> Path:
    cfg = tmp_path / "marea.toml"
    (tmp_path / "worker.sh").write_text("#!/bin/sh\nexit 0\n")
    cfg.write_text(
        f"""[cluster]
name = "{cluster}"
state = "{state}"

[engine]
interval_s = 0.5
log_file = "engine.log"

[[flavours]]
name = "f"
cores = 1
memory_mb = 1000

[cloud]
driver = "local"

[cloud.local]
base_dir = "vms"

[worker]
user_data_file = "worker.sh"

[batch]
system = "slurm"

[batch.slurm]
command_prefix = ["false"]
"""
    )
    return cfg


def start_engine(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "marea", "run", "-c", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_started(cfg: Path) -> None:
    """Until the engine logged its start (it has the lock by then)."""
    log = cfg.parent / "engine.log"
    wait_until("the engine started", lambda: log.exists() and "engine started" in log.read_text(), 60, 0.1)


def assert_refused(cfg: Path, holder_pid: int) -> str:
    """A second `marea run` exits 3 with one line that names the holder's host, pid and start time."""
    import socket

    proc = run_cli("run", "-c", str(cfg), timeout=60)
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert f"pid {holder_pid}," in line and f"host {socket.gethostname()}," in line and "since 20" in line, line
    return line


def both_engines_run(a: Path, b: Path) -> None:
    """Two engines, of two clusters, started side by side: both must hold their lock and keep running."""
    pa, pb = start_engine(a), start_engine(b)
    try:
        wait_started(a)
        wait_started(b)
        assert pa.poll() is None and pb.poll() is None
    finally:
        for p in (pa, pb):
            p.send_signal(signal.SIGTERM)
            assert p.wait(60) == 0
