"""The lifecycle table (`marea.lifecycle.observe`): every row, the timers, and a table that breaks the lifecycle
refused at load. The engine's reconciler and the simulator both move workers through this function."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from marea.batch.base import Worker
from marea.clouds.base import TAG_INSTANCE, CloudVM, VMStatus
from marea.clouds.local import LocalCloud
from marea.engine.reconciler import NO_ROOM, Reconciler
from marea.engine.store import InstanceRecord, Store
from marea.lifecycle import (
    LEGAL_MOVES,
    OBSERVE,
    Batch,
    Cloud,
    IllegalTransition,
    Row,
    Rule,
    _rows,
    build_table,
    observe,
)
from marea.model import Flavour, InstanceState, PolicySettings, Resources
from tests.fixed_queue import FixedQueue

S = InstanceState
NOW = 100_000.0
FLAVOUR = Flavour("f1", 1, 1000)
ALL = list(itertools.product(InstanceState, Cloud, Batch))


def test_the_table_has_one_row_per_combination() -> None:
    assert set(OBSERVE) == set(ALL) and len(OBSERVE) == len(S) * len(Cloud) * len(Batch)


@pytest.mark.parametrize(("state", "cloud", "batch"), ALL, ids=lambda v: v.value)
def test_every_row_moves_legally(state: InstanceState, cloud: Cloud, batch: Batch) -> None:
    """Each row, with and without timers: the next state is one LEGAL_MOVES allows (or the same)."""
    for idle, absent in ((None, None), (NOW - 50, NOW - 500)):
        t = observe(state, cloud, batch, now=NOW, idle_since=idle, absent_since=absent)
        assert t.state is state or t.state in LEGAL_MOVES[state], (state, cloud, batch, t)
        assert t.absent_since is None or t.absent_since <= NOW


# (state, cloud, batch) -> expected next state; written out by hand from the engine's rules
EXPECTED = {
    (S.REQUESTED, Cloud.MISSING, Batch.ABSENT): S.GONE,
    (S.REQUESTED, Cloud.UP, Batch.ABSENT): S.BOOTING,
    (S.BOOTING, Cloud.MISSING, Batch.IDLE): S.GONE,
    (S.BOOTING, Cloud.ERROR, Batch.ABSENT): S.FAILED,
    (S.BOOTING, Cloud.ERROR, Batch.BUSY): S.BUSY,
    (S.BOOTING, Cloud.ERROR, Batch.LOST_BUSY): S.BOOTING,
    (S.BOOTING, Cloud.UP, Batch.ABSENT): S.BOOTING,
    (S.BOOTING, Cloud.UP, Batch.LOST): S.BOOTING,
    (S.BOOTING, Cloud.UP, Batch.IDLE): S.IDLE,
    (S.BOOTING, Cloud.UP, Batch.BUSY): S.BUSY,
    (S.IDLE, Cloud.UP, Batch.BUSY): S.BUSY,
    (S.IDLE, Cloud.UP, Batch.IDLE): S.IDLE,
    (S.IDLE, Cloud.ERROR, Batch.IDLE): S.FAILED,
    (S.IDLE, Cloud.ERROR, Batch.BUSY): S.BUSY,
    (S.IDLE, Cloud.MISSING, Batch.BUSY): S.GONE,
    (S.BUSY, Cloud.UP, Batch.IDLE): S.IDLE,
    (S.BUSY, Cloud.UP, Batch.BUSY): S.BUSY,
    (S.BUSY, Cloud.ERROR, Batch.LOST): S.FAILED,
    (S.DRAINING, Cloud.UP, Batch.BUSY): S.DRAINING,
    (S.DRAINING, Cloud.UP, Batch.ABSENT): S.DRAINING,
    (S.DRAINING, Cloud.ERROR, Batch.IDLE): S.FAILED,
    (S.DRAINING, Cloud.ERROR, Batch.BUSY): S.DRAINING,
    (S.DRAINING, Cloud.MISSING, Batch.BUSY): S.GONE,
    (S.FAILED, Cloud.UP, Batch.IDLE): S.FAILED,
    (S.FAILED, Cloud.ERROR, Batch.BUSY): S.FAILED,
    (S.FAILED, Cloud.MISSING, Batch.ABSENT): S.GONE,
    (S.DELETING, Cloud.MISSING, Batch.ABSENT): S.DELETING,
    (S.DELETING, Cloud.UP, Batch.BUSY): S.DELETING,
    (S.GONE, Cloud.UP, Batch.IDLE): S.GONE,
}


@pytest.mark.parametrize(("key", "want"), list(EXPECTED.items()), ids=lambda v: str(v))
def test_rows_written_out(key: tuple[InstanceState, Cloud, Batch], want: InstanceState) -> None:
    assert observe(*key, now=NOW).state is want


def test_join_sets_idle_since_and_counts_no_failure() -> None:
    t = observe(S.BOOTING, Cloud.UP, Batch.IDLE, now=NOW)
    assert (t.state, t.joined, t.idle_since, t.failed_boot) == (S.IDLE, True, NOW, None)
    t = observe(S.BOOTING, Cloud.UP, Batch.BUSY, now=NOW)
    assert (t.state, t.joined, t.idle_since) == (S.BUSY, True, None)


def test_idle_since_kept_while_idle_set_when_idle_cleared_when_busy() -> None:
    assert observe(S.IDLE, Cloud.UP, Batch.IDLE, now=NOW, idle_since=10.0).idle_since == 10.0
    assert observe(S.IDLE, Cloud.UP, Batch.IDLE, now=NOW, idle_since=None).idle_since == NOW
    assert observe(S.BUSY, Cloud.UP, Batch.IDLE, now=NOW).idle_since == NOW
    assert observe(S.IDLE, Cloud.UP, Batch.BUSY, now=NOW, idle_since=10.0).idle_since is None
    assert observe(S.DRAINING, Cloud.UP, Batch.IDLE, now=NOW, idle_since=None).idle_since == NOW


def test_failed_boots_are_counted_only_before_the_first_join() -> None:
    assert observe(S.BOOTING, Cloud.MISSING, Batch.ABSENT, now=NOW).failed_boot == "vanished"
    assert observe(S.IDLE, Cloud.MISSING, Batch.ABSENT, now=NOW).failed_boot is None
    t = observe(S.BOOTING, Cloud.ERROR, Batch.ABSENT, now=NOW, fault="No valid host")
    assert (t.failed_boot, t.failure) == ("cloud_error", "cloud: No valid host")
    assert observe(S.IDLE, Cloud.ERROR, Batch.IDLE, now=NOW, ever_joined=True).failed_boot is None


def test_absent_grace_starts_holds_and_fails() -> None:
    t = observe(S.IDLE, Cloud.UP, Batch.ABSENT, now=NOW, absent_grace_s=120)
    assert (t.state, t.absent_since) == (S.IDLE, NOW)  # the timer starts
    t = observe(S.BUSY, Cloud.UP, Batch.LOST, now=NOW + 120, absent_since=NOW, absent_grace_s=120)
    assert (t.state, t.absent_since) == (S.BUSY, NOW)  # not past the grace yet (strictly greater)
    t = observe(S.BUSY, Cloud.UP, Batch.LOST, now=NOW + 121, absent_since=NOW, absent_grace_s=120)
    assert (t.state, t.absent_since, t.failure) == (S.FAILED, None, "the batch system lost the worker")
    t = observe(S.IDLE, Cloud.UP, Batch.ABSENT, now=NOW + 121, absent_since=NOW, absent_grace_s=120)
    assert t.failure == "worker left the batch system"
    # back in the batch system: the timer is dropped
    assert observe(S.IDLE, Cloud.UP, Batch.IDLE, now=NOW, absent_since=NOW - 5).absent_since is None


def test_jobs_despite_a_cloud_error_keep_the_worker_with_a_warning() -> None:
    t = observe(S.BUSY, Cloud.ERROR, Batch.BUSY, now=NOW)
    assert (t.state, t.jobs_despite_error) == (S.BUSY, True)
    assert observe(S.BUSY, Cloud.UP, Batch.BUSY, now=NOW).jobs_despite_error is False


def test_adoption_of_an_interrupted_create() -> None:
    t = observe(S.REQUESTED, Cloud.UP, Batch.ABSENT, now=NOW)
    assert (t.state, t.rule) == (S.BOOTING, Rule.ADOPT)
    assert observe(S.REQUESTED, Cloud.MISSING, Batch.ABSENT, now=NOW).failure == "create interrupted; no VM exists"


def test_a_table_with_an_illegal_move_is_refused() -> None:
    rows = _rows()
    # a busy worker straight to deleting would kill its jobs: LEGAL_MOVES forbids it
    bad = [r for r in rows if r[0] != (S.IDLE, S.BUSY) or r[1] != (Cloud.UP,) or r[2] != (Batch.BUSY,)]
    bad.append(((S.IDLE, S.BUSY), (Cloud.UP,), (Batch.BUSY,), Row(S.DELETING)))
    with pytest.raises(IllegalTransition, match="busy -> deleting is not a legal move"):
        build_table(bad)


def test_a_table_with_a_gap_or_a_duplicate_is_refused() -> None:
    rows = _rows()
    with pytest.raises(ValueError, match="has no row"):
        build_table(rows[:-1])
    with pytest.raises(ValueError, match="written twice"):
        build_table([*rows, rows[0]])


@pytest.mark.parametrize("grace_over", [False, True], ids=["within-grace", "grace-over"])
def test_the_engine_moves_records_as_the_table_says(tmp_path: Path, grace_over: bool) -> None:
    """The reconciler's `_observe_one` on a real SQLite store, for every (state, cloud, batch) combination, ends in
    the state `observe` gives (after the adoption step of a record whose create was in flight): the engine applies
    the table, it does not re-implement it. Cloud listings and batch workers are the drivers' own value types."""
    store = Store(f"sqlite:///{tmp_path / 'state.db'}", "lt")
    rec_engine = Reconciler(
        cluster="lt", store=store, cloud=LocalCloud(tmp_path / "vms"), batch=FixedQueue(0),
        settings=PolicySettings(flavours=(FLAVOUR,), max_workers=2), user_data_template="#!/bin/sh\n",
        clock=lambda: NOW, absent_grace_s=120.0,
    )  # fmt: skip
    cloud_vm = {
        Cloud.MISSING: None,
        Cloud.ERROR: VMStatus.ERROR,
        Cloud.UP: VMStatus.ACTIVE,
    }
    free = Resources(1.0, 1000.0, 0)
    workers = {
        Batch.ABSENT: None,
        Batch.LOST: Worker("x", free, free, busy=False, lost=True),
        Batch.LOST_BUSY: Worker("x", free, NO_ROOM, busy=True, lost=True),
        Batch.IDLE: Worker("x", free, free, busy=False),
        Batch.BUSY: Worker("x", free, NO_ROOM, busy=True),
    }
    absent_since = NOW - 500 if grace_over else None
    try:
        for n, (state, cloud, batch) in enumerate(ALL):
            iid = f"lt-{n}"
            joined_at = NOW - 900 if state in (S.IDLE, S.BUSY, S.DRAINING) else None
            rec = InstanceRecord(iid, "lt", FLAVOUR.name, "", state, NOW - 1000, NOW - 1000, cloud_id=f"c{n}",
                                 joined_at=joined_at, idle_since=NOW - 50 if state is S.IDLE else None)  # fmt: skip
            store.add_instance(rec)
            if absent_since is not None:
                rec_engine._absent_since[iid] = absent_since
            status = cloud_vm[cloud]
            vm = None if status is None else CloudVM(f"c{n}", iid, status, {TAG_INSTANCE: iid}, fault="boom")
            kw = {"now": NOW, "idle_since": rec.idle_since, "absent_since": absent_since,
                  "ever_joined": joined_at is not None, "absent_grace_s": 120.0}  # fmt: skip
            want = observe(state, cloud, batch, **kw)  # type: ignore[arg-type]
            if want.rule is Rule.ADOPT:
                want = observe(S.BOOTING, cloud, batch, **kw)  # type: ignore[arg-type]
            got = rec_engine._observe_one(rec, vm, workers[batch], NOW)
            assert got.state is want.state, (state, cloud, batch, got.state, want.state)
            assert store.get(iid).state is want.state  # type: ignore[union-attr]
            if want.state not in (S.GONE, S.DELETING, S.FAILED):
                assert got.idle_since == want.idle_since, (state, cloud, batch)
    finally:
        store.close()
