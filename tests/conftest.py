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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Two groups for `pytest -n 2 --dist loadgroup` (what `make test` runs): the OpenStack testbed's tests in one
    worker, every other test in the other, in one sequence as before (their testbeds use fixed namespaces and
    paths, so they must never run side by side). The OpenStack tests mostly wait on the cloud and its guests:
    beside the rest they cut the suite's wall time by their own length."""
    for item in items:
        group = "openstack" if item.nodeid.startswith("tests/openstack/") else "others"
        item.add_marker(pytest.mark.xdist_group(group))
