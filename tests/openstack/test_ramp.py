"""The adaptive parallel-boot limit (marea.policy.ramp) against real Nova's quota answers.

The engine reads the project's headroom from the limits API, but counts it in the flavour sizes of its config
(what the batch system will see): here `m1.small` is declared with 512 MiB while Nova's m1.small has 2048 MB,
so the engine believes 4x more VMs fit the RAM quota than do, and Nova refuses the rest with "Quota exceeded"
(HTTP 403). The ramp must halve on those answers, keep the halved limit in the store (a restarted engine
starts from it), and the engine must not retry at once (the boot backoff).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from marea.config import parse_config
from marea.engine.reconciler import RAMP_KEY
from marea.model import ActionKind
from tests.fixed_queue import FixedQueue

from .conftest import OpenStackTestbed, purge
from .test_cluster import cluster_data
from .test_engine import reconciler, workers

pytestmark = pytest.mark.openstack


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
    headroom = engine.cloud.quota()
    assert headroom.memory_mb is not None
    used_ram = 1_000_000 - headroom.memory_mb
    demo_quota(ram=used_ram + 2 * real_ram, instances=-1, cores=-1)  # room for 2 real VMs; the engine thinks 8
    try:
        assert engine.ramp().limit is None  # a fresh store: the limit starts at initial_parallel_boots
        first = engine.cycle()
        assert sum(a.count for a in first.plan.of_kind(ActionKind.BOOT)) == 8
        refused = [e for e in first.errors if "quota" in e.lower()]
        assert refused, first.errors  # Nova's own words, e.g. "Quota exceeded for ram"
        created = 8 - len(first.errors)
        assert 1 <= created <= 2 + 1  # Nova's quota check may let one race through, never all eight
        assert engine.store.get_json(RAMP_KEY, None) == 4  # 8 halved
        ramp = [d for d in engine.store.recent_decisions(100) if d.kind == "ramp"]
        assert len(ramp) == 1 and "halved to 4" in ramp[0].reason
        # the failed boots also started the backoff: the next cycle boots nothing and says why
        second = engine.cycle()
        assert second.plan.of_kind(ActionKind.BOOT) == []
        assert any("backoff" in a.reason for a in second.plan.of_kind(ActionKind.WAIT))
        engine.cloud.close()
        # a restarted engine on the same store starts from the halved limit, not from initial_parallel_boots
        again = reconciler(cfg, FixedQueue(8, 1, 256), tmp_path)
        assert again.ramp().limit == 4
        again.cloud.close()
        assert len(workers(demo, cluster_name)) == created
    finally:
        purge(demo, cluster_name)
    assert workers(demo, cluster_name) == [], "a worker leaked"
