"""The progress bar of `marea simulate`: on a real terminal (a pty) it counts every policy's replayed jobs up
to the trace's size on stderr; through a pipe it prints nothing, and stdout is the JSON either way."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from marea.config import MareaConfig
from marea.sim.run import run_policies
from marea.sim.trace import read_trace
from tests.sim.simhelpers import DATA

ROOT = Path(__file__).resolve().parents[2]
LPC = DATA / "LPC-EGEE-2004-1.2-cln.swf.gz"
ARGS = [str(LPC), "-c", str(ROOT / "examples" / "simulate-lpc.toml"), "--from", "30d", "--to", "31d", "--json"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _simulate(stderr: int) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "marea", "simulate", *ARGS], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
    )
    return proc


def test_progress_bar_on_a_terminal() -> None:
    master, slave = pty.openpty()
    proc = _simulate(slave)
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    doc = json.loads(out)
    jobs = doc["trace"]["jobs"]
    screen = ANSI.sub("", b"".join(chunks).decode(errors="replace"))
    for name in ("marea", "elastiq", "static", "oracle"):
        assert re.search(rf"{name}\s.*\b{jobs}/{jobs} jobs", screen), (name, screen[-2000:])


def test_no_progress_through_a_pipe() -> None:
    proc = _simulate(subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and err == ""
    assert json.loads(out)["trace"]["jobs"] > 100


def test_advance_counts_up_to_every_job() -> None:
    trace = read_trace(LPC).window(30 * 86400.0, 31 * 86400.0)
    seen: dict[str, list[int]] = {}
    run_policies(["marea", "oracle"], trace, MareaConfig(), advance=lambda n, done: seen.setdefault(n, []).append(done))
    n = len(trace.jobs)
    assert seen["oracle"] == [n]
    marea = seen["marea"]
    assert marea == sorted(marea) and marea[-1] == n and 10 < len(marea) <= 250  # about 200 reports, not one per job
