"""The embedded `local` backend: each pod's containers run with podman on this host, through the pod runner.

The runner is started as a detached process (its own session), so a server restart does not stop the pods;
the restarted server finds them again from its store and the runner's files. Images come from podman's default
storage of the user running the server: whatever the admin imported or pulled is found by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from marea.config import OffloadSection
from marea.offload import runner as runner_module
from marea.offload.backends.base import Backend, BackendError, PodStatuses
from marea.offload.backends.runnerfiles import (
    container_log,
    lose_unfinished,
    pod_result,
    remove_dir,
    statuses_from_files,
)
from marea.offload.podspec import PodDirWriter
from marea.offload.quantity import pod_request
from marea.offload.security import SecurityPolicy
from marea.offload.state import PodRecord
from marea.offload.wire import CreateRequest, LogRequest

FINAL = ("Succeeded", "Failed")


def server_id(pods_dir: Path) -> str:
    """Stable per state directory: labels this server's containers apart from other servers' on the host."""
    return hashlib.sha256(str(pods_dir.resolve()).encode()).hexdigest()[:12]


def proc_start_time(pid: int) -> str:
    """The start time of a process (field 22 of /proc/PID/stat): tells a live runner from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


class PodmanMixin:
    """podman calls shared by the backends that run pods on a host we control (cleanup of leftovers)."""

    settings: OffloadSection
    #: label value that tells this server's containers from those of other servers on the same host
    server_id: str

    @property
    def policy(self) -> SecurityPolicy:
        return SecurityPolicy.from_config(self.settings.security)

    def run_options(self) -> list[str]:
        return [*self.settings.run_options, f"--label=marea.offload.server={self.server_id}"]

    def podman(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.settings.podman, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def labelled_containers(self) -> list[dict[str, Any]]:
        """One bulk query: every container the runner created (label marea.offload.pod)."""
        res = self.podman("ps", "-a", "--format", "json", "--filter", f"label=marea.offload.server={self.server_id}")
        if res.returncode != 0:
            raise BackendError(f"podman ps failed: {res.stderr.strip()[-200:]}")
        doc = json.loads(res.stdout or "[]")
        return doc if isinstance(doc, list) else []

    def remove_containers(self, uid: str) -> None:
        res = self.podman("ps", "-a", "-q", "--filter", f"label=marea.offload.pod={uid}")
        ids = res.stdout.split()
        if ids:  # --depend: the containers that share the first one's network namespace too
            self.podman("rm", "-f", "--depend", "--ignore", *ids)


class LocalBackend(PodmanMixin, Backend):
    name = "local"

    def __init__(self, settings: OffloadSection, pods_dir: Path) -> None:
        self.settings = settings
        self.pods_dir = pods_dir
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.server_id = server_id(pods_dir)
        self.python = settings.python or sys.executable
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.final: dict[str, PodStatuses] = {}

    def pod_dir(self, rec: PodRecord) -> Path:
        return Path(rec.objects.get("dir") or self.pods_dir / rec.uid)

    # -- create / delete -------------------------------------------------------------------------------------
    def create(self, req: CreateRequest, rec: PodRecord) -> None:
        want = pod_request(req.pod)
        pod_dir = self.pods_dir / rec.uid
        PodDirWriter(req, pod_dir).write(
            self.settings.podman, self.run_options(), self.settings.grace_s, self.settings.network, self.policy
        )
        with (pod_dir / "runner.log").open("ab") as log:
            proc = subprocess.Popen(
                [self.python, runner_module.__file__, "run", str(pod_dir)],
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                close_fds=True,
            )
        self.children[rec.uid] = proc
        rec.jid = f"local-{proc.pid}"
        rec.objects = {
            "dir": str(pod_dir),
            "pid": proc.pid,
            "start": proc_start_time(proc.pid),
            "cpus": want.cpus,
            "memory": want.memory_bytes,
        }

    def runner_alive(self, rec: PodRecord) -> bool:
        child = self.children.get(rec.uid)
        if child is not None:
            return child.poll() is None
        pid = int(rec.objects.get("pid") or 0)
        return pid > 0 and proc_start_time(pid) == rec.objects.get("start")

    def delete(self, rec: PodRecord) -> None:
        pid = int(rec.objects.get("pid") or 0)
        if pid > 0 and self.runner_alive(rec):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.settings.grace_s + 15
            while self.runner_alive(rec) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.runner_alive(rec):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        child = self.children.pop(rec.uid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)
        self.remove_containers(rec.uid)
        remove_dir(self.pod_dir(rec))
        self.final.pop(rec.uid, None)

    # -- status ----------------------------------------------------------------------------------------------
    def refresh(self, recs: list[PodRecord]) -> dict[str, PodStatuses]:
        out: dict[str, PodStatuses] = {}
        for rec in recs:
            if rec.uid in self.final:
                out[rec.uid] = self.final[rec.uid]
                continue
            alive = self.runner_alive(rec)  # before the files: a runner writes its result, then exits
            pod_dir = self.pod_dir(rec)
            result = pod_result(pod_dir)
            st = statuses_from_files(rec, pod_dir, {"waiting": {"reason": "ContainerCreating"}})
            if result and result.get("phase") in FINAL:
                self.final[rec.uid] = st
                child = self.children.pop(rec.uid, None)
                if child is not None:
                    child.poll()
            elif not alive:
                st = lose_unfinished(st, "RunnerLost", "the pod runner ended before its containers did")
                self.final[rec.uid] = st
            out[rec.uid] = st
        return out

    def logs(self, rec: PodRecord, req: LogRequest, finished: Callable[[], bool]) -> AsyncIterator[bytes]:
        return container_log(rec, self.pod_dir(rec), req, finished)

    def capacity(self, recs: list[PodRecord]) -> dict[str, Any]:
        cpus = float(os.cpu_count() or 1)
        mem = 0.0
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    mem = float(line.split()[1]) * 1024
        except OSError:
            pass
        active = [r for r in recs if r.uid not in self.final]
        cpus -= sum(float(r.objects.get("cpus", 0)) for r in active)
        mem -= sum(float(r.objects.get("memory", 0)) for r in active)
        return {
            "cpu": str(max(0, int(cpus))),
            "memory": f"{max(0, int(mem // 2**20))}Mi",
            "pods": str(max(0, self.settings.max_pods - len(active))),
        }

    def adopt(self, recs: list[PodRecord]) -> list[PodRecord]:
        """Remove containers no record owns; finish records whose creation was interrupted."""
        known = {r.uid for r in recs if r.phase == "created"}
        gone = [r for r in recs if r.phase != "created"]
        for c in self.labelled_containers():
            uid = (c.get("Labels") or {}).get("marea.offload.pod", "")
            if uid and uid not in known:
                self.podman("rm", "-f", "--depend", "--ignore", str(c.get("Id", "")))
        for rec in gone:
            self.delete(rec)
        return gone
