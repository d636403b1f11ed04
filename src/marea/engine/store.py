"""The engine's memory: every instance with its lifecycle state, every decision with its reason.

SQLAlchemy Core on SQLite by default (a PostgreSQL URL works too). The engine writes its intent here before
each external call and the outcome after it, so a process killed at any point restarts from what is written.
elastiq kept only a text file of instance ids and lost its timers on restart; here idle timers, boot failures
and drains in progress all survive.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine

from marea.lifecycle import check_move
from marea.model import BootFailures, BootRamp, BootRound, InstanceState

#: the key of the adaptive parallel-boot limit and its rounds in flight (marea.policy.ramp)
RAMP_KEY = "boot_ramp"

metadata = MetaData()

instances = Table(
    "instances",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("cluster", String(64), nullable=False, index=True),
    Column("flavour", String(128), nullable=False),
    Column("grp", String(128), nullable=False, default=""),
    Column("state", String(16), nullable=False, index=True),
    Column("state_since", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("cloud_id", String(128)),
    Column("address", String(128)),
    Column("idle_since", Float),
    Column("joined_at", Float),
    Column("drain_sent", Boolean, nullable=False, default=False),
    Column("failure", Text),
)

decisions = Table(
    "decisions",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("cluster", String(64), nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("instance_id", String(64)),
    Column("flavour", String(128)),
    Column("count", Integer, nullable=False, default=0),
    Column("reason", Text, nullable=False),
)

#: every accepted change of an instance's state, in order (the lifecycle table says which are accepted)
transitions = Table(
    "transitions",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("cluster", String(64), nullable=False, index=True),
    Column("instance_id", String(64), nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("old", String(16), nullable=False),
    Column("new", String(16), nullable=False),
)

kv = Table(
    "kv",
    metadata,
    Column("cluster", String(64), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    id: str
    cluster: str
    flavour: str
    group: str
    state: InstanceState
    state_since: float
    created_at: float
    cloud_id: str | None = None
    address: str | None = None
    idle_since: float | None = None
    joined_at: float | None = None
    drain_sent: bool = False
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    at: float
    kind: str
    reason: str
    instance_id: str | None = None
    flavour: str | None = None
    count: int = 0


def _row_to_instance(row: Any) -> InstanceRecord:
    return InstanceRecord(
        id=row.id,
        cluster=row.cluster,
        flavour=row.flavour,
        group=row.grp,
        state=InstanceState(row.state),
        state_since=row.state_since,
        created_at=row.created_at,
        cloud_id=row.cloud_id,
        address=row.address,
        idle_since=row.idle_since,
        joined_at=row.joined_at,
        drain_sent=bool(row.drain_sent),
        failure=row.failure,
    )


def _digits_blanked(text: str) -> str:
    return re.sub(r"\d+(\.\d+)?", "#", text)


class Store:
    """Instances, decisions and small engine state of one cluster, in one database."""

    def __init__(self, url: str, cluster: str) -> None:
        self.url = url
        self.cluster = cluster
        self.engine: Engine = create_engine(url, future=True)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # -- instances -------------------------------------------------------------------------------------------
    def add_instance(self, rec: InstanceRecord) -> None:
        with self._tx() as c:
            c.execute(
                insert(instances).values(
                    id=rec.id,
                    cluster=rec.cluster,
                    flavour=rec.flavour,
                    grp=rec.group,
                    state=rec.state.value,
                    state_since=rec.state_since,
                    created_at=rec.created_at,
                    cloud_id=rec.cloud_id,
                    address=rec.address,
                    idle_since=rec.idle_since,
                    joined_at=rec.joined_at,
                    drain_sent=rec.drain_sent,
                    failure=rec.failure,
                )
            )

    def get(self, instance_id: str) -> InstanceRecord | None:
        with self._tx() as c:
            row = c.execute(select(instances).where(instances.c.id == instance_id)).first()
        return None if row is None else _row_to_instance(row)

    def live_instances(self) -> list[InstanceRecord]:
        """Every instance of this cluster that is not gone, oldest first."""
        with self._tx() as c:
            rows = c.execute(
                select(instances)
                .where(instances.c.cluster == self.cluster, instances.c.state != InstanceState.GONE.value)
                .order_by(instances.c.created_at, instances.c.id)
            ).all()
        return [_row_to_instance(r) for r in rows]

    def all_instances(self) -> list[InstanceRecord]:
        with self._tx() as c:
            rows = c.execute(
                select(instances).where(instances.c.cluster == self.cluster).order_by(instances.c.created_at)
            ).all()
        return [_row_to_instance(r) for r in rows]

    def update_instance(self, rec: InstanceRecord, **changes: Any) -> InstanceRecord:
        """Persist changes to one instance; a change of state also moves `state_since` (unless given)."""
        new = replace(rec, **changes)
        values: dict[str, Any] = {}
        for name in ("flavour", "cloud_id", "address", "idle_since", "joined_at", "drain_sent", "failure"):
            if name in changes:
                values[name] = getattr(new, name)
        if "group" in changes:
            values["grp"] = new.group
        moved = "state" in changes and new.state is not rec.state
        if "state" in changes:
            check_move(rec.id, rec.state, new.state)  # before anything is written: a refused move changes nothing
            values["state"] = new.state.value
            values["state_since"] = new.state_since
        if values:
            with self._tx() as c:
                c.execute(update(instances).where(instances.c.id == rec.id).values(**values))
                if moved:
                    c.execute(
                        insert(transitions).values(
                            cluster=self.cluster, instance_id=rec.id, at=new.state_since,
                            old=rec.state.value, new=new.state.value,
                        )
                    )  # fmt: skip
        return new

    def state_history(self, instance_id: str) -> list[tuple[float, InstanceState, InstanceState]]:
        """(when, from, to) of every change of the instance's state, oldest first."""
        with self._tx() as c:
            rows = c.execute(
                select(transitions.c.at, transitions.c.old, transitions.c.new)
                .where(transitions.c.cluster == self.cluster, transitions.c.instance_id == instance_id)
                .order_by(transitions.c.seq)
            ).all()
        return [(r.at, InstanceState(r.old), InstanceState(r.new)) for r in rows]

    def set_state(self, rec: InstanceRecord, state: InstanceState, now: float, **changes: Any) -> InstanceRecord:
        if rec.state is state and not changes:
            return rec
        since = now if rec.state is not state else rec.state_since
        return self.update_instance(rec, state=state, state_since=since, **changes)

    # -- decisions -------------------------------------------------------------------------------------------
    def record_decision(self, d: DecisionRecord) -> None:
        with self._tx() as c:
            c.execute(
                insert(decisions).values(
                    cluster=self.cluster,
                    at=d.at,
                    kind=d.kind,
                    instance_id=d.instance_id,
                    flavour=d.flavour,
                    count=d.count,
                    reason=d.reason,
                )
            )

    def record_wait(self, at: float, reason: str, repeat_after_s: float = 300.0) -> bool:
        """Store a 'did not act' decision unless the same one (numbers aside) was stored recently."""
        key = _digits_blanked(reason)
        with self._tx() as c:
            rows = c.execute(
                select(decisions.c.reason)
                .where(decisions.c.cluster == self.cluster, decisions.c.kind == "wait")
                .where(decisions.c.at > at - repeat_after_s)
            ).all()
        if any(_digits_blanked(r.reason) == key for r in rows):
            return False
        self.record_decision(DecisionRecord(at, "wait", reason))
        return True

    def recent_decisions(self, limit: int = 20) -> list[DecisionRecord]:
        with self._tx() as c:
            rows = c.execute(
                select(decisions)
                .where(decisions.c.cluster == self.cluster)
                .order_by(decisions.c.seq.desc())
                .limit(limit)
            ).all()
        return [
            DecisionRecord(r.at, r.kind, r.reason, r.instance_id, r.flavour, int(r._mapping["count"]))
            for r in reversed(rows)
        ]

    # -- small engine state ----------------------------------------------------------------------------------
    def get_json(self, key: str, default: Any = None) -> Any:
        with self._tx() as c:
            row = c.execute(select(kv.c.value).where(kv.c.cluster == self.cluster, kv.c.key == key)).first()
        return default if row is None else json.loads(row.value)

    def put_json(self, key: str, value: Any) -> None:
        text = json.dumps(value, sort_keys=True)
        with self._tx() as c:
            n = c.execute(update(kv).where(kv.c.cluster == self.cluster, kv.c.key == key).values(value=text)).rowcount
            if n == 0:
                c.execute(insert(kv).values(cluster=self.cluster, key=key, value=text))

    def boot_failures(self) -> BootFailures:
        d = self.get_json("boot_failures", {})
        return BootFailures(int(d.get("consecutive", 0)), d.get("last_at"), str(d.get("last_reason", "")))

    def put_boot_failures(self, f: BootFailures) -> None:
        self.put_json(
            "boot_failures",
            {"consecutive": f.consecutive, "last_at": f.last_at, "last_reason": f.last_reason},
        )

    def boot_ramp(self) -> BootRamp:
        """The adaptive parallel-boot limit and its rounds in flight (marea.policy.ramp); a store written before
        rounds existed holds the bare limit (or nothing), read as a ramp with no round in flight."""
        d = self.get_json(RAMP_KEY, None)
        if d is None or isinstance(d, int):
            return BootRamp(d)
        rounds = tuple(BootRound(int(r["size"]), frozenset(str(i) for i in r["waiting"])) for r in d.get("rounds", []))
        limit = d.get("limit")
        return BootRamp(None if limit is None else int(limit), rounds)

    def put_boot_ramp(self, ramp: BootRamp) -> None:
        """One write for the limit and its rounds: a crash keeps both or neither, so a confirmation is never
        counted twice."""
        rounds = [{"size": r.size, "waiting": sorted(r.waiting)} for r in ramp.rounds]
        self.put_json(RAMP_KEY, {"limit": ramp.limit, "rounds": rounds})


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()
