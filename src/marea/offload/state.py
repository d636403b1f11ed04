"""The offload server's memory: pod UID -> backend job id and what was created for it (SQLite file).

Written before the backend acts (state `creating`) and after (`created` with the job id), so a server killed
at any point restarts knowing every pod it may have started: it adopts the running ones and cleans up the ones
whose creation never finished. Its own file, separate from the engine's store: the two processes run
independently and neither should lock the other.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS offload_pods (
    uid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    namespace TEXT NOT NULL,
    backend TEXT NOT NULL,
    phase TEXT NOT NULL,
    jid TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    containers TEXT NOT NULL,
    objects TEXT NOT NULL DEFAULT '{}'
);
"""


@dataclass
class PodRecord:
    uid: str
    name: str
    namespace: str
    backend: str
    phase: str  # creating | created
    jid: str = ""
    created_at: float = 0.0
    #: {"init": [[name, image], ...], "containers": [[name, image], ...]}
    containers: dict[str, list[list[str]]] = field(default_factory=dict)
    #: backend-specific: pod directory, runner pid, remote object names ...
    objects: dict[str, Any] = field(default_factory=dict)


class PodStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        self.lock = threading.Lock()

    def put(self, rec: PodRecord) -> None:
        if not rec.created_at:
            rec.created_at = time.time()
        with self.lock:
            self.conn.execute(
                "INSERT OR REPLACE INTO offload_pods VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    rec.uid,
                    rec.name,
                    rec.namespace,
                    rec.backend,
                    rec.phase,
                    rec.jid,
                    rec.created_at,
                    json.dumps(rec.containers),
                    json.dumps(rec.objects),
                ),
            )

    def delete(self, uid: str) -> None:
        with self.lock:
            self.conn.execute("DELETE FROM offload_pods WHERE uid = ?", (uid,))

    def all(self) -> list[PodRecord]:
        with self.lock:
            rows = self.conn.execute("SELECT * FROM offload_pods ORDER BY created_at").fetchall()
        return [
            PodRecord(
                uid=r[0],
                name=r[1],
                namespace=r[2],
                backend=r[3],
                phase=r[4],
                jid=r[5],
                created_at=r[6],
                containers=json.loads(r[7]),
                objects=json.loads(r[8]),
            )
            for r in rows
        ]

    def close(self) -> None:
        self.conn.close()
