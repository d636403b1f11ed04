"""The adaptive parallel-boot limit (marea.policy.ramp) against real Nova's quota answers.

The engine reads the project's headroom from the limits API, but counts it in the flavour sizes of its config
(what the batch system will see): here `m1.small` is declared with 512 MiB while Nova's m1.small has 2048 MB,
so the engine believes 4x more VMs fit the RAM quota than do, and Nova refuses the rest with "Quota exceeded":
at the API (HTTP 403) or, as parallel creates race past that check, by its conductor (the server in ERROR). The
ramp must halve on those answers, keep the halved limit in the store (a restarted engine starts from it), and
the engine must not retry at once (the boot backoff).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from keystoneauth1.exceptions.connection import ConnectFailure

from marea.config import parse_config
from marea.engine.reconciler import RAMP_KEY
from marea.model import ActionKind
from tests.fixed_queue import FixedQueue

from .conftest import OpenStackTestbed, purge, wait_for
from .test_cluster import cluster_data
from .test_engine import reconciler, workers

pytestmark = [
    pytest.mark.openstack,
    # Opt-in: in two of three clean-clone CI runs this test failed on the testbed under load (Nova's conductor
    # refusing all creates; then a connection reset by nova-api in the test's own calls). Both are handled now,
    # but not yet proven in CI; issue #15 stays open until it runs there. Run: MAREA_RAMP_QUOTA_TEST=1 pytest ...
    pytest.mark.skipif(not os.environ.get("MAREA_RAMP_QUOTA_TEST"), reason="opt-in: MAREA_RAMP_QUOTA_TEST=1"),
]


def settled_ram_use(demo: Any) -> tuple[int] | None:
    """The project's RAM use by Nova's count (in a tuple: 0 is an answer), once no server is on its way out."""
    try:
        return _settled_ram_use(demo)
    except ConnectFailure:  # the testbed's nova-api resets a connection now and then under load: ask again
        return None


def _settled_ram_use(demo: Any) -> tuple[int] | None:
    if any(s.status == "DELETED" or (s.task_state or "") == "deleting" for s in demo.compute.servers()):
        return None
    used = int(demo.compute.get_limits().absolute.total_ram_used or 0)
    time.sleep(2)  # the count lags a delete by a moment: it must read the same twice
    again = int(demo.compute.get_limits().absolute.total_ram_used or 0)
    return (used,) if used == again else None


def settled_servers(demo: Any, cluster: str) -> list[Any] | None:
    """The cluster's servers once none is building any more (None while one is)."""
    try:
        servers = workers(demo, cluster)
    except ConnectFailure:
        return None
    return None if not servers or any(s.status == "BUILD" for s in servers) else servers


def test_quota_answers_halve_the_parallel_boot_limit_and_a_restart_keeps_it(
    testbed: OpenStackTestbed, demo: Any, demo_quota: Any, cluster_name: str, tmp_path: Path
) -> None:
    data = cluster_data(cluster_name)
    data.pop("master")
    data["flavours"] = [{"name": "m1.small", "cores": 1, "memory_mb": 512}]
    data["policy"] = {"max_workers": 20, "initial_parallel_boots": 8, "max_parallel_boots": 64}
    cfg = parse_config(data)
    engine = reconciler(cfg, FixedQueue(8, 1, 256), tmp_path)
    real_ram = demo.compute.find_flavor("m1.small").ram
    assert real_ram > 512
    demo_quota(ram=1_000_000, instances=-1, cores=-1)  # a known RAM limit, to read what the project uses
    # servers of earlier tests still being deleted would free RAM after we read the use, and let all eight
    # creates through: wait until the project's use stands still
    [used_ram] = wait_for(lambda: settled_ram_use(demo), timeout=180)
    demo_quota(ram=used_ram + 2 * real_ram, instances=-1, cores=-1)  # room for 2 real VMs; the engine thinks 8
    try:
        assert engine.ramp().limit is None  # a fresh store: the limit starts at initial_parallel_boots
        first = engine.cycle()
        assert sum(a.count for a in first.plan.of_kind(ActionKind.BOOT)) == 8
        # parallel creates race past Nova's API quota check (it counts instances already in a cell); Nova's
        # conductor checks again and puts the excess in ERROR with the quota fault: both are refusals
        refused_at_create = [e for e in first.errors if "quota" in e.lower()]
        servers = wait_for(lambda: settled_servers(demo, cluster_name), timeout=240)
        in_error = [s for s in servers if s.status == "ERROR"]
        faults = [str((s.fault or {}).get("message", "")) for s in in_error]
        assert refused_at_create or in_error, first.errors
        assert all("quota" in f.lower() for f in faults), faults
        created = len(servers) - len(in_error)
        # at most what the quota holds (one may race through); under load the conductor's rechecks, each counting
        # every instance already written, may refuse all eight
        assert created <= 2 + 1
        # the ramp grows on accepted creates and halves on each cycle with failed boots: creates refused at the
        # API fail in the first cycle, servers Nova's conductor put in ERROR are seen failed in the second
        after_first = 4 if refused_at_create else 16
        assert engine.store.get_json(RAMP_KEY, None) == after_first
        second = engine.cycle()
        halved = after_first // 2 if in_error else after_first
        assert engine.store.get_json(RAMP_KEY, None) == halved
        ramp = [d.reason for d in engine.store.recent_decisions(100) if d.kind == "ramp"]
        assert len(ramp) == bool(refused_at_create) + bool(in_error), ramp
        assert f"halved to {halved}" in ramp[0], ramp  # the newest first
        # the failed boots also started the backoff: no cycle boots again at once, and says why
        third = engine.cycle()
        for report in (second, third):
            assert report.plan.of_kind(ActionKind.BOOT) == []
        assert any("backoff" in a.reason for a in third.plan.of_kind(ActionKind.WAIT))
        engine.cloud.close()
        # a restarted engine on the same store starts from the halved limit, not from initial_parallel_boots
        again = reconciler(cfg, FixedQueue(8, 1, 256), tmp_path)
        assert again.ramp().limit == halved
        again.cloud.close()
        assert len([s for s in workers(demo, cluster_name) if s.status != "ERROR"]) == created
    finally:
        purge(demo, cluster_name)
    assert workers(demo, cluster_name) == [], "a worker leaked"
