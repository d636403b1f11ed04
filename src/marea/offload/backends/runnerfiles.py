"""Shared by the backends that run pods with `marea.offload.runner`: read its status files and log files.

The runner writes `status/<container>.json` at each state change and `status/_pod.json` at the end; reading
them is a few small file reads per pod per refresh, and pods already finished are not read again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from marea.offload.backends.base import PodStatuses, container_status
from marea.offload.logs import follow_log, read_log
from marea.offload.state import PodRecord
from marea.offload.wire import LogRequest, WireError


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def pod_result(pod_dir: Path) -> dict[str, Any] | None:
    """The runner's `_pod.json`: phase Running (with its pid) or Succeeded / Failed; None before it starts."""
    return _read(pod_dir / "status" / "_pod.json")


def statuses_from_files(rec: PodRecord, pod_dir: Path, not_started: dict[str, Any]) -> PodStatuses:
    """Each container's last state as the runner wrote it; `not_started` for those without a file yet."""
    out = PodStatuses()
    for kind, target in (("init", out.init), ("containers", out.containers)):
        for name, image in rec.containers.get(kind, []):
            doc = _read(pod_dir / "status" / f"{name}.json")
            state = doc.get("state") if doc else None
            target.append(container_status(name, image, state if isinstance(state, dict) else not_started))
    return out


def lose_unfinished(st: PodStatuses, reason: str, message: str) -> PodStatuses:
    """The runner is gone: whatever it did not finish is terminated with `reason`."""
    for c in [*st.init, *st.containers]:
        if "terminated" not in c["state"]:
            c["state"] = {"terminated": {"exitCode": 137, "reason": reason, "message": message}}
            c["ready"] = c["started"] = False
    return st


def container_log(rec: PodRecord, pod_dir: Path, req: LogRequest, finished: Callable[[], bool]) -> AsyncIterator[bytes]:
    names = [n for kind in ("init", "containers") for n, _ in rec.containers.get(kind, [])]
    if req.container not in names:
        raise WireError(404, f"pod {rec.namespace}/{rec.name} has no container {req.container!r}")
    path = pod_dir / "logs" / f"{req.container}.log"
    if req.follow:
        return follow_log(path, req, finished)

    async def once() -> AsyncIterator[bytes]:
        yield read_log(path, req)

    return once()


def remove_dir(pod_dir: Path) -> None:
    shutil.rmtree(pod_dir, ignore_errors=True)
