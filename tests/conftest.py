"""Shared fixtures: the marea CLI as a subprocess (the way users run it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"


REPO_ROOT = Path(__file__).resolve().parents[1]
#: what pytest and the tools make at the root by themselves
_ROOT_TOOLS = {".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache", "__pycache__"}
_root_before: set[str] = set()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Also removes what a killed earlier run left behind (its `marea run` engines, its VMs' `mvm-*` network
    namespaces), which would fail this run's leftover checks; only what no live session owns (tests/leftovers.py)."""
    _root_before.update(os.listdir(REPO_ROOT))
    from tests.leftovers import remove_leftovers

    for what in remove_leftovers():
        sys.stderr.write(f"removed a leftover of a killed test run: {what}\n")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A test must leave nothing in the repository's root (an empty slurm-1.out once sat there): the run fails
    when an entry appeared there, and names it."""
    new = sorted(set(os.listdir(REPO_ROOT)) - _root_before - _ROOT_TOOLS)
    if new:
        sys.stderr.write(f"\nerror: the tests left {', '.join(new)} in {REPO_ROOT}: write in tmp_path instead\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "marea", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def data_dir() -> Path:
    return DATA


def wait_until(
    what: str, cond: Callable[[], Any], timeout: float, step: float = 0.5, explain: Callable[[], str] | None = None
) -> Any:
    """Poll `cond` until it gives a true value, and return that value; fail with `what` after `timeout`.

    `explain` describes the state at the time of a failure, so that a timeout seen once in CI can be understood.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    detail = ""
    if explain:
        try:
            detail = f"; {explain()}"
        except Exception as error:  # the explanation must not hide the timeout
            detail = f"; (no explanation: {error!r})"
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
