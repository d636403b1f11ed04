"""The offload service: records, the status cache and its refresh loop, between the HTTP app and a backend.

/status is answered from `cache` (uid -> the InterlinkPodStatus bytes, serialised once per refresh), so its
cost does not depend on the backend at all; the refresh loop makes one bulk backend query every `refresh_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from marea.offload.backends.base import Backend, BackendError, PodStatuses, terminated_pod, waiting_pod
from marea.offload.quantity import QuantityError, pod_request
from marea.offload.security import SecurityPolicy, check_pod
from marea.offload.state import PodRecord, PodStore
from marea.offload.wire import (
    CreateRequest,
    LogRequest,
    PodRef,
    WireError,
    container_names,
    parse_pod_list,
    pod_status,
)

log = logging.getLogger("marea.offload")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "marea_offload_requests",
            "requests by endpoint and status code",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.pods = Gauge("marea_offload_pods", "pods known to the server", registry=self.registry)
        self.refresh = Histogram(
            "marea_offload_refresh_seconds", "duration of one bulk status refresh", registry=self.registry
        )
        self.refresh_errors = Counter(
            "marea_offload_refresh_errors", "failed bulk status refreshes", registry=self.registry
        )


#: the parse cache's memory budget (bodies it keeps plus an estimate of the references), and the largest body
#: it keeps: a status poll carries one pod of a few kB, so 64 MiB holds about 16,000 of them
PARSE_CACHE_BYTES = 64 << 20
PARSE_CACHE_ENTRY_MAX = 1 << 20
#: bytes counted per parsed pod reference on top of the body (a PodRef and its three strings)
REF_COST = 400


class OffloadService:
    def __init__(
        self,
        backend: Backend,
        store: PodStore,
        refresh_s: float = 2.0,
        parse_cache_size: int = 16384,
        security: SecurityPolicy | None = None,
        parse_cache_bytes: int = PARSE_CACHE_BYTES,
    ) -> None:
        self.backend = backend
        self.store = store
        self.refresh_s = refresh_s
        self.security = security or SecurityPolicy()
        self.records: dict[str, PodRecord] = {}
        self.statuses: dict[str, PodStatuses] = {}
        self.cache: dict[str, bytes] = {}
        #: raw /status body -> the pod references in it (see status_answer); bounded in entries and in bytes
        self.parsed: dict[bytes, tuple[PodRef, ...]] = {}
        self.parse_cache_size = parse_cache_size
        self.parse_cache_bytes = parse_cache_bytes
        self.parsed_bytes = 0
        self.locks: dict[str, asyncio.Lock] = {}
        self.metrics = Metrics()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        records = self.store.all()
        try:
            gone = await asyncio.to_thread(self.backend.adopt, records)
        except BackendError as exc:  # serve anyway: statuses will say what the backend cannot do
            log.warning("could not reconcile with the backend at start: %s", exc)
            gone = []
        for rec in gone:
            self.store.delete(rec.uid)
        gone_ids = {r.uid for r in gone}
        self.records = {r.uid: r for r in records if r.uid not in gone_ids}
        for rec in self.records.values():
            self._set(rec, waiting_pod(rec, "ContainerCreating"))
        await self.refresh_once()
        self._task = asyncio.create_task(self._loop())
        log.info("offload service started: backend %s, %d pod(s) adopted", self.backend.name, len(self.records))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.backend.close)
        self.store.close()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.refresh_s)
            self._wake.clear()
            try:
                await self.refresh_once()
            except Exception:  # the loop must survive anything a backend does
                self.metrics.refresh_errors.inc()
                log.exception("status refresh failed")

    def poke(self) -> None:
        """Refresh soon (after a create or delete) instead of at the next tick."""
        self._wake.set()

    async def refresh_once(self) -> None:
        recs = [r for r in self.records.values() if r.phase == "created"]
        if not recs:
            return
        started = time.perf_counter()
        try:
            fresh = await asyncio.to_thread(self.backend.refresh, recs)
        except BackendError as exc:
            self.metrics.refresh_errors.inc()
            log.warning("status refresh failed: %s", exc)
            return
        for rec in recs:
            st = fresh.get(rec.uid)
            if st is not None and rec.uid in self.records:
                self._set(rec, st)
        self.metrics.refresh.observe(time.perf_counter() - started)

    def _set(self, rec: PodRecord, st: PodStatuses) -> None:
        self.statuses[rec.uid] = st
        ref = PodRef(rec.uid, rec.name, rec.namespace)
        self.cache[rec.uid] = pod_status(ref, rec.jid, st.containers, st.init)

    # -- operations ------------------------------------------------------------------------------------------
    def _lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())

    async def create(self, req: CreateRequest) -> dict[str, str]:
        uid = req.ref.uid
        async with self._lock(uid):
            known = self.records.get(uid)
            if known is not None and known.phase == "created":
                return {"PodUID": uid, "PodJID": known.jid}  # a retried create is not a second pod
            try:
                pod_request(req.pod)
            except QuantityError as exc:
                raise WireError(422, f"pod resources: {exc}") from None
            check_pod(req.pod, self.security)  # before anything exists: the same refusals on every backend
            init, apps = container_names(req.pod)
            rec = PodRecord(
                uid=uid,
                name=req.ref.name,
                namespace=req.ref.namespace,
                backend=self.backend.name,
                phase="creating",
                containers={"init": [list(x) for x in init], "containers": [list(x) for x in apps]},
            )
            self.store.put(rec)  # intent first: a crash from here on leaves a record to clean up
            try:
                await asyncio.to_thread(self.backend.create, req, rec)
            except Exception as exc:  # undo whatever part was created, then answer with one clear line
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.backend.delete, rec)
                self.store.delete(uid)
                if isinstance(exc, WireError | BackendError):
                    raise
                log.exception("create of pod %s failed", uid)
                raise BackendError(f"could not create the pod: {exc.__class__.__name__}") from None
            rec.phase = "created"
            self.store.put(rec)
            self.records[uid] = rec
            self._set(rec, waiting_pod(rec, "ContainerCreating"))
            self.metrics.pods.set(len(self.records))
        self.poke()
        return {"PodUID": uid, "PodJID": rec.jid}

    async def delete(self, ref: PodRef) -> bool:
        """Idempotent: an unknown pod is already deleted. Returns whether something was removed."""
        async with self._lock(ref.uid):
            rec = self.records.get(ref.uid)
            if rec is None:
                return False
            await asyncio.to_thread(self.backend.delete, rec)
            self.store.delete(ref.uid)
            self.records.pop(ref.uid, None)
            self.cache.pop(ref.uid, None)
            self.statuses.pop(ref.uid, None)
            self.metrics.pods.set(len(self.records))
        self.locks.pop(ref.uid, None)
        return True

    def status_answer(self, body: bytes) -> bytes | None:
        """The /status answer for a raw request body; None for the ping (`[]`). Raises WireError.

        interLink re-sends each active pod every 5 s, and the body is byte-identical until the pod changes, so
        the pod references parsed from a body are kept (bounded, oldest out first): parsing a full v1.Pod is
        the largest cost of a status call, larger than all the rest together.
        """
        refs = self.parsed.get(body)
        if refs is None:
            pods = parse_pod_list(body)
            if not pods:
                return None
            refs = tuple(ref for ref, _ in pods)
            self._remember(body, refs)
        parts = []
        for ref in refs:
            cached = self.cache.get(ref.uid)
            if cached is None:  # an unknown pod: its answer needs the container names from the full pod
                return self.status_body(parse_pod_list(body))
            parts.append(cached)
        return b"[" + b",".join(parts) + b"]"

    def _remember(self, body: bytes, refs: tuple[PodRef, ...]) -> None:
        """Keep a parsed body, oldest out first, within `parse_cache_size` entries and `parse_cache_bytes`."""
        cost = len(body) + REF_COST * len(refs)
        if not self.parse_cache_size or cost > min(PARSE_CACHE_ENTRY_MAX, self.parse_cache_bytes):
            return
        while self.parsed and (
            len(self.parsed) >= self.parse_cache_size or self.parsed_bytes + cost > self.parse_cache_bytes
        ):
            old = next(iter(self.parsed))
            self.parsed_bytes -= len(old) + REF_COST * len(self.parsed.pop(old))
        self.parsed[body] = refs
        self.parsed_bytes += cost

    def status_body(self, pods: list[tuple[PodRef, dict[str, Any]]]) -> bytes:
        parts = []
        for ref, pod in pods:
            cached = self.cache.get(ref.uid)
            parts.append(cached if cached is not None else self.unknown_status(ref, pod))
        return b"[" + b",".join(parts) + b"]"

    @staticmethod
    def unknown_status(ref: PodRef, pod: dict[str, Any]) -> bytes:
        """A pod marea has no record of: its containers are reported terminated with reason NotFound."""
        init, apps = container_names(pod)
        rec = PodRecord(
            uid=ref.uid,
            name=ref.name,
            namespace=ref.namespace,
            backend="",
            phase="",
            containers={"init": [list(x) for x in init], "containers": [list(x) for x in apps]},
        )
        st = terminated_pod(rec, "NotFound", "marea has no record of this pod")
        return pod_status(ref, "", st.containers, st.init)

    def logs(self, req: LogRequest) -> AsyncIterator[bytes]:
        rec = self.records.get(req.ref.uid)
        if rec is None:
            raise WireError(404, f"pod {req.ref.uid} is not known to marea")

        def finished() -> bool:
            st = self.statuses.get(req.ref.uid)
            return st is None or st.terminated(req.container)

        return self.backend.logs(rec, req, finished)

    async def ping(self) -> dict[str, Any]:
        resources = await asyncio.to_thread(self.backend.capacity, list(self.records.values()))
        resources.setdefault("accelerators", [])
        return {"status": "ok", "resources": resources, "taints": []}
