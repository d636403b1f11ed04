"""What `marea status` shows, read from the store only: it works while the engine runs and after it stopped."""

from __future__ import annotations

from typing import Any

from marea.engine.store import Store


def never_ran_report(cluster: str, now: float) -> dict[str, Any]:
    """The report of a cluster with no state database yet: its engine never ran. Built without opening the
    store, because opening it would create the database file, and `status` must not change anything."""
    return {
        "cluster": cluster,
        "at": now,
        "engine_ran": False,
        "last_cycle_at": None,
        "workers": [],
        "queued_jobs": 0,
        "demand": [],
        "unsatisfiable": [],
        "waiting": [],
        "errors": [],
        "boot_failures": {"consecutive": 0, "last_at": None, "last_reason": None, "total": 0},
        "decisions": [],
    }


def status_report(store: Store, now: float, decisions: int = 15) -> dict[str, Any]:
    live = store.live_instances()
    last = store.get_json("last_cycle", {}) or {}
    failures = store.boot_failures()
    return {
        "cluster": store.cluster,
        "at": now,
        # false until the engine has finished its first cycle on this cluster's store
        "engine_ran": last.get("at") is not None,
        "last_cycle_at": last.get("at"),
        "workers": [
            {
                "id": r.id,
                "flavour": r.flavour,
                "state": r.state.value,
                "age_s": round(now - r.created_at, 1),
                "in_state_s": round(now - r.state_since, 1),
                "idle_s": None if r.idle_since is None else round(now - r.idle_since, 1),
                "address": r.address,
                "failure": r.failure,
            }
            for r in live
        ],
        "queued_jobs": last.get("queued_jobs", 0),
        "demand": last.get("demand", []),
        "unsatisfiable": last.get("unsatisfiable", []),
        "waiting": last.get("waiting", []),
        "errors": last.get("errors", []),
        "boot_failures": {
            "consecutive": failures.consecutive,
            "last_at": failures.last_at,
            "last_reason": failures.last_reason,
            "total": int(store.get_json("failed_boots_total", 0)),
        },
        "decisions": [
            {"at": d.at, "kind": d.kind, "instance": d.instance_id, "count": d.count, "reason": d.reason}
            for d in store.recent_decisions(decisions)
        ],
    }
