"""What the engine tells Prometheus and the web page: counters and gauges fed by the reconciler's events.

The reconciler knows nothing of Prometheus: it calls a `Recorder` (decision taken, VM booted, boot failed,
VM deleted, cloud call failed, cycle seen), and `NullRecorder` is its default, so the simulator and the tests
that do not look at metrics pay nothing. `EngineMetrics` is the real recorder: its own `CollectorRegistry`
(no global state, so two engines in one process, or a test and an engine, never share a counter) and a short
in-memory history of each cycle's picture, which the live page draws as "workers over time" from the moment
it is opened, even if the browser was not watching.

Label values come from small fixed sets (states, flavours of the config, error kinds, failure kinds), never
from free text, so the number of series stays bounded whatever the cloud says.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from marea.engine.store import InstanceRecord
from marea.model import ClusterView, InstanceState

#: the failed-boot kinds the reconciler reports (label `reason` of marea_failed_boots_total)
FAILED_BOOT_KINDS = ("create_failed", "cloud_error", "vanished", "join_timeout")
#: states a worker can be in while it occupies a VM (GONE is history, not a worker)
WORKER_STATES = tuple(s.value for s in InstanceState if s is not InstanceState.GONE)
#: how many cycles of history the live page gets (at the default 5 s interval: one hour)
HISTORY_CYCLES = 720


class Recorder(Protocol):
    """Events of the reconciler that an observer may count. Implementations must not raise."""

    def decision(self, kind: str) -> None: ...
    def booted(self, count: int) -> None: ...
    def failed_boot(self, kind: str) -> None: ...
    def deleted(self) -> None: ...
    def cloud_error(self, kind: str) -> None: ...
    def cloud_retries(self, count: int) -> None: ...
    def cycle_seen(self, view: ClusterView, workers: Sequence[InstanceRecord], queued_jobs: int) -> None: ...
    def cycle_duration(self, seconds: float) -> None: ...


class NullRecorder:
    """The default: counts nothing."""

    def decision(self, kind: str) -> None:
        pass

    def booted(self, count: int) -> None:
        pass

    def failed_boot(self, kind: str) -> None:
        pass

    def deleted(self) -> None:
        pass

    def cloud_error(self, kind: str) -> None:
        pass

    def cloud_retries(self, count: int) -> None:
        pass

    def cycle_seen(self, view: ClusterView, workers: Sequence[InstanceRecord], queued_jobs: int) -> None:
        pass

    def cycle_duration(self, seconds: float) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Sample:
    """One cycle's picture for the live page's charts."""

    at: float
    workers: dict[str, int]
    demand_cores: float
    capacity_cores: float
    queued_jobs: int

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "workers": self.workers,
            "demand_cores": self.demand_cores,
            "capacity_cores": self.capacity_cores,
            "queued_jobs": self.queued_jobs,
        }


class EngineMetrics:
    """The Prometheus metrics of one engine, in a registry of its own, plus the page's recent history."""

    def __init__(self, cluster: str, flavours: dict[str, int]) -> None:
        """`flavours` maps each configured flavour to its cores (capacity in cores is a sum over workers)."""
        self.cluster = cluster
        self.flavour_cores = dict(flavours)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.workers = Gauge("marea_workers", "Worker VMs by state and flavour", ["state", "flavour"], registry=r)
        self.demand = Gauge("marea_demand", "Queued demand the engine may boot for, by resource", ["resource"],
                            registry=r)  # fmt: skip
        self.capacity = Gauge("marea_capacity", "Resources of workers booting or joined, by resource",
                              ["resource"], registry=r)  # fmt: skip
        self.queued_jobs = Gauge("marea_queued_jobs", "Jobs queued in the batch system", registry=r)
        self.oldest_wait = Gauge(
            "marea_oldest_queued_job_seconds", "Age of the oldest queued job that is demand (0: none)", registry=r
        )
        self.quota = Gauge("marea_quota_headroom", "Room left in the cloud project's quota (absent: no limit)",
                           ["resource"], registry=r)  # fmt: skip
        self.boots = Counter("marea_boots", "Worker VMs the cloud accepted", registry=r)
        self.failed_boots = Counter("marea_failed_boots", "Worker VMs that did not join, by reason", ["reason"],
                                    registry=r)  # fmt: skip
        self.deletes = Counter("marea_deletes", "Worker VMs deleted from the cloud", registry=r)
        self.decisions = Counter("marea_decisions", "Decisions of the engine, by kind", ["kind"], registry=r)
        self.cloud_errors = Counter("marea_cloud_errors", "Failed cloud calls, by kind", ["kind"], registry=r)
        self.retries = Counter("marea_cloud_retries", "Cloud calls repeated after a transient failure", registry=r)
        self.cycle_seconds = Histogram(
            "marea_cycle_duration_seconds", "Duration of a reconcile cycle", registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )  # fmt: skip
        self.last_cycle = Gauge("marea_last_cycle_timestamp_seconds", "When the last cycle ended", registry=r)
        info = Gauge("marea_engine_info", "The engine's cluster (always 1)", ["cluster"], registry=r)
        info.labels(cluster=cluster).set(1)
        for kind in FAILED_BOOT_KINDS:  # present at 0, so that increase() sees the first failure
            self.failed_boots.labels(reason=kind)
        for kind in ("boot", "drain", "resume", "delete", "wait"):
            self.decisions.labels(kind=kind)
        self._lock = threading.Lock()
        self._history: deque[Sample] = deque(maxlen=HISTORY_CYCLES)

    # -- Recorder --------------------------------------------------------------------------------------------
    def decision(self, kind: str) -> None:
        self.decisions.labels(kind=kind).inc()

    def booted(self, count: int) -> None:
        self.boots.inc(count)

    def failed_boot(self, kind: str) -> None:
        self.failed_boots.labels(reason=kind if kind in FAILED_BOOT_KINDS else "other").inc()

    def deleted(self) -> None:
        self.deletes.inc()

    def cloud_error(self, kind: str) -> None:
        self.cloud_errors.labels(kind=kind).inc()

    def cloud_retries(self, count: int) -> None:
        self.retries.inc(count)

    def cycle_duration(self, seconds: float) -> None:
        self.cycle_seconds.observe(seconds)

    def cycle_seen(self, view: ClusterView, workers: Sequence[InstanceRecord], queued_jobs: int) -> None:
        """`view` is what the policy saw (demand, quota); `workers` the instances as the cycle left them."""
        counts: dict[tuple[str, str], int] = {(s, f): 0 for s in WORKER_STATES for f in self.flavour_cores}
        by_state = dict.fromkeys(WORKER_STATES, 0)
        capacity_cores = 0.0
        for inst in workers:
            if inst.state is InstanceState.GONE:
                continue
            key = (inst.state.value, inst.flavour)
            counts[key] = counts.get(key, 0) + 1
            by_state[inst.state.value] = by_state.get(inst.state.value, 0) + 1
            if inst.state in (InstanceState.REQUESTED, InstanceState.BOOTING, InstanceState.IDLE, InstanceState.BUSY):
                capacity_cores += self.flavour_cores.get(inst.flavour, 0)
        for (state, flavour), n in counts.items():
            self.workers.labels(state=state, flavour=flavour).set(n)
        cores = sum(d.request.cores * d.count for d in view.demand)
        self.demand.labels(resource="cores").set(cores)
        self.demand.labels(resource="memory_mb").set(sum(d.request.memory_mb * d.count for d in view.demand))
        self.demand.labels(resource="gpus").set(sum(d.request.gpus * d.count for d in view.demand))
        self.demand.labels(resource="jobs").set(sum(d.count for d in view.demand))
        self.capacity.labels(resource="cores").set(capacity_cores)
        self.queued_jobs.set(queued_jobs)
        submits = [d.oldest_submit_time for d in view.demand if d.oldest_submit_time is not None]
        self.oldest_wait.set(max(0.0, view.now - min(submits)) if submits else 0.0)
        q = view.quota
        for resource, value in (
            ("instances", q.instances), ("cores", q.cores), ("memory_mb", q.memory_mb), ("gpus", q.gpus),
        ):  # fmt: skip
            if value is None:
                with contextlib.suppress(KeyError):
                    self.quota.remove(resource)
            else:
                self.quota.labels(resource=resource).set(value)
        self.last_cycle.set(view.now)
        with self._lock:
            self._history.append(Sample(view.now, by_state, cores, capacity_cores, queued_jobs))

    # -- readers ---------------------------------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)

    def history(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.as_json() for s in self._history]
