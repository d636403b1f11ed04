"""The engine's side of the adaptive parallel-boot limit: it feeds the policy's ramp rule with what its creates
and boots did (accepted, then confirmed ACTIVE by the cloud, or failed), keeps the limit and its rounds in flight
in the store (a restart starts from them) and records a halving as a decision. Real local cloud VMs and a real
SQLite store; the batch side is a fixed queue (nothing joins here, so a join timeout is the failed boot, and the
cloud's ACTIVE listing is the confirmation). Quota answers of a real cloud: tests/openstack/test_ramp.py."""

from __future__ import annotations

import time
from pathlib import Path

from marea.clouds.base import VMStatus
from marea.clouds.local import LocalCloud
from marea.engine.reconciler import Reconciler
from marea.engine.store import RAMP_KEY, Store
from marea.model import BootRamp, BootRound, Flavour, PolicySettings
from tests.fixed_queue import FixedQueue

FLAVOUR = Flavour("f1", 1, 1000)
SETTINGS = PolicySettings(flavours=(FLAVOUR,), max_workers=40, initial_parallel_boots=4, max_parallel_boots=64,
                          join_timeout_s=2.0, backoff_base_s=600)  # fmt: skip
#: a VM that runs
SLEEPER = "#!/bin/sh\nsleep 300\n"


def engine(tmp_path: Path, user_data: str = SLEEPER) -> Reconciler:
    return Reconciler(cluster="rp", store=Store(f"sqlite:///{tmp_path / 'state.db'}", "rp"),
                      cloud=LocalCloud(tmp_path / "vms"), batch=FixedQueue(40), settings=SETTINGS,
                      user_data_template=user_data, clock=time.time)  # fmt: skip


def wait_until_listed(rec: Reconciler, n: int, status: VMStatus) -> None:
    """Until `n` of the cluster's VMs are listed with `status` (a VM's own script powers it off: a moment)."""
    deadline = time.monotonic() + 60
    while sum(v.status is status for v in rec.cloud.list_owned("rp")) < n:
        assert time.monotonic() < deadline, [v.status for v in rec.cloud.list_owned("rp")]
        time.sleep(0.05)


def test_the_limit_doubles_on_confirmed_rounds_survives_a_restart_and_halves_on_failed_boots(
    tmp_path: Path,
) -> None:
    rec = engine(tmp_path)
    try:
        booted, limits = [], []
        for _ in range(5):
            report = rec.cycle()
            assert report.errors == []
            booted.append(report.plan.boots)
            limits.append(rec.ramp().limit)
        # a round is asked (4 VMs booting at once), then confirmed by the next cycle's listing (ACTIVE): the
        # limit doubles after that cycle, and the next one fills it (8 - 4); never on the create's answer alone
        assert booted == [4, 0, 4, 0, 8]
        assert limits == [None, 8, 8, 16, 16]
        assert [r.size for r in rec.ramp().rounds] == [8]  # the last round waits for its confirmation
        rec.store.close()
        rec = engine(tmp_path)  # a restart: the limit and the round in flight come from the store
        assert rec.ramp().limit == 16 and [r.size for r in rec.ramp().rounds] == [8]
        rec.cycle()
        assert rec.ramp().limit == 32 and rec.ramp().rounds == ()  # confirmed once, after the restart
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


def test_creates_the_cloud_accepted_then_put_in_error_never_make_the_limit_grow(tmp_path: Path) -> None:
    """As Nova's conductor does past its API's quota check: every create is accepted, then all VMs but one power
    themselves off (the first to make the directory runs; the others kill their process group): ERROR."""
    flag = tmp_path / "first"
    rec = engine(tmp_path, f"#!/bin/sh\nmkdir {flag} 2>/dev/null && exec sleep 300\nkill -KILL 0\n")
    try:
        first = rec.cycle()
        assert first.plan.boots == 4 and first.errors == []  # all four accepted
        assert rec.ramp().limit is None  # accepted is not confirmed: no growth
        wait_until_listed(rec, 3, VMStatus.ERROR)
        wait_until_listed(rec, 1, VMStatus.ACTIVE)
        second = rec.cycle()  # one confirmed ACTIVE, three seen in ERROR: failed boots, halved, never doubled
        assert rec.ramp().limit == 2 and rec.ramp().rounds == ()
        assert second.plan.boots == 0
        assert [d.reason for d in rec.store.recent_decisions(100) if d.kind == "ramp"] == [
            "parallel-boot limit halved to 2 after 3 failed boot(s)"
        ]
        rec.cycle()
        assert rec.ramp().limit == 2  # the surviving VM, still ACTIVE, is not counted again
    finally:
        for v in rec.cloud.list_owned("rp"):
            rec.cloud.delete(v)
        rec.store.close()


def test_the_store_keeps_the_limit_and_its_rounds_in_one_value_and_reads_a_bare_limit_of_an_older_store(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}", "rp")
    try:
        assert store.boot_ramp() == BootRamp()
        store.put_json(RAMP_KEY, 32)  # what an engine before rounds existed wrote
        assert store.boot_ramp() == BootRamp(32)
        ramp = BootRamp(16, (BootRound(8, frozenset({"a", "b"})), BootRound(9, frozenset({"c"}))))
        store.put_boot_ramp(ramp)
        assert store.boot_ramp() == ramp
    finally:
        store.close()
