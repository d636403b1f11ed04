"""The engine's side of headroom: it measures the arrival rate from the queue it sees, keeps the arrival log in
the store (a restart keeps the rate), boots the warm capacity and keeps the youngest idle workers while work
keeps arriving. Real local cloud VMs and a real SQLite store; the batch side is a queue whose length the test
sets, and which reports the VMs as joined idle workers once the test says so. Time is a clock the test moves."""

from __future__ import annotations

from pathlib import Path

from marea.batch.base import BatchSnapshot, Worker
from marea.clouds.local import LocalCloud
from marea.engine.reconciler import ARRIVALS_KEY, Reconciler
from marea.engine.store import Store
from marea.model import ActionKind, Flavour, PolicySettings
from marea.policy import arrivals
from tests.fixed_queue import FixedQueue

FLAVOUR = Flavour("f4", 4, 4000)
WINDOW = 600.0
SETTINGS = PolicySettings(flavours=(FLAVOUR,), max_workers=10, join_timeout_s=3600.0, idle_threshold_s=60.0,
                          headroom=True, headroom_max_workers=2, headroom_window_s=WINDOW,
                          headroom_boot_s=300.0)  # fmt: skip


class Queue(FixedQueue):
    """A queue of 1-core jobs the test lengthens and shortens; `joined` names the VMs seen as idle workers."""

    def __init__(self) -> None:
        super().__init__(0)
        self.joined: list[str] = []

    def snapshot(self, flavours: tuple[Flavour, ...]) -> BatchSnapshot:
        snap = super().snapshot(flavours)
        r = FLAVOUR.resources
        workers = {n: Worker(n, r, r, busy=False) for n in self.joined}
        return BatchSnapshot(snap.demand, workers=workers, queued_jobs=snap.queued_jobs)


def engine(tmp_path: Path, queue: Queue, clock: list[float]) -> Reconciler:
    return Reconciler(cluster="hr", store=Store(f"sqlite:///{tmp_path / 'state.db'}", "hr"),
                      cloud=LocalCloud(tmp_path / "vms"), batch=queue, settings=SETTINGS,
                      user_data_template="#!/bin/sh\nsleep 300\n", clock=lambda: clock[0])  # fmt: skip


def stored_rate(rec: Reconciler, now: float) -> float:
    """Cores per boot time, from the log as the store holds it."""
    log = arrivals.from_json(rec.store.get_json(ARRIVALS_KEY))
    return arrivals.rate(log, now, WINDOW).cores_per_s * SETTINGS.headroom_boot_s


def test_warm_capacity_is_booted_survives_a_restart_and_is_released_when_arrivals_stop(tmp_path: Path) -> None:
    queue, clock = Queue(), [1000.0]
    rec = engine(tmp_path, queue, clock)
    try:
        assert rec.cycle().plan.boots == 0  # nothing queued, nothing arrived
        clock[0], queue.jobs = 1010.0, 8
        plan = rec.cycle().plan
        # 8 cores arrived in the 600 s window: 4 cores per 300 s boot, one 4-core worker warm on top of the
        # two the queue needs
        assert [(a.count, "headroom" in a.reason) for a in plan.of_kind(ActionKind.BOOT)] == [(2, False), (1, True)]
        clock[0] = 1020.0
        assert rec.cycle().plan.boots == 0  # the spare booting worker is the warm capacity
        rec.store.close()

        rec = engine(tmp_path, queue, clock)  # a restart: the log comes from the store
        clock[0], queue.jobs = 1030.0, 4  # half of the queue started: no arrival
        assert rec.cycle().plan.boots == 0
        assert stored_rate(rec, 1030.0) == 4.0  # a fresh log would have counted the 4 still queued: 2.0

        vms = sorted(v.instance_id or "" for v in rec.cloud.list_owned("hr"))
        assert len(vms) == 3
        clock[0], queue.jobs, queue.joined = 1040.0, 0, vms
        rec.cycle()  # all three join, idle
        clock[0] = 1040.0 + SETTINGS.idle_threshold_s + 10
        drains = [a.instance_id for a in rec.cycle().plan.actions if a.kind == "drain"]
        assert len(drains) == 2  # idle past the threshold, but one is kept warm while 4 cores/boot arrive
        (kept,) = set(vms) - set(drains)

        clock[0] = 1000.0 + WINDOW + 10  # the arrivals of t=1010 left the window: nothing is kept warm
        drains = [a.instance_id for a in rec.cycle().plan.actions if a.kind == "drain"]
        assert drains == [kept]
        assert stored_rate(rec, clock[0]) == 0
    finally:
        for v in rec.cloud.list_owned("hr"):
            rec.cloud.delete(v)
        rec.store.close()
