"""A VM that shows up after the engine closed its record (a create whose answer was lost, then a listing that
did not show the VM yet) is adopted again, not a unique-key error in every later cycle. Real local cloud VMs
and a real SQLite store; the batch side is a fixed queue (nothing joins here)."""

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


def test_a_vm_appearing_after_its_record_was_closed_is_adopted_again(tmp_path: Path) -> None:
    cloud = LocalCloud(tmp_path / "vms")
    store = Store(f"sqlite:///{tmp_path / 'state.db'}", "ra")
    rec = Reconciler(cluster="ra", store=store, cloud=cloud, batch=FixedQueue(0),
                     settings=PolicySettings(flavours=(FLAVOUR,), max_workers=2), user_data_template="#!/bin/sh\n",
                     clock=time.time)  # fmt: skip
    now = time.time()
    store.add_instance(InstanceRecord("ra-1", "ra", FLAVOUR.name, "", InstanceState.REQUESTED, now, now))
    try:
        rec.cycle()  # no VM listed: the interrupted create's record is closed
        closed = store.get("ra-1")
        assert closed is not None and closed.state is InstanceState.GONE
        vm = cloud.create(VMSpec("ra-1", "ra-1", FLAVOUR, "#!/bin/sh\nsleep 300\n",
                                 {TAG_CLUSTER: "ra", TAG_INSTANCE: "ra-1", TAG_FLAVOUR: FLAVOUR.name}))  # fmt: skip
        report = rec.cycle()
        assert report.errors == []
        again = store.get("ra-1")
        assert again is not None and again.state is InstanceState.BOOTING and again.cloud_id == vm.cloud_id
        assert any(d.kind == "adopt" and "again" in d.reason for d in store.recent_decisions(20))
        assert rec.cycle().errors == []  # and the cycles after it run
    finally:
        for v in cloud.list_owned("ra"):
            cloud.delete(v)
        store.close()
