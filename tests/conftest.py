"""Shared fixtures: the marea CLI as a subprocess (the way users run it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "marea", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def data_dir() -> Path:
    return DATA
