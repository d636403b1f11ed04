"""What a user expects of a command-line tool: --version, every --help working and listing every choice from
the registries that define the choices, and `marea status` saying when the engine never ran."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
import typer
from typer.testing import CliRunner

from marea import package_version
from marea.cli import app
from marea.config import CloudSection, OffloadSection
from marea.engine.status import never_ran_report, status_report
from marea.engine.store import Store
from marea.sim.run import POLICIES
from marea.sim.trace import TraceFormat
from marea.systemd import DROP_INS, UNITS
from tests.conftest import run_cli

#: command path -> every choice its --help must list, taken from where the choices are defined
CHOICES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("offload", "serve"): (
        *get_args(OffloadSection.model_fields["backend"].annotation),
        "critical",
        "error",
        "warning",
        "info",
        "debug",
        "trace",  # uvicorn.config.LOG_LEVELS, checked below
    ),
    ("simulate",): (*POLICIES, *get_args(TraceFormat)),
    ("demo",): ("slurm", "htcondor"),
    ("systemd", "show"): (*UNITS, *DROP_INS),
}


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a group (typer's own command classes are not click's)
            found += _commands(cmd, (*path, name))
        else:
            found.append((*path, name))
    return found


ALL = _commands(typer.main.get_command(app))


def _help(path: tuple[str, ...]) -> str:
    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert res.exit_code == 0, (path, res.output)
    return res.output


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "marea")
def test_every_help_works(path: tuple[str, ...]) -> None:
    assert "Usage:" in _help(path)


@pytest.mark.parametrize("path", sorted(CHOICES), ids=" ".join)
def test_help_lists_every_choice(path: tuple[str, ...]) -> None:
    words = set(re.findall(r"[\w.-]+", _help(path)))
    missing = [c for c in CHOICES[path] if c not in words]
    assert not missing, f"marea {' '.join(path)} --help does not list {missing}"


def test_choice_registries_agree() -> None:
    """The lists the CLI keeps for speed (no numpy, no uvicorn at start) are those of the modules that decide."""
    from uvicorn.config import LOG_LEVELS

    from marea.offload.cli import LOG_LEVELS as CLI_LOG_LEVELS
    from marea.sim.cli import POLICIES as CLI_POLICIES

    assert tuple(LOG_LEVELS) == CLI_LOG_LEVELS
    assert CLI_POLICIES == POLICIES
    assert set(get_args(CloudSection.model_fields["driver"].annotation)) == {"local", "openstack", "ec2"}
    assert ("offload", "serve") in ALL and ("systemd", "install") in ALL and ("config", "reference") in ALL


def test_a_bad_choice_is_one_line() -> None:
    res = run_cli("offload", "serve", "--backend", "nomad")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "local, slurm, htcondor, kubernetes" in res.stderr


def test_version() -> None:
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout == f"marea {package_version()}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", package_version())


def test_status_of_a_cluster_whose_engine_never_ran(tmp_path: Path) -> None:
    config = tmp_path / "marea.toml"
    config.write_text('[cluster]\nname = "fresh"\nstate = "state.db"\n')
    res = subprocess.run(
        [sys.executable, "-m", "marea", "status", "-c", str(config)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("cluster fresh: the engine has never run (no state database at ")
    assert not (tmp_path / "state.db").exists()  # status changes nothing
    doc = json.loads(run_cli("status", "-c", str(config), "--json").stdout)
    assert doc["engine_ran"] is False and doc["workers"] == [] and doc["last_cycle_at"] is None

    # a store that exists but holds no cycle (the engine was never started, or died before its first cycle)
    Store(f"sqlite:///{tmp_path / 'state.db'}", "fresh").close()
    res = run_cli("status", "-c", str(config))
    assert res.returncode == 0 and "never run (its state database holds no cycle)" in res.stdout


def test_never_ran_report_has_the_keys_of_a_real_report(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}", "c")
    try:
        real = status_report(store, 1.0)
        store.put_json("last_cycle", {"at": 5.0})
        assert status_report(store, 6.0)["engine_ran"] is True
    finally:
        store.close()
    assert set(never_ran_report("c", 1.0)) == set(real) and real["engine_ran"] is False
