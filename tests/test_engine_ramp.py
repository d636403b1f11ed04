"""The engine's side of the adaptive parallel-boot limit: it feeds the policy's ramp rule with what its creates
and boots did, keeps the limit in the store (a restart starts from it) and records a halving as a decision.
Real local cloud VMs and a real SQLite store; the batch side is a fixed queue (nothing joins here, so a join
timeout is the failed boot). Quota answers of a real cloud: tests/openstack/test_ramp.py."""

from __future__ import annotations

import time
from pathlib import Path

from marea.clouds.local import LocalCloud
from marea.engine.reconciler import Reconciler
from marea.engine.store import Store
from marea.model import Flavour, PolicySettings
from tests.fixed_queue import FixedQueue

FLAVOUR = Flavour("f1", 1, 1000)
SETTINGS = PolicySettings(flavours=(FLAVOUR,), max_workers=40, initial_parallel_boots=4, max_parallel_boots=64,
                          join_timeout_s=2.0, backoff_base_s=600)  # fmt: skip


def engine(tmp_path: Path) -> Reconciler:
    return Reconciler(cluster="rp", store=Store(f"sqlite:///{tmp_path / 'state.db'}", "rp"),
                      cloud=LocalCloud(tmp_path / "vms"), batch=FixedQueue(40), settings=SETTINGS,
                      user_data_template="#!/bin/sh\nsleep 300\n", clock=time.time)  # fmt: skip


def test_the_limit_doubles_on_successful_creates_survives_a_restart_and_halves_on_failed_boots(
    tmp_path: Path,
) -> None:
    rec = engine(tmp_path)
    try:
        booted = []
        for _ in range(3):
            report = rec.cycle()
            assert report.errors == []
            booted.append(report.plan.boots)
        # the limit counts VMs booting at once: 4, then 8 - 4, then 16 - 8; it doubled after each cycle
        assert booted == [4, 4, 8]
        assert rec.ramp().limit == 32
        rec.store.close()
        rec = engine(tmp_path)  # a restart: the limit comes from the store, not from initial_parallel_boots
        assert rec.ramp().limit == 32
        time.sleep(SETTINGS.join_timeout_s + 0.5)
        report = rec.cycle()  # none of the 16 joined: deleted as failed boots, the limit halves once
        assert len([a for a in report.plan.actions if a.failed_boot]) == 16
        assert rec.ramp().limit == 16
        assert any(d.kind == "ramp" and "halved to 16" in d.reason for d in rec.store.recent_decisions(100))
        assert rec.cycle().plan.boots == 0  # and the backoff holds the next boots
    finally:
        for v in rec.cloud.list_owned("rp"):
            rec.cloud.delete(v)
        rec.store.close()
