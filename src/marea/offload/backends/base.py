"""The interface every offload backend implements, and the status shapes they return.

A backend never serves a request's status itself: the server calls `refresh` for all its pods at once on a
timer (one bulk query: one `squeue --json`, one directory scan, one LIST of pods) and answers /status from the
cache. That is the difference from a plugin that makes one backend call per status poll: interLink polls every
5 s per active pod, so 1,000 pods would be 200 backend calls per second.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from marea.offload.state import PodRecord
from marea.offload.wire import CreateRequest, LogRequest


class BackendError(Exception):
    """The backend could not do what was asked; the message is short and safe to show (no secrets)."""


@dataclass
class PodStatuses:
    """V1ContainerStatus dicts for one pod, init containers apart (as InterlinkPodStatus carries them)."""

    init: list[dict[str, Any]] = field(default_factory=list)
    containers: list[dict[str, Any]] = field(default_factory=list)

    def all_terminated(self) -> bool:
        return all("terminated" in (c.get("state") or {}) for c in self.containers)

    def terminated(self, name: str) -> bool:
        for c in [*self.init, *self.containers]:
            if c.get("name") == name:
                return "terminated" in (c.get("state") or {})
        return True


def container_status(name: str, image: str, state: dict[str, Any], container_id: str = "") -> dict[str, Any]:
    running = "running" in state
    return {
        "name": name,
        "image": image,
        "imageID": "",
        "containerID": container_id,
        "ready": running,
        "started": running,
        "restartCount": 0,
        "state": state,
    }


def waiting_pod(rec: PodRecord, reason: str, message: str = "") -> PodStatuses:
    """Every container waiting with the same reason (pod accepted, nothing runs yet)."""
    state: dict[str, Any] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    return PodStatuses(
        init=[container_status(n, i, state) for n, i in rec.containers.get("init", [])],
        containers=[container_status(n, i, state) for n, i in rec.containers.get("containers", [])],
    )


def terminated_pod(rec: PodRecord, reason: str, message: str, exit_code: int = 1) -> PodStatuses:
    state: dict[str, Any] = {"terminated": {"exitCode": exit_code, "reason": reason, "message": message}}
    return PodStatuses(
        init=[container_status(n, i, state) for n, i in rec.containers.get("init", [])],
        containers=[container_status(n, i, state) for n, i in rec.containers.get("containers", [])],
    )


class Backend(ABC):
    """One place pods run. Methods may block (they are called in worker threads), except `logs`."""

    name: str = "?"

    @abstractmethod
    def create(self, req: CreateRequest, rec: PodRecord) -> None:
        """Start the pod; fill `rec.jid` and `rec.objects` (what delete needs). Raise BackendError."""

    @abstractmethod
    def delete(self, rec: PodRecord) -> None:
        """Stop the pod and remove everything created for it; idempotent."""

    @abstractmethod
    def refresh(self, recs: list[PodRecord]) -> dict[str, PodStatuses]:
        """Statuses of all the given pods with a bounded number of backend calls (one bulk query)."""

    @abstractmethod
    def logs(self, rec: PodRecord, req: LogRequest, finished: Callable[[], bool]) -> AsyncIterator[bytes]:
        """The log stream of one container (one chunk unless req.follow)."""

    @abstractmethod
    def capacity(self, recs: list[PodRecord]) -> dict[str, Any]:
        """InterlinkResourcesResponse: what the virtual node can still take (cpu, memory, pods)."""

    def adopt(self, recs: list[PodRecord]) -> list[PodRecord]:
        """At start: reconcile with the backend; return the records that no longer exist. Default: none."""
        return []

    def close(self) -> None:
        """Release clients and threads (pods keep running)."""
