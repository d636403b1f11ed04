"""The clean-up of a killed run's leftovers (tests/leftovers.py) against real processes and namespaces: real
`marea run` engines and real local-cloud VMs in `mvm-*` namespaces, some in a base directory whose session is
gone (its `.lock` names a dead pid), some in one whose session lives (this one's pid), one whose owner is not
knowable (outside any pytest base directory), and an empty namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from marea.clouds.base import TAG_CLUSTER, TAG_INSTANCE, CloudVM, VMSpec
from marea.clouds.local import LocalCloud, _alive
from marea.model import Flavour
from tests.conftest import wait_until
from tests.engine_lock_helpers import idle_engine_config, start_engine, wait_started
from tests.leftovers import NETNS_DIR, basetemp_of, is_engine, remove_leftovers


def test_base_directory_and_engine_recognised() -> None:
    assert basetemp_of("/tmp/pytest-of-root/pytest-12/test_a0/vms/x-1") == "/tmp/pytest-of-root/pytest-12"
    # the innermost one (a test's own fake base directory inside its tmp_path)
    assert basetemp_of("/tmp/pytest-of-root/pytest-3/t0/pytest-of-x/pytest-7/vms") == (
        "/tmp/pytest-of-root/pytest-3/t0/pytest-of-x/pytest-7"
    )
    assert basetemp_of("/tmp/pytest-of-root/pytest-12 (deleted)") == "/tmp/pytest-of-root/pytest-12"
    assert basetemp_of("/tmp/marea-demo-abc/vms/demo-1") is None
    assert basetemp_of("/tmp/pytest-of-root/pytest-12x/a") is None
    assert is_engine(["/usr/bin/python3", "-m", "marea", "run", "-c", "/x/marea.toml"])
    assert is_engine(["/venv/bin/marea", "run", "-c", "m.toml"])
    assert not is_engine(["/venv/bin/marea", "simulate", "run"])
    assert not is_engine(["pytest", "tests/test_run.py"])


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _base(root: Path, n: int, pid: int) -> Path:
    d = root / "pytest-of-lft" / f"pytest-{n}"
    d.mkdir(parents=True)
    (d / ".lock").write_text(str(pid))
    return d


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def bridge() -> Iterator[str]:
    """A namespace holding a bridge br0, for the local cloud's VMs (as the Slurm testbed's namespace does)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    ns = f"lftbr-{uuid.uuid4().hex[:6]}"
    _ip("netns", "add", ns)
    try:
        _ip("-n", ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", ns, "link", "set", "br0", "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_a_killed_runs_engines_and_vms_go_the_living_and_the_unknown_stay(tmp_path: Path, bridge: str) -> None:
    tag = f"lft{uuid.uuid4().hex[:6]}"
    dead, live = _base(tmp_path, 7, _dead_pid()), _base(tmp_path, 8, os.getpid())
    elsewhere = Path(tempfile.mkdtemp(prefix="marea-lft-"))  # in no pytest base directory: owner unknown
    clouds: dict[str, LocalCloud] = {}
    vms: dict[str, CloudVM] = {}
    engines: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for key, base in (("dead", dead), ("live", live), ("unknown", elsewhere)):
            clouds[key] = cloud = LocalCloud(base / "vms", netns=True, bridge_netns=bridge, subnet="10.239.7.0/24")
            iid = f"{tag}-{key}"
            tags = {TAG_CLUSTER: tag, TAG_INSTANCE: iid}
            vms[key] = cloud.create(VMSpec(iid, iid, Flavour("f", 1, 100), "#!/bin/sh\nsleep 600\n", tags))
        vm_pid = {
            k: int(json.loads((c.base_dir / f"{tag}-{k}" / "meta.json").read_text())["pid"]) for k, c in clouds.items()
        }
        for key, base in (("dead", dead), ("live", live)):
            (base / "eng").mkdir()
            cfg = idle_engine_config(base / "eng", f"{tag}{key}")
            engines[key] = start_engine(cfg)
            wait_started(cfg)
        _ip("netns", "add", f"mvm-{tag}-empty")

        gone = remove_leftovers(prefix=f"mvm-{tag}-", min_empty_age_s=0, within=tmp_path)

        left = sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(f"mvm-{tag}-"))
        assert left == [f"mvm-{tag}-live", f"mvm-{tag}-unknown"], gone
        assert engines["dead"].wait(timeout=60) == -9  # a wait for the end, not a bound on its speed
        wait_until("the dead session's VM is killed", lambda: not _alive(vm_pid["dead"]), 60, 0.1)
        assert engines["live"].poll() is None, "the engine of a live session was killed"
        assert _alive(vm_pid["live"]) and _alive(vm_pid["unknown"])
        assert sum(f"of {dead}" in g for g in gone) == 1, gone  # the engine, named with its base directory
    finally:
        for proc in engines.values():
            proc.kill()
            proc.wait()
        for key, vm in vms.items():
            clouds[key].delete(vm)
        subprocess.run(["ip", "netns", "del", f"mvm-{tag}-empty"], capture_output=True)
        shutil.rmtree(elsewhere, ignore_errors=True)
