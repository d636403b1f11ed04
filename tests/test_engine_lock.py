"""One engine per cluster on SQLite: a second `marea run` on the same state exits 3 naming the holder.

Real processes throughout: the engines are `python -m marea run`, the lock is the kernel's flock.
"""

from __future__ import annotations

import signal
from pathlib import Path

from tests.engine_lock_helpers import assert_refused, both_engines_run, idle_engine_config, start_engine, wait_started


def test_a_second_engine_on_the_same_state_exits_3_naming_the_holder(tmp_path: Path) -> None:
    cfg = idle_engine_config(tmp_path, "lk1")
    first = start_engine(cfg)
    try:
        wait_started(cfg)
        line = assert_refused(cfg, first.pid)
        assert "lk1" in line and "state.db.lock" in line
        assert first.poll() is None, "the refused engine disturbed the holder"
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0


def test_the_lock_dies_with_a_killed_engine_and_the_next_one_takes_over(tmp_path: Path) -> None:
    cfg = idle_engine_config(tmp_path, "lk2")
    first = start_engine(cfg)
    wait_started(cfg)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    (tmp_path / "engine.log").unlink()
    second = start_engine(cfg)
    try:
        wait_started(cfg)  # the killed engine's lock is gone with it: no stale lock to clean by hand
        assert second.poll() is None
        assert_refused(cfg, second.pid)  # and the file now names the new holder, not the dead one
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0


def test_engines_of_two_clusters_in_two_directories_both_run(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = idle_engine_config(tmp_path / "a", "lka"), idle_engine_config(tmp_path / "b", "lkb")
    both_engines_run(a, b)
