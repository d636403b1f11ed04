"""The real OpenStack testbed (testbeds/openstack.sh) for the driver, cluster-maker and engine tests.

The machine is shared (several sessions hold /tmp/marea-lock.openstack in turn, and a developer may be using
the testbed), so the session never stops a testbed: one that is running is reused; one that is not running (no
daemon alive) is started (about 30 s from its snapshot, 60 s the very first time) and left running for whoever
comes next (`bash testbeds/openstack.sh stop` when done); one that is partly up (a daemon dead, others alive)
fails the session with the dead daemons' names, since restarting it would take down what someone else is
using. Two sessions starting it at once are serialised by the script's own lock. The install step runs in
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
def testbed() -> OpenStackTestbed:
    if not (VENV / "bin" / "nova-compute").exists():
        pytest.skip(f"OpenStack testbed not installed in {VENV}: run 'make testbeds'")
    alive, dead = testbed_daemons()
    if dead and alive:
        pytest.fail(partly_up(dead))
    if not alive:
        # the script's lock makes a concurrent start wait, then refuse ("already running"): look again
        started = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
        alive, dead = testbed_daemons()
        if dead or not alive:
            why = partly_up(dead) if dead else "no daemon is running"
            pytest.fail(f"testbed did not start ({why}); its stderr: {started.stderr[-2000:]}")
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(STATE / "clouds.yaml")
    os.environ.pop("OS_CLOUD", None)
    bed = OpenStackTestbed(STATE / "clouds.yaml")
    admin = bed.connect("admin")
    if admin.compute.find_flavor(NO_HOST_FLAVOUR) is None:
        admin.compute.create_flavor(name=NO_HOST_FLAVOUR, ram=512, vcpus=1, disk=700000)
    admin.close()
    return bed


def testbed_daemons() -> tuple[list[str], list[str]]:
    """(daemons alive, daemons dead) as `testbeds/openstack.sh status` reports them; an epmd of someone else's
    (the port was taken) is neither."""
    out = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True, timeout=60).stdout
    return parse_status(out)


def parse_status(out: str) -> tuple[list[str], list[str]]:
    alive: list[str] = []
    dead: list[str] = []
    for line in out.splitlines():
        name, _, what = line.partition(": ")
        if what.startswith("running"):
            alive.append(name)
        elif what == "DEAD":
            dead.append(name)
    return alive, dead


def partly_up(dead: list[str]) -> str:
    return (
        f"the OpenStack testbed is partly up: {', '.join(dead)} dead ({STATE}/logs); not restarted here, someone "
        "may be using it: 'bash testbeds/openstack.sh stop' then 'start', under flock -o /tmp/marea-lock.openstack"
    )


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
