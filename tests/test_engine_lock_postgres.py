"""One engine per cluster on PostgreSQL: the advisory lock, between real `marea run` processes on a real server.

The server is the throwaway cluster of tests/test_store_postgres.py (Debian's postgresql on a unix socket).
"""

from __future__ import annotations

import signal
from pathlib import Path

from marea.engine.lock import AdvisoryLock, LockLost
from tests.engine_lock_helpers import assert_refused, both_engines_run, idle_engine_config, start_engine, wait_started
from tests.test_store_postgres import pg_url

__all__ = ["pg_url"]


def test_a_second_engine_on_the_same_cluster_exits_3_and_a_killed_holder_frees_it(
    pg_url: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    # Two directories, two configs, one database: the lock is the cluster's, not a file's.
    one = idle_engine_config(tmp_path / "one", "pgl", state=pg_url)
    two = idle_engine_config(tmp_path / "two", "pgl", state=pg_url)
    first = start_engine(one)
    wait_started(one)
    line = assert_refused(two, first.pid)
    assert "PostgreSQL advisory lock" in line and '"pgl"' in line
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    second = start_engine(two)
    try:
        wait_started(two)  # the server dropped the dead engine's lock with its session
        assert_refused(one, second.pid)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0


def test_engines_of_two_clusters_share_one_database(pg_url: str, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = idle_engine_config(tmp_path / "a", "pga", state=pg_url)
    b = idle_engine_config(tmp_path / "b", "pgb", state=pg_url)
    both_engines_run(a, b)


def test_a_lock_whose_session_was_killed_is_reported_lost(pg_url: str) -> None:
    """The server ends the lock's session (an admin's pg_terminate_backend, a restart): the next check says
    so, and `marea run` stops instead of acting beside a possible successor."""
    from sqlalchemy import create_engine, text

    from marea.config import MareaConfig

    url = MareaConfig.model_validate({"cluster": {"name": "x", "state": pg_url}}).state_url()
    lock = AdvisoryLock(url, "pgk")
    lock.acquire()
    lock.check()
    admin = create_engine(url)
    with admin.begin() as c:
        c.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                "AND ((classid::bigint << 32) | objid::bigint) = :k"
            ),
            {"k": lock.key},
        )
    admin.dispose()
    try:
        lock.check()
        raise AssertionError("a killed session still counted as holding the lock")
    except LockLost:
        pass
    finally:
        lock.release()
