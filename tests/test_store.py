"""The engine's store on a real SQLite file: lifecycle, decisions, and what survives a reopen."""

from __future__ import annotations

from pathlib import Path

from marea.engine.store import DecisionRecord, InstanceRecord, Store
from marea.model import BootFailures, InstanceState


def test_instances_decisions_and_failures_survive_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    s = Store(url, "c1")
    rec = InstanceRecord("c1-aa", "c1", "small", "", InstanceState.REQUESTED, 1.0, 1.0)
    s.add_instance(rec)
    rec = s.set_state(rec, InstanceState.BOOTING, 2.0, cloud_id="vm-1")
    rec = s.set_state(rec, InstanceState.IDLE, 3.0, idle_since=3.0, joined_at=3.0)
    s.record_decision(DecisionRecord(2.0, "boot", "1 x small for queued work", count=1))
    s.put_boot_failures(BootFailures(2, 5.0, "quota"))
    Store(url, "other").add_instance(InstanceRecord("o-1", "other", "small", "", InstanceState.BOOTING, 1, 1))
    s.close()

    s2 = Store(url, "c1")
    (got,) = s2.live_instances()
    assert (got.id, got.state, got.cloud_id, got.idle_since, got.state_since) == (
        "c1-aa", InstanceState.IDLE, "vm-1", 3.0, 3.0,
    )  # fmt: skip
    assert s2.recent_decisions()[0].reason == "1 x small for queued work"
    assert s2.boot_failures() == BootFailures(2, 5.0, "quota")
    s2.set_state(got, InstanceState.GONE, 9.0)
    assert s2.live_instances() == []
    assert len(s2.all_instances()) == 1


def test_repeated_waits_are_stored_once_per_window(tmp_path: Path) -> None:
    s = Store(f"sqlite:///{tmp_path / 's.db'}", "c1")
    assert s.record_wait(100.0, "backoff: next boot allowed in 30 s")
    assert not s.record_wait(105.0, "backoff: next boot allowed in 25 s")
    assert s.record_wait(105.0, "3 queued job(s) left waiting: limited by max workers (4)")
    assert s.record_wait(500.0, "backoff: next boot allowed in 30 s")
    assert [d.kind for d in s.recent_decisions()] == ["wait", "wait", "wait"]
