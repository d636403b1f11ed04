"""Shared fixtures: the marea CLI as a subprocess (the way users run it)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "marea", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def data_dir() -> Path:
    return DATA


def wait_until(what: str, cond: Callable[[], Any], timeout: float, step: float = 0.5) -> Any:
    """Poll `cond` until it gives a true value, and return that value; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
