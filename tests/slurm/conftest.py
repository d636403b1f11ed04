"""The real Slurm testbed (testbeds/slurm.sh), one fresh controller per test, in its own network namespace."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from marea.demo import SlurmTestbed, repo_root

pytestmark = pytest.mark.slurm


@pytest.fixture
def slurm() -> Iterator[SlurmTestbed]:
    if os.geteuid() != 0:
        pytest.fail("the Slurm tests need root (network namespaces)")
    if shutil.which("slurmctld") is None:
        pytest.fail("Slurm is not installed: run `bash testbeds/slurm.sh install` (make testbeds does)")
    tb = SlurmTestbed(
        repo_root() / "testbeds" / "slurm.sh", base="/tmp/marea-slurm-t", ns="marea-slurm-t", subnet="10.234.0"
    )
    tb.run("stop", check=False)
    tb.run("start")
    try:
        yield tb
    finally:
        tb.run("stop", check=False)


def leftover_vm_namespaces(cluster: str) -> list[str]:
    p = Path("/run/netns")
    return sorted(n.name for n in p.iterdir() if n.name.startswith(f"mvm-{cluster}-")) if p.exists() else []


def cleanup_vms(vm_dir: Path, cluster: str) -> None:
    """Teardown after a failed test: power off whatever VMs the test's engine left."""
    from marea.clouds.local import LocalCloud

    if vm_dir.exists():
        cloud = LocalCloud(vm_dir)
        for vm in cloud.list_owned(cluster):
            cloud.delete(vm)
