"""The cloud-fault campaign: the engine against the real OpenStack testbed behind a fault-injecting proxy.

Shared by tests/openstack/test_chaos_cloud.py (the short form, in CI) and benchmarks/chaos_cloud.py (the long
form). Each round raises the demand to D workers and waits until exactly D owned servers exist and have all
"joined", then drops it to 0 and waits until none is left, while the proxy answers 30 % of the calls with
5xx, delays some by 2 s, drops connections before and after forwarding, and refuses creates with Nova's quota
message. The engine runs in this process (`Reconciler.cycle()` in a loop, as `marea run` does) with the real
OpenStack driver; only its traffic goes through the proxy.

The batch side is a stand-in (`ServersAsWorkers`), as in tests/openstack/test_engine.py: the testbed's
`debian-12` servers are FakeDriver servers that run no user-data, so no worker can join a real batch system.
It reports every ACTIVE owned server (read straight from Nova, not through the proxy) as a joined worker, busy
while the demand phase lasts, drained once the engine drained it. What is measured is the cloud side: creates,
deletes, retries, ownership, leaks.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from marea.batch.base import BatchSnapshot, BatchSystem, Worker
from marea.clouds.base import TAG_CLUSTER, TAG_INSTANCE
from marea.clouds.factory import make_cloud
from marea.config import parse_config
from marea.engine.reconciler import Reconciler
from marea.engine.store import Store
from marea.model import DemandGroup, Flavour, InstanceState, Resources
from tests.fault_proxy import FaultProxy, Faults

FLAVOUR = Flavour("m1.small", 1, 2048)


def owned_servers(conn: Any, cluster: str) -> list[Any]:
    return [
        s
        for s in conn.compute.servers()
        if (s.metadata or {}).get(TAG_CLUSTER) == cluster and str(s.status).upper() not in ("DELETED", "SOFT_DELETED")
    ]


class ServersAsWorkers(BatchSystem):
    """Demand of `demand` one-flavour jobs; every ACTIVE owned server is a joined worker running one of them."""

    name = "servers-as-workers"

    def __init__(self, conn: Any, cluster: str) -> None:
        self.conn, self.cluster = conn, cluster
        self.demand = 0
        self.drained: set[str] = set()

    def snapshot(self, flavours: tuple[Flavour, ...]) -> BatchSnapshot:
        active = sorted(
            (s.metadata[TAG_INSTANCE] for s in owned_servers(self.conn, self.cluster) if s.status == "ACTIVE"),
        )
        workers: dict[str, Worker] = {}
        running = 0
        for name in active:
            busy = name not in self.drained and running < self.demand
            running += busy
            full = FLAVOUR.resources
            workers[name] = Worker(name, full, Resources() if busy else full, busy, name in self.drained,
                                   name in self.drained and not busy)  # fmt: skip
        pending = max(0, self.demand - running)
        demand = (DemandGroup(FLAVOUR.resources, pending),) if pending else ()
        return BatchSnapshot(demand=demand, workers=workers, queued_jobs=pending)

    def drain(self, worker: str, reason: str) -> None:
        self.drained.add(worker)

    def resume(self, worker: str) -> None:
        self.drained.discard(worker)

    def remove(self, worker: str) -> bool:
        self.drained.discard(worker)
        return True


@dataclass
class CampaignResult:
    rounds: int = 0
    demand: int = 0
    converged_up: int = 0
    converged_down: int = 0
    seconds_up: list[float] = field(default_factory=list)
    seconds_down: list[float] = field(default_factory=list)
    cycles: int = 0
    leaked_servers: int = 0
    servers_over_max: int = 0
    peak_servers: int = 0
    retries: int = 0
    retry_decisions: int = 0
    failed_creates: int = 0
    outcome_unknown_creates: int = 0
    adopted: int = 0
    cycle_errors: int = 0
    proxy: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.converged_up == self.converged_down == self.rounds
            and self.leaked_servers == 0
            and self.servers_over_max == 0
        )


def upstreams(conn: Any) -> list[str]:
    """Every base URL the client may call: Keystone's auth URL and the catalog's public endpoints."""
    access = conn.session.auth.get_access(conn.session)
    urls = {conn.session.auth.auth_url}
    for service in access.service_catalog.catalog:
        for ep in service.get("endpoints", []):
            if ep.get("interface") == "public":
                urls.add(ep["url"])
    out = set()
    for u in urls:
        scheme, rest = u.split("://", 1)
        out.add(f"{scheme}://{rest.split('/', 1)[0]}")
    return sorted(out)


def demo_credentials(clouds_yaml: Path) -> dict[str, Any]:
    doc = yaml.safe_load(clouds_yaml.read_text())
    auth: dict[str, Any] = doc["clouds"]["demo"]["auth"]
    return auth


def run_campaign(
    conn: Any,
    clouds_yaml: Path,
    workdir: Path,
    *,
    rounds: int = 2,
    demand: int = 3,
    faults: Faults | None = None,
    seed: int = 1,
    phase_timeout_s: float = 240.0,
    interval_s: float = 1.0,
    log: Any = None,
) -> CampaignResult:
    """`rounds` of up to `demand` and back to 0 through the fault proxy; `conn` is a direct (unproxied) client."""
    faults = faults or Faults()
    cluster = f"cc{uuid.uuid4().hex[:6]}"
    auth = demo_credentials(clouds_yaml)
    proxy = FaultProxy(upstreams(conn), faults, seed=seed).start()
    result = CampaignResult(rounds=rounds, demand=demand)
    t0 = time.monotonic()
    cfg = parse_config(
        {
            "cluster": {"name": cluster, "state": str(workdir / "state.db")},
            "policy": {"min_workers": 0, "max_workers": demand, "max_parallel_boots": demand,
                       "idle_threshold_s": 1, "join_timeout_s": 600, "backoff_base_s": 1, "backoff_max_s": 8},
            "flavours": [{"name": FLAVOUR.name, "cores": FLAVOUR.cores, "memory_mb": FLAVOUR.memory_mb}],
            "cloud": {"driver": "openstack", "openstack": {
                "auth_url": proxy.url_for(auth["auth_url"]), "username": auth["username"],
                "password": auth["password"], "project_name": auth["project_name"],
                "image": "debian-12", "network": "private"}},
            "worker": {"user_data": "#!/bin/sh\ntrue\n"},
            "batch": {"system": "slurm"},
        }
    )  # fmt: skip
    batch = ServersAsWorkers(conn, cluster)
    store = Store(cfg.state_url(), cluster)
    rec = Reconciler(cluster=cluster, store=store, cloud=make_cloud(cfg), batch=batch,
                     settings=cfg.policy_settings(), user_data_template=cfg.user_data_template(),
                     clock=time.time)  # fmt: skip

    def step() -> list[Any]:
        started = time.monotonic()
        report = rec.cycle()
        result.cycles += 1
        result.cycle_errors += bool(report.errors)
        servers = owned_servers(conn, cluster)
        result.peak_servers = max(result.peak_servers, len(servers))
        result.servers_over_max += len(servers) > demand
        time.sleep(max(0.0, interval_s - (time.monotonic() - started)))
        return servers

    def phase(want: int) -> float | None:
        batch.demand = want
        start = time.monotonic()
        while time.monotonic() - start < phase_timeout_s:
            servers = step()
            live = store.live_instances()
            joined = [r for r in live if r.state in (InstanceState.BUSY, InstanceState.IDLE)]
            if len(servers) == want and len(live) == want and len(joined) == want:
                return time.monotonic() - start
        return None

    try:
        for n in range(rounds):
            up = phase(demand)
            if up is not None:
                result.converged_up += 1
                result.seconds_up.append(round(up, 1))
            down = phase(0)
            if down is not None:
                result.converged_down += 1
                result.seconds_down.append(round(down, 1))
            if log:
                log(f"round {n + 1}/{rounds}: up {up and round(up, 1)} s, down {down and round(down, 1)} s, "
                    f"proxy {dict(proxy.counts)}")  # fmt: skip
    finally:
        faults.enabled = False
        result.leaked_servers = len(owned_servers(conn, cluster))
        decisions = store.recent_decisions(100_000)
        result.retries = int(store.get_json("cloud_retries_total", 0))
        result.retry_decisions = sum(d.kind == "retry" for d in decisions)
        result.failed_creates = sum(d.kind == "failed" for d in decisions)
        result.outcome_unknown_creates = sum(d.kind == "failed" and "outcome unknown" in d.reason for d in decisions)
        result.adopted = sum(d.kind == "adopt" for d in decisions)
        result.proxy = dict(proxy.counts)
        rec.cloud.close()
        store.close()
        proxy.stop()
        for s in owned_servers(conn, cluster):  # cleanup of a failed run (a leak is counted above)
            conn.compute.delete_server(s, ignore_missing=True)
        result.seconds = round(time.monotonic() - t0, 1)
    return result
