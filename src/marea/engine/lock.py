"""One engine per cluster: an exclusive lock on the cluster's state, held for the life of `marea run`.

Two engines driving one cluster (a second master, a copied config, a restarted container while the old one still
runs) would both boot for the same queue and both delete the same idle workers. The store is the one thing they
must share to act on the cluster at all, so the lock lives there:

- SQLite: `flock` on a sidecar file next to the database (`state.db.lock`). The kernel drops it when the process
  dies, however it dies (kill -9 included), so a crash never leaves a stale lock behind.
- PostgreSQL: `pg_try_advisory_lock` keyed on the cluster name, on a dedicated connection kept open. The server
  drops it when that session ends (process killed, connection lost). Losing the connection means losing the lock,
  so the engine checks it every cycle and stops if it is gone rather than act beside a possible successor.

The holder writes who it is (host, pid, since) where a second engine can read it, so the refusal names the
holder in one line. That record is written only while the lock is held, so a stale one from a killed engine is
simply overwritten by the next holder.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, create_engine, delete, insert, select, text
from sqlalchemy.engine import Connection, Engine


class AlreadyRunning(Exception):
    """Another engine holds the cluster; the message names it."""


class LockLost(Exception):
    """The lock was held and is no more (the database connection dropped): stop acting."""


def holder_info() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}


def describe(cluster: str, holder: dict[str, Any] | None, where: str) -> str:
    """The one line a refused engine prints."""
    if not holder:
        return f'another marea engine already runs cluster "{cluster}" ({where}; holder unknown)'
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(holder.get("since", 0))))
    return (
        f'another marea engine already runs cluster "{cluster}": host {holder.get("host")}, '
        f"pid {holder.get('pid')}, since {since} ({where})"
    )


class EngineLock:
    """The interface: acquire once at start, check every cycle, release at exit."""

    def acquire(self) -> None:
        raise NotImplementedError

    def check(self) -> None:
        """Raise LockLost when the lock is no longer held."""

    def release(self) -> None:
        raise NotImplementedError


class FileLock(EngineLock):
    """`flock` on `<state>.lock`; the file's content names the holder."""

    def __init__(self, path: Path, cluster: str) -> None:
        self.path = path
        self.cluster = cluster
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        f = open(self.path, "a+")  # noqa: SIM115 - held for the life of the process
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                holder = json.loads(f.read() or "null")
            except json.JSONDecodeError:
                holder = None
            f.close()
            raise AlreadyRunning(describe(self.cluster, holder, f"lock file {self.path}")) from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps(holder_info()))
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock; the stale content is harmless
            self._file = None


_meta = MetaData()
#: who holds each cluster's advisory lock; written only under the lock
engine_holders = Table(
    "engine_holders",
    _meta,
    Column("cluster", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("since", Float, nullable=False),
)


def advisory_key(cluster: str) -> int:
    """A stable signed 64-bit key for the cluster name (the advisory lock space is shared with other apps: the
    prefix keeps marea's keys apart from theirs in practice)."""
    digest = hashlib.sha256(f"marea-engine:{cluster}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLock(EngineLock):
    """`pg_try_advisory_lock(key(cluster))` on a connection of its own, open for the life of the engine."""

    def __init__(self, url: str, cluster: str) -> None:
        self.url = url
        self.cluster = cluster
        self.key = advisory_key(cluster)
        self._engine: Engine | None = None
        self._conn: Connection | None = None

    def acquire(self) -> None:
        engine = create_engine(self.url, future=True, pool_size=1, max_overflow=0)
        _meta.create_all(engine)
        conn = engine.connect()
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
        conn.commit()
        if not got:
            row = conn.execute(select(engine_holders).where(engine_holders.c.cluster == self.cluster)).first()
            conn.close()
            engine.dispose()
            holder = None if row is None else {"host": row.host, "pid": row.pid, "since": row.since}
            raise AlreadyRunning(describe(self.cluster, holder, "PostgreSQL advisory lock"))
        me = holder_info()
        conn.execute(delete(engine_holders).where(engine_holders.c.cluster == self.cluster))
        conn.execute(insert(engine_holders).values(cluster=self.cluster, **me))
        conn.commit()
        self._engine, self._conn = engine, conn

    def check(self) -> None:
        if self._conn is None:
            return
        try:
            held = self._conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                    "AND granted AND ((classid::bigint << 32) | objid::bigint) = :k"
                ),
                {"k": self.key},
            ).scalar()
            self._conn.commit()
        except Exception as exc:  # the session is gone, and with it the lock
            raise LockLost(f"lost the PostgreSQL connection holding the engine lock: {exc}") from None
        if not held:
            raise LockLost("the PostgreSQL advisory lock of this engine is no longer held")

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self._conn.commit()
            except Exception:  # closing the session drops the lock anyway
                pass
            self._conn.close()
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def lock_for(state_url: str, sqlite_path: Path | None, cluster: str) -> EngineLock:
    """The lock that fits the store: an advisory lock on PostgreSQL, a file lock next to a SQLite file."""
    if state_url.startswith(("postgresql", "postgres")):
        return AdvisoryLock(state_url, cluster)
    if sqlite_path is not None:
        return FileLock(Path(str(sqlite_path) + ".lock"), cluster)
    raise ValueError(f"no engine lock for a state database at {state_url.split('://', 1)[0]}://")
