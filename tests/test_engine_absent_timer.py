"""The grace of a joined worker missing from the batch system survives a restart of the engine: a new engine
on the same store does not give the worker a fresh grace period. Real local cloud VM and a real SQLite store; the
batch side is a fixed queue, in which the worker is never seen (it left the batch system)."""

from __future__ import annotations

import time
from pathlib import Path

from marea.clouds.base import TAG_CLUSTER, TAG_FLAVOUR, TAG_INSTANCE, VMSpec
from marea.clouds.local import LocalCloud
from marea.engine.reconciler import Reconciler
from marea.engine.store import InstanceRecord, Store
from marea.model import Flavour, InstanceState, PolicySettings
from tests.fixed_queue import FixedQueue

FLAVOUR = Flavour("f1", 1, 1000)
GRACE = 120.0


def engine(store: Store, cloud: LocalCloud, clock: list[float]) -> Reconciler:
    return Reconciler(cluster="ab", store=store, cloud=cloud, batch=FixedQueue(0),
                      settings=PolicySettings(flavours=(FLAVOUR,), max_workers=2, min_workers=1),
                      user_data_template="#!/bin/sh\n", clock=lambda: clock[0], absent_grace_s=GRACE)  # fmt: skip


def test_a_restart_does_not_restart_the_grace_of_a_missing_worker(tmp_path: Path) -> None:
    cloud = LocalCloud(tmp_path / "vms")
    store = Store(f"sqlite:///{tmp_path / 'state.db'}", "ab")
    t0 = time.time()
    clock = [t0]
    vm = cloud.create(VMSpec("ab-1", "ab-1", FLAVOUR, "#!/bin/sh\nsleep 300\n",
                             {TAG_CLUSTER: "ab", TAG_INSTANCE: "ab-1", TAG_FLAVOUR: FLAVOUR.name}))  # fmt: skip
    joined = InstanceRecord("ab-1", "ab", FLAVOUR.name, "", InstanceState.IDLE, t0, t0, cloud_id=vm.cloud_id,
                            joined_at=t0, idle_since=t0)  # fmt: skip
    store.add_instance(joined)
    try:
        engine(store, cloud, clock).cycle()  # missing from the batch system: its grace starts now
        assert store.get("ab-1").state is InstanceState.IDLE  # type: ignore[union-attr]
        clock[0] = t0 + GRACE * 0.75
        engine(store, cloud, clock).cycle()  # a restarted engine, still within the grace
        assert store.get("ab-1").state is InstanceState.IDLE  # type: ignore[union-attr]
        clock[0] = t0 + GRACE * 1.5
        engine(store, cloud, clock).cycle()  # restarted again: the grace ran out at t0 + GRACE, not later
        after = store.get("ab-1")
        assert after is not None and after.state in (InstanceState.FAILED, InstanceState.DELETING,
                                                     InstanceState.GONE), after  # fmt: skip
        assert after.failure == "worker left the batch system"
        assert store.get_json("absent_since") == {}, "the timer of a failed worker is dropped"
    finally:
        for v in cloud.list_owned("ab"):
            cloud.delete(v)
        store.close()
