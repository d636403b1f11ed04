"""The engine's side of cancelling a surplus boot (`cancel_surplus_boots`): the race where the VM joins the batch
system and takes a job between the cycle's snapshot and the delete. The batch system refuses the removal (work
runs); the engine must then drain the worker once, so that it takes no more work and is removed when its job ends,
and must never delete the VM while the batch system refuses. Real local cloud VMs and a real SQLite store; the
batch side is a queue driven by the test (it plays the batch system that saw the join too late for the snapshot),
since the race cannot be timed on the real Slurm testbed (the real cancel: tests/slurm/test_cancel_boot.py)."""

from __future__ import annotations

import time
from pathlib import Path

from marea.batch.base import BatchSnapshot
from marea.clouds.local import LocalCloud
from marea.engine.reconciler import Reconciler
from marea.engine.store import Store
from marea.model import Flavour, InstanceState, PolicySettings
from tests.fixed_queue import FixedQueue

FLAVOUR = Flavour("f1", 1, 1000)
SETTINGS = PolicySettings(flavours=(FLAVOUR,), max_workers=4, cancel_surplus_boots=True, join_timeout_s=600)


class LateJoin(FixedQueue):
    """A queue the test empties; the worker it refuses to remove has joined and runs a job until `busy` is False.
    Records the drains it was sent."""

    def __init__(self) -> None:
        super().__init__(1)
        self.busy = True
        self.drains: list[str] = []

    def snapshot(self, flavours: tuple[Flavour, ...]) -> BatchSnapshot:
        return super().snapshot(flavours) if self.jobs else BatchSnapshot()

    def drain(self, worker: str, reason: str) -> None:
        self.drains.append(worker)

    def remove(self, worker: str) -> bool:
        return not self.busy


def test_a_cancelled_boot_that_joined_and_took_a_job_is_drained_once_and_deleted_only_when_its_job_ends(
    tmp_path: Path,
) -> None:
    batch = LateJoin()
    rec = Reconciler(cluster="cx", store=Store(f"sqlite:///{tmp_path / 'state.db'}", "cx"),
                     cloud=LocalCloud(tmp_path / "vms"), batch=batch, settings=SETTINGS,
                     user_data_template="#!/bin/sh\nsleep 300\n", clock=time.time)  # fmt: skip
    try:
        assert rec.cycle().plan.boots == 1
        (vm,) = rec.cloud.list_owned("cx")
        batch.jobs = 0  # the job started elsewhere: the booting VM is surplus
        report = rec.cycle()
        (cancel,) = [a for a in report.plan.actions if a.instance_id == vm.instance_id]
        assert "no queued work needs it" in cancel.reason and not cancel.failed_boot
        record = rec.store.get(vm.instance_id or "")
        assert record is not None and record.state is InstanceState.DELETING and record.drain_sent
        assert batch.drains == [vm.instance_id]  # drained, so it takes no more work
        rec.cycle()
        rec.cycle()
        assert batch.drains == [vm.instance_id], "drained once, not every cycle"
        assert [v.instance_id for v in rec.cloud.list_owned("cx")] == [vm.instance_id], "deleted under a job"
        batch.busy = False  # its job ended
        rec.cycle()
        assert rec.cloud.list_owned("cx") == []
        gone = rec.store.get(vm.instance_id or "")
        assert gone is not None and gone.state is InstanceState.GONE
    finally:
        for v in rec.cloud.list_owned("cx"):
            rec.cloud.delete(v)
        rec.store.close()
