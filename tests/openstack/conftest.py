"""The real OpenStack testbed (testbeds/openstack.sh) for the driver, cluster-maker and engine tests.

Started once per session (about 30 s from its snapshot, 60 s the very first time) and stopped at the end; an
instance that was already running (a developer's) is reused and left running. The install step runs in
`make testbeds`; without it these tests skip with the reason.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "testbeds" / "openstack.sh"
VENV = Path(os.environ.get("MAREA_OS_VENV", "/opt/marea-openstack-venv"))
STATE = Path(os.environ.get("MAREA_OS_STATE", "/tmp/marea-openstack"))

#: a flavour no fake compute host can hold (disk beyond the FakeDriver's 600000 GB): boots go to ERROR
NO_HOST_FLAVOUR = "x1.nohost"

T = TypeVar("T")


@dataclass
class OpenStackTestbed:
    clouds_yaml: Path

    def connect(self, cloud: str = "demo") -> Any:
        import openstack

        warnings.filterwarnings("ignore", module="openstack")
        return openstack.connect(cloud=cloud)


@pytest.fixture(scope="session")
def testbed() -> Iterator[OpenStackTestbed]:
    if not (VENV / "bin" / "nova-compute").exists():
        pytest.skip(f"OpenStack testbed not installed in {VENV}: run 'make testbeds'")
    running = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0
    if not running:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120)
        started = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=600)
        if started.returncode != 0:
            subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120)
            pytest.fail(f"testbed did not start: {started.stderr[-2000:]}")
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(STATE / "clouds.yaml")
    os.environ.pop("OS_CLOUD", None)
    bed = OpenStackTestbed(STATE / "clouds.yaml")
    admin = bed.connect("admin")
    if admin.compute.find_flavor(NO_HOST_FLAVOUR) is None:
        admin.compute.create_flavor(name=NO_HOST_FLAVOUR, ram=512, vcpus=1, disk=700000)
    admin.close()
    try:
        yield bed
    finally:
        if not running:
            subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=300)


@pytest.fixture
def admin(testbed: OpenStackTestbed) -> Iterator[Any]:
    conn = testbed.connect("admin")
    yield conn
    conn.close()


@pytest.fixture
def demo(testbed: OpenStackTestbed) -> Iterator[Any]:
    conn = testbed.connect("demo")
    yield conn
    conn.close()


@pytest.fixture
def cluster_name() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def demo_quota(admin: Any, demo: Any) -> Iterator[Any]:
    """Set the demo project's compute quota for one test; the original is restored afterwards."""
    project = patient(admin.identity.find_project, "demo")
    before = patient(admin.get_compute_quotas, project.id)
    saved = {k: before[k] for k in ("instances", "cores", "ram")}

    def set_quota(**kw: int) -> None:
        patient(admin.set_compute_quotas, project.id, **kw)

    yield set_quota
    patient(admin.set_compute_quotas, project.id, **saved)


def patient(call: Callable[..., T], *args: Any, attempts: int = 6, **kw: Any) -> T:
    """A test's own idempotent call to the testbed (a read, a quota set, a delete), made again when the
    connection broke: the testbed's nova-api, one process on a loaded machine, resets a connection or answers
    503 now and then. Not for the code under test: marea's driver has its own retries (marea.clouds.retry)."""
    from keystoneauth1.exceptions.connection import ConnectionError as ConnectionBroken
    from openstack.exceptions import HttpException

    for attempt in range(1, attempts + 1):
        try:
            return call(*args, **kw)
        except (ConnectionBroken, HttpException) as exc:
            status = getattr(exc, "status_code", None)
            if attempt == attempts or (isinstance(exc, HttpException) and (status is None or status < 500)):
                raise
            time.sleep(attempt)
    raise AssertionError("unreachable")


def wait_for(predicate: Any, timeout: float = 60.0, interval: float = 0.5) -> Any:
    """Poll until `predicate()` is truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def purge(conn: Any, cluster: str) -> None:
    """Test cleanup: delete every server tagged for `cluster` (the tests' own), and wait until they are gone."""
    from marea.clouds.base import TAG_CLUSTER

    def owned() -> list[Any]:
        return [
            s
            for s in patient(lambda: list(conn.compute.servers()))
            if (s.metadata or {}).get(TAG_CLUSTER) == cluster and s.status != "DELETED"
        ]

    for server in owned():
        patient(conn.compute.delete_server, server, ignore_missing=True)
    wait_for(lambda: not owned(), timeout=180)  # real guests stop first; slower on a loaded CI machine
