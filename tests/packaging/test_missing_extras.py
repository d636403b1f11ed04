"""A missing optional extra ends in one line naming the extra to install, not a traceback.

The modules are really absent for the marea process: it runs with a sitecustomize.py that makes every import
of the blocked top-level modules raise ModuleNotFoundError (as on an installation without that extra), while
the rest of the test environment keeps them. The first test shows that the block works.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from marea.extras import EXTRA_PURPOSE, MODULE_EXTRAS

REPO = Path(__file__).resolve().parents[2]

BLOCKER = """
import os, sys

_BLOCKED = {m for m in os.environ.get("MAREA_TEST_BLOCK", "").split(",") if m}


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
"""

SWF = "".join(f"{i} {i * 60} 0 120 1 -1 -1 1 600 -1 1 1 1 -1 1 -1 -1 -1\n" for i in range(1, 6))


def run_without(blocked: list[str], tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    site = tmp / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(site), "MAREA_TEST_BLOCK": ",".join(blocked)}
    return subprocess.run(
        [sys.executable, "-m", "marea", *args], capture_output=True, text=True, timeout=120, env=env, cwd=tmp
    )


def assert_one_line(res: subprocess.CompletedProcess[str], extra: str) -> None:
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
    assert f"pip install 'marea[{extra}]'" in res.stderr, res.stderr


def write_config(tmp: Path, body: str) -> Path:
    path = tmp / "marea.toml"
    path.write_text(f'[cluster]\nname = "extras"\nstate = "{tmp / "state.db"}"\n{body}')
    return path


def test_the_block_really_removes_the_module(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    code = "import numpy; print('imported')"
    env = {**os.environ, "PYTHONPATH": str(site)}
    free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    blocked = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**env, "MAREA_TEST_BLOCK": "numpy"}
    )
    assert free.stdout.strip() == "imported"
    assert blocked.returncode == 1 and "No module named 'numpy'" in blocked.stderr


def test_simulate_without_numpy(tmp_path: Path) -> None:
    (tmp_path / "t.swf").write_text(SWF)
    assert_one_line(run_without(["numpy"], tmp_path, "simulate", "t.swf", "--policies", "marea"), "sim")


def test_simulate_plot_without_matplotlib(tmp_path: Path) -> None:
    (tmp_path / "t.swf").write_text(SWF)
    res = run_without(["matplotlib"], tmp_path, "simulate", "t.swf", "--policies", "marea", "--plot", "p.png")
    assert_one_line(res, "sim")
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize(
    ("blocked", "body", "extra"),
    [
        (["openstack", "keystoneauth1"], '[cloud]\ndriver = "openstack"\n', "openstack"),
        (["boto3", "botocore"], '[cloud]\ndriver = "ec2"\n', "ec2"),
        (["htcondor2", "classad2", "htcondor", "classad"], '[batch]\nsystem = "htcondor"\n', "htcondor"),
    ],
    ids=["openstack", "ec2", "htcondor"],
)
def test_engine_without_its_driver(tmp_path: Path, blocked: list[str], body: str, extra: str) -> None:
    config = write_config(tmp_path, body)
    assert_one_line(run_without(blocked, tmp_path, "run", "-c", str(config)), extra)


def test_offload_htcondor_backend_without_bindings(tmp_path: Path) -> None:
    config = write_config(tmp_path, f'[offload]\nstate_dir = "{tmp_path / "offload"}"\n')
    res = run_without(
        ["htcondor2", "classad2"], tmp_path, "offload", "serve", "-c", str(config), "--backend", "htcondor",
        "--socket", str(tmp_path / "s.sock"),
    )  # fmt: skip
    assert_one_line(res, "htcondor")


def test_status_on_postgresql_without_psycopg(tmp_path: Path) -> None:
    config = tmp_path / "marea.toml"
    config.write_text('[cluster]\nname = "extras"\nstate = "postgresql://marea@127.0.0.1:1/marea"\n')
    assert_one_line(run_without(["psycopg"], tmp_path, "status", "-c", str(config)), "postgres")


def test_cluster_maker_without_openstacksdk(tmp_path: Path) -> None:
    example = REPO / "examples" / "cluster-slurm-testbed.toml"
    res = run_without(["openstack", "keystoneauth1"], tmp_path, "cluster", "status", "-c", str(example))
    assert_one_line(res, "openstack")


def test_every_mapped_extra_is_in_pyproject() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(MODULE_EXTRAS.values()) <= set(extras)
    assert set(EXTRA_PURPOSE) == set(MODULE_EXTRAS.values())
    assert set(extras) - {"dev"} == set(MODULE_EXTRAS.values())  # every user-facing extra has its modules here
