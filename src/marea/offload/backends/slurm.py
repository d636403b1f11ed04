"""The `slurm` backend: one pod -> one `sbatch` job whose body is the pod runner (podman on the node).

The job asks for what the pod requests: `sbatch -p <partition> -c <cpus> --mem <MB>` (the larger of the app
containers' sum and the largest init container, as the Kubernetes scheduler counts). While it pends, it is an
ordinary pending job of the elastic cluster's partition, so the elastic engine, which reads `squeue --json`
pending jobs of that partition as demand, boots a worker for it: offloaded pods need no special path.

Status of all pods comes from one `squeue --json` per refresh (pending, running, gone) plus the runner's files
in the pod directory (per-container states and exit codes), which must be on a filesystem the nodes share
with the server (as Slurm's own working directories usually are). Logs are read from the same directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from marea.config import MareaConfig
from marea.offload import runner as runner_module
from marea.offload.backends.base import BackendError, PodStatuses, waiting_pod
from marea.offload.backends.batchjob import BatchJobBackend, job_name
from marea.offload.backends.local import FINAL, PodmanMixin
from marea.offload.backends.runnerfiles import (
    container_log,
    lose_unfinished,
    pod_result,
    remove_dir,
    statuses_from_files,
)
from marea.offload.podspec import PodDirWriter
from marea.offload.quantity import pod_request
from marea.offload.state import PodRecord
from marea.offload.wire import CreateRequest, LogRequest

ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}


def job_script(python: str, runner: str, pod_dir: Path) -> str:
    """The batch script: every word quoted (the pod directory holds the uid, and the state directory may hold
    spaces); the only shell code in it is ours."""
    words = " ".join(shlex.quote(w) for w in (python, runner, "run", str(pod_dir)))
    return f"#!/bin/sh\n# marea offload: run the pod's containers with the pod runner\nexec {words}\n"


class SlurmBackend(PodmanMixin, BatchJobBackend):
    name = "slurm"

    def __init__(self, cfg: MareaConfig, pods_dir: Path) -> None:
        super().__init__(cfg, pods_dir, sys.executable)
        self.slurm = cfg.batch.slurm
        self.env = dict(os.environ)
        if self.slurm.slurm_conf:
            self.env["SLURM_CONF"] = self.slurm.slurm_conf

    def client(self, *args: str) -> str:
        cmd = [*self.slurm.command_prefix, *args]
        try:
            res = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                env=self.env,
                timeout=self.slurm.command_timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendError(f"{args[0]} failed: {exc}") from None
        if res.returncode != 0:
            raise BackendError(f"{args[0]} failed: {res.stderr.strip()[-300:]}")
        return res.stdout

    def sbatch_args(self, rec: PodRecord, pod: dict[str, Any], pod_dir: Path) -> list[str]:
        """The job's resource request is the pod's: this is what makes it demand for the elastic engine."""
        want = pod_request(pod)
        args = [
            "sbatch",
            "--parsable",
            "-p",
            self.slurm.partition,
            "-J",
            job_name(rec),
            "-c",
            str(want.slurm_cpus),
            "--mem",
            str(want.slurm_mem_mb),
            f"--chdir={pod_dir}",
            f"--output={pod_dir / 'slurm.out'}",
            "--comment",
            f"marea-offload pod {rec.uid}",
        ]
        if want.gpus:
            args += ["--gres", f"gpu:{want.gpus}"]
        return [*args, str(pod_dir / "job.sh")]

    def create(self, req: CreateRequest, rec: PodRecord) -> None:
        pod_dir = self.pods_dir / rec.uid
        PodDirWriter(req, pod_dir).write(
            self.settings.podman, self.run_options(), self.settings.grace_s, self.settings.network, self.policy
        )
        script = pod_dir / "job.sh"
        script.write_text(job_script(self.python, runner_module.__file__, pod_dir))
        script.chmod(0o700)
        out = self.client(*self.sbatch_args(rec, req.pod, pod_dir))
        jid = out.strip().split(";")[0]
        if not jid.isdigit():
            raise BackendError(f"sbatch gave no job id: {out.strip()[:100]}")
        rec.jid = jid
        rec.objects = {"dir": str(pod_dir)}

    def delete(self, rec: PodRecord) -> None:
        if rec.jid:
            with contextlib.suppress(BackendError):  # already gone
                self.client("scancel", rec.jid)
            deadline = time.monotonic() + self.settings.grace_s + 20
            while time.monotonic() < deadline and self.job_active(rec.jid):
                time.sleep(0.3)
        self.remove_containers(rec.uid)  # no-op on a remote node; catches a runner killed hard here
        remove_dir(self.pod_dir(rec))
        self.forget(rec)

    def job_active(self, jid: str) -> bool:
        try:
            jobs = self.jobs()
        except BackendError:
            return False
        job = jobs.get(jid)
        return job is not None and str(job.get("job_state", "")).upper() in ACTIVE

    def jobs(self) -> dict[str, dict[str, Any]]:
        """One `squeue --json` call for every job (22.05 prints all states it still remembers)."""
        try:
            doc = json.loads(self.client("squeue", "--json"))
        except ValueError:
            raise BackendError("squeue --json printed no JSON") from None
        return {str(j.get("job_id")): j for j in doc.get("jobs", [])}

    def refresh(self, recs: list[PodRecord]) -> dict[str, PodStatuses]:
        out, todo = self.split_final(recs)
        if not todo:
            return out
        jobs = self.jobs()
        now = time.monotonic()
        for rec in todo:
            job = jobs.get(rec.jid)
            state = str(job.get("job_state", "")).upper() if job else ""
            pod_dir = self.pod_dir(rec)
            result = pod_result(pod_dir)  # after squeue: a job listed as ended has written its result
            if state == "PENDING":
                reason = str(job.get("state_reason", "")) if job else ""
                out[rec.uid] = waiting_pod(rec, "JobPending", f"Slurm job {rec.jid} pending: {reason}")
                continue
            st = statuses_from_files(rec, pod_dir, {"waiting": {"reason": "ContainerCreating"}})
            if result and result.get("phase") in FINAL:
                self.final[rec.uid] = st
            elif state in ACTIVE:
                self.missing_since.pop(rec.uid, None)
            elif state:  # the job ended without the runner finishing: cancelled, timed out, node failure
                st = lose_unfinished(st, "Job" + state.title().replace("_", ""), f"Slurm job {rec.jid} ended: {state}")
                self.final[rec.uid] = st
            else:
                st = self.missing(rec, st, now, f"Slurm job {rec.jid} is not known to Slurm any more")
            out[rec.uid] = st
        return out

    def logs(self, rec: PodRecord, req: LogRequest, finished: Callable[[], bool]) -> AsyncIterator[bytes]:
        return container_log(rec, self.pod_dir(rec), req, finished)

    def adopt(self, recs: list[PodRecord]) -> list[PodRecord]:
        gone = [r for r in recs if r.phase != "created"]
        for rec in gone:
            if not rec.jid:  # sbatch may have run before the crash: find the job by its comment-free name
                try:
                    for jid, job in self.jobs().items():
                        if job.get("name") == job_name(rec) and rec.uid in str(job.get("comment", "")):
                            rec.jid = jid
                except BackendError:
                    pass
            self.delete(rec)
        return gone
