"""The adaptive parallel-boot limit (marea.policy.ramp) against real Nova's quota answers.

The engine reads the project's headroom from the limits API, but counts it in the flavour sizes of its config
(what the batch system will see): here `m1.small` is declared with 512 MiB while Nova's m1.small has 2048 MB,
so the engine believes 4x more VMs fit the RAM quota than do, and Nova refuses the rest with "Quota exceeded":
at the API (HTTP 403) or, as parallel creates race past that check, by its conductor (the server in ERROR). The
ramp must never grow on creates Nova accepted and then put in ERROR (it grows only on boots the cloud confirmed),
must halve on those answers, keep the halved limit in the store (a restarted engine starts from it), and the
engine must not retry at once (the boot backoff). Run by CI (no opt-in): every outcome Nova may legitimately
give under load is expected, and the test's own calls are made again on a reset connection (`patient`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from marea.config import parse_config
from marea.model import ActionKind
from marea.policy import parallel_limit
from tests.fixed_queue import FixedQueue

from .conftest import OpenStackTestbed, patient, purge, wait_for
from .test_cluster import cluster_data
from .test_engine import reconciler, workers

pytestmark = pytest.mark.openstack


def ram_used(demo: Any) -> int:
    return int(patient(demo.compute.get_limits).absolute.total_ram_used or 0)


def settled_ram_use(demo: Any) -> tuple[int] | None:
    """The project's RAM use by Nova's count (in a tuple: 0 is an answer), once no server is on its way out."""
    servers = patient(lambda: list(demo.compute.servers()))
    if any(s.status == "DELETED" or (s.task_state or "") == "deleting" for s in servers):
        return None
    used = ram_used(demo)
    time.sleep(2)  # the count lags a delete by a moment: it must read the same twice
    return (used,) if used == ram_used(demo) else None


def settled_servers(demo: Any, cluster: str) -> tuple[list[Any]] | None:
    """The cluster's servers once none is building any more (in a tuple: none at all is an answer, when Nova
    refused every create at its API; an accepted create is listed as soon as its call returns)."""
    servers = patient(workers, demo, cluster)
    return None if any(s.status == "BUILD" for s in servers) else (servers,)


# The project's RAM headroom, in real m1.small VMs: room for two (the engine thinks 8 fit: eight creates, which
# race past Nova's API check, the excess put in ERROR by its conductor, or refused at the API), or for half of
# one (the engine thinks 2 fit: both refused at the API with 403, nothing created: the path CI saw under load).
@pytest.mark.parametrize("room", [2.0, 0.5], ids=["room-for-two", "room-for-none"])
def test_quota_answers_halve_the_parallel_boot_limit_never_grow_it_and_a_restart_keeps_it(
    testbed: OpenStackTestbed, demo: Any, demo_quota: Any, cluster_name: str, tmp_path: Path, room: float
) -> None:
    data = cluster_data(cluster_name)
    data.pop("master")
    data["flavours"] = [{"name": "m1.small", "cores": 1, "memory_mb": 512}]
    # a long backoff: "no immediate retry" must not depend on how long the testbed takes to settle
    data["policy"] = {"max_workers": 20, "initial_parallel_boots": 8, "max_parallel_boots": 64, "backoff_base_s": 600}
    cfg = parse_config(data)
    settings = cfg.policy_settings()
    engine = reconciler(cfg, FixedQueue(8, 1, 256), tmp_path)
    real_ram = patient(demo.compute.find_flavor, "m1.small").ram
    assert real_ram > 512
    demo_quota(ram=1_000_000, instances=-1, cores=-1)  # a known RAM limit, to read what the project uses
    # servers of earlier tests still being deleted would free RAM after we read the use, and let all eight
    # creates through: wait until the project's use stands still
    [used_ram] = wait_for(lambda: settled_ram_use(demo), timeout=120)
    headroom = int(room * real_ram)
    demo_quota(ram=used_ram + headroom, instances=-1, cores=-1)
    asked = min(8, headroom // 512)  # what the engine believes fits, in its declared 512 MiB
    try:
        assert engine.ramp().limit is None  # a fresh store: the limit starts at initial_parallel_boots
        first = engine.cycle()
        assert sum(a.count for a in first.plan.of_kind(ActionKind.BOOT)) == asked
        # What Nova legitimately answers to parallel creates beyond the quota: "Quota exceeded" at its API
        # (HTTP 403), or an accepted create that its conductor, checking again, puts in ERROR with the quota
        # fault (parallel creates race past the API's check); under load the conductor's rechecks, each counting
        # every instance already written, may refuse them all. A create whose answer was lost (a reset
        # connection) is a failed boot too.
        failed_at_create = [e for e in first.errors if e.startswith("create of")]
        [servers] = wait_for(lambda: settled_servers(demo, cluster_name), timeout=150)
        in_error = [s for s in servers if s.status == "ERROR"]
        faults = [str((s.fault or {}).get("message", "")) for s in in_error]
        assert failed_at_create or in_error, first.errors
        assert all("quota" in f.lower() for f in faults), faults
        created = len(servers) - len(in_error)
        assert created <= int(room) + 1  # at most what the quota holds (one may race through)
        # the first cycle's creates were at best accepted, never confirmed: the limit has not grown; a create
        # refused at once halved it already
        after_first = 4 if failed_at_create else 8
        assert parallel_limit(engine.ramp(), settings) == after_first
        # the second cycle sees the servers: those in ERROR are failed boots (halved), the ACTIVE ones are
        # confirmed, but their round had failures: no growth
        second = engine.cycle()
        halved = after_first // 2 if in_error else after_first
        print(f"Nova's answers: {len(failed_at_create)} refused at create, {len(in_error)} in ERROR, {created} up; "
              f"limit 8 -> {after_first} -> {halved}")  # fmt: skip
        assert engine.ramp().limit == halved and engine.ramp().rounds == ()
        ramp = [d.reason for d in engine.store.recent_decisions(100) if d.kind == "ramp"]
        # one halving per cycle with failed boots, oldest first: refused at create (cycle 1), in ERROR (cycle 2)
        expected = (["halved to 4"] if failed_at_create else []) + ([f"halved to {halved}"] if in_error else [])
        assert len(ramp) == len(expected) and all(e in r for e, r in zip(expected, ramp, strict=True)), ramp
        # the failed boots also started the backoff: no cycle boots again at once, and says why; the ACTIVE
        # servers, listed again, do not make it grow either
        third = engine.cycle()
        for report in (second, third):
            assert report.plan.of_kind(ActionKind.BOOT) == []
        assert any("backoff" in a.reason for a in third.plan.of_kind(ActionKind.WAIT))
        assert engine.ramp().limit == halved
        engine.cloud.close()
        # a restarted engine on the same store starts from the halved limit, not from initial_parallel_boots
        again = reconciler(cfg, FixedQueue(8, 1, 256), tmp_path)
        assert again.ramp().limit == halved
        again.cloud.close()
        assert len([s for s in patient(workers, demo, cluster_name) if s.status != "ERROR"]) == created
    finally:
        purge(demo, cluster_name)
    assert patient(workers, demo, cluster_name) == [], "a worker leaked"
