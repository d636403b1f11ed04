"""The `htcondor` backend: one pod -> one vanilla-universe HTCondor job whose body is the pod runner.

The job asks for what the pod requests (request_cpus / request_memory / request_gpus), so while it is idle it
is an ordinary idle job of the schedd, and the elastic engine's `htcondor` plugin, which reads idle jobs as
demand, boots a worker for it: offloaded pods need no special path.

No shared filesystem is assumed between this server, the schedd and the workers, as is usual in HTCondor
pools: the job is submitted with its input files spooled (`Schedd.submit(spool=True)` + `Schedd.spool`, what
`condor_submit -spool` does), so the server may run anywhere it can reach the schedd and under any account
the schedd accepts. HTCondor moves the pod directory (plan, volumes, the runner) to the worker's scratch
directory and brings `status/` and `logs/` back when the job ends or is evicted.

Status of all pods comes from one schedd query per refresh: JobStatus, HoldReason, and `MareaContainers`,
the per-container states the runner writes into its own job ad with `condor_chirp` at every state change
(`+WantIOProxy`). Per-container exit codes are in those states. Logs come from the job's output: the
runner's per-container log files, retrieved from the spool once the job has completed; while a job runs, its
logs are not readable from here (a follow request waits and then streams them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from marea.batch.htcondor_bindings import classad_string, configured_bindings, schedd_ads
from marea.batch.htcondor_netns import NamespaceRunner
from marea.config import MareaConfig
from marea.offload import runner as runner_module
from marea.offload.backends.base import BackendError, PodStatuses, container_status, waiting_pod
from marea.offload.backends.batchjob import BatchJobBackend, job_name
from marea.offload.backends.runnerfiles import container_log, lose_unfinished, remove_dir, statuses_from_files
from marea.offload.podspec import PodDirWriter
from marea.offload.quantity import pod_request
from marea.offload.state import PodRecord
from marea.offload.wire import CreateRequest, LogRequest

log = logging.getLogger(__name__)

#: JobStatus values (HTCondor's job ad)
IDLE, RUNNING, REMOVED, COMPLETED, HELD, TRANSFERRING_OUTPUT, SUSPENDED = 1, 2, 3, 4, 5, 6, 7
#: HoldReasonCode of a spooled job whose input is still being uploaded (held by the schedd until it is in)
SPOOLING_INPUT = 16
#: the job ad attributes one refresh reads
PROJECTION = [
    "ClusterId", "ProcId", "JobStatus", "HoldReason", "HoldReasonCode", "ExitCode", "ExitBySignal", "ExitSignal",
    "MareaPodUid", "MareaContainers", "LastRejMatchReason", "NumJobStarts",
]  # fmt: skip
RUNNER_FILE = "marea_runner.py"
#: how long a log request for a terminated container waits for the job's output to come back
OUTPUT_WAIT_S = 30.0

JOB_SCRIPT = """#!/bin/sh
# marea offload: run the pod's containers with the pod runner, in this job's scratch directory
set -e
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# HTCondor sets no HOME: podman keeps its images there
[ -n "${HOME:-}" ] || HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
export HOME
# this job's own runtime directory (podman's pause process and locks); the starter ends them with the job
export XDG_RUNTIME_DIR="$PWD/.run"
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
for chirp in "$(command -v condor_chirp || true)" /usr/libexec/condor/condor_chirp; do
  if [ -n "$chirp" ] && [ -x "$chirp" ]; then export MAREA_RUNNER_CHIRP="$chirp"; break; fi
done
exec @PYTHON@ "$PWD/@RUNNER@" run "$PWD"
"""


class HTCondorBackend(BatchJobBackend):
    name = "htcondor"

    def __init__(self, cfg: MareaConfig, pods_dir: Path) -> None:
        super().__init__(cfg, pods_dir, "python3")  # the worker's, not this server's interpreter
        self.condor = cfg.batch.htcondor
        try:
            self.htcondor = configured_bindings(self.condor)
        except Exception as exc:
            raise BackendError(str(exc)) from None
        self.runner = NamespaceRunner(self.condor.netns)
        self._schedd_ad: Any = None

    # -- bindings helpers --------------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        """fn(schedd) in the right network namespace; HTCondor's exceptions become a short BackendError."""

        def go() -> Any:
            return fn(self._schedd())

        try:
            return self.runner.run(go)
        except BackendError:
            self._schedd_ad = None
            raise
        except Exception as exc:  # HTCondorException, ClassAdException, OSError, BatchError from the runner
            self._schedd_ad = None  # the schedd may have moved: locate it again next time
            raise BackendError(f"htcondor: {what} failed: {str(exc).strip()[:300]}") from None

    def _schedd(self) -> Any:
        """The schedd, located through the collector once (again after any failed call)."""
        h = self.htcondor
        if self._schedd_ad is None:
            ads = schedd_ads(h, h.Collector(self.condor.collector or None), self.condor)
            if not ads:
                raise BackendError(f"htcondor: schedd {self.condor.schedd or '(any)'} is not in the collector")
            self._schedd_ad = ads[0]
        return h.Schedd(self._schedd_ad)

    def _query(self, constraint: str) -> list[Any]:
        return list(self._call("queue query", lambda s: s.query(constraint=constraint, projection=PROJECTION)))

    # -- create ------------------------------------------------------------------------------------------------
    def description(self, rec: PodRecord, pod: dict[str, Any], pod_dir: Path) -> dict[str, str]:
        """The job's resource request is the pod's: this is what makes it demand for the elastic engine."""
        want = pod_request(pod)
        desc = {
            "universe": "vanilla",
            "executable": str(pod_dir / "job.sh"),
            "initialdir": str(pod_dir),
            "output": "job.out",
            "error": "job.err",
            "should_transfer_files": "YES",
            "when_to_transfer_output": "ON_EXIT_OR_EVICT",
            "transfer_input_files": ",".join(str(pod_dir / n) for n in ("plan.json", "volumes", RUNNER_FILE)),
            "transfer_output_files": "status,logs",
            "request_cpus": str(want.slurm_cpus),
            "request_memory": str(want.slurm_mem_mb),
            "batch_name": job_name(rec),
            "My.MareaPodUid": classad_string(rec.uid),
            "My.MareaOffloadServer": classad_string(self.server_id),
            "My.WantIOProxy": "true",
        }
        if want.gpus:
            desc["request_gpus"] = str(want.gpus)
        return desc

    def create(self, req: CreateRequest, rec: PodRecord) -> None:
        pod_dir = self.pods_dir / rec.uid
        PodDirWriter(req, pod_dir).write(
            self.settings.podman, self.settings.run_options, self.settings.grace_s, self.settings.network, self.policy
        )
        (pod_dir / "volumes").mkdir(exist_ok=True)
        shutil.copyfile(runner_module.__file__, pod_dir / RUNNER_FILE)
        script = pod_dir / "job.sh"
        script.write_text(JOB_SCRIPT.replace("@PYTHON@", self.python).replace("@RUNNER@", RUNNER_FILE))
        script.chmod(0o700)
        desc = self.description(rec, req.pod, pod_dir)
        rec.objects = {"dir": str(pod_dir)}

        def submit(schedd: Any) -> str:
            result = schedd.submit(self.htcondor.Submit(desc), spool=True)
            cluster = int(result.cluster())
            try:
                schedd.spool(result)
            except Exception:
                with contextlib.suppress(Exception):  # a job without its input files must not linger
                    schedd.act(self.htcondor.JobAction.Remove, f"{cluster}.0")
                raise
            return f"{cluster}.0"

        rec.jid = self._call("submit", submit)

    # -- delete ------------------------------------------------------------------------------------------------
    def delete(self, rec: PodRecord) -> None:
        if rec.jid:
            remove = self.htcondor.JobAction.Remove
            with contextlib.suppress(BackendError):  # already gone
                self._call(f"removal of job {rec.jid}", lambda s: s.act(remove, rec.jid, reason="pod deleted"))
            deadline = time.monotonic() + self.settings.grace_s + 30
            while time.monotonic() < deadline and self.job_in_queue(rec.jid):
                time.sleep(0.5)
        remove_dir(self.pod_dir(rec))
        self.forget(rec)

    def job_in_queue(self, jid: str) -> bool:
        try:
            return bool(self._query(self.job_constraint(jid)))
        except BackendError:
            return False

    @staticmethod
    def job_constraint(jid: str) -> str:
        cluster, _, proc = jid.partition(".")
        return f"ClusterId == {int(cluster)} && ProcId == {int(proc or 0)}"

    # -- status ------------------------------------------------------------------------------------------------
    def jobs(self) -> dict[str, dict[str, Any]]:
        """One schedd query for every job of this server."""
        constraint = f"MareaOffloadServer == {classad_string(self.server_id)}"
        ads = self._query(constraint)
        return {f"{ad['ClusterId']}.{ad['ProcId']}": {k: ad.get(k) for k in PROJECTION} for ad in ads}

    def chirped(self, rec: PodRecord, job: dict[str, Any] | None) -> PodStatuses:
        """Per-container states the runner reported into the job ad; ContainerCreating before its first."""
        states: dict[str, Any] = {}
        raw = job.get("MareaContainers") if job else None
        if isinstance(raw, str):
            with contextlib.suppress(ValueError):
                doc = json.loads(raw)
                states = doc if isinstance(doc, dict) else {}
        out = PodStatuses()
        for kind, target in (("init", out.init), ("containers", out.containers)):
            for name, image in rec.containers.get(kind, []):
                state = states.get(name)
                target.append(
                    container_status(
                        name, image, state if isinstance(state, dict) else {"waiting": {"reason": "ContainerCreating"}}
                    )
                )
        return out

    def retrieve(self, rec: PodRecord) -> bool:
        """Bring the completed job's `status/` and `logs/` from the spool into the pod directory (once: a pod
        whose output is back is final and never refreshed again)."""
        try:
            self._call(f"output retrieval of job {rec.jid}", lambda s: s.retrieve(self.job_constraint(rec.jid)))
        except BackendError as exc:
            log.warning("%s", exc)
            return False
        return True

    def completed(self, rec: PodRecord, job: dict[str, Any]) -> PodStatuses:
        """The final statuses: the runner's files (retrieved), else what it chirped; whatever it did not
        finish (the job ended before the runner did: no python3 or podman on the worker...) is terminated."""
        pod_dir = self.pod_dir(rec)
        st = statuses_from_files(rec, pod_dir, {"waiting": {"reason": "ContainerCreating"}})
        if not all("terminated" in c["state"] for c in [*st.init, *st.containers]):
            chirped = self.chirped(rec, job)
            st = PodStatuses(
                init=[a if "terminated" in a["state"] else b for a, b in zip(st.init, chirped.init, strict=True)],
                containers=[
                    a if "terminated" in a["state"] else b
                    for a, b in zip(st.containers, chirped.containers, strict=True)
                ],
            )
        code = job.get("ExitCode")
        message = f"HTCondor job {rec.jid} ended with exit code {code} before the pod finished; see job.err"
        return lose_unfinished(st, "JobFailed", message)

    def refresh(self, recs: list[PodRecord]) -> dict[str, PodStatuses]:
        out, todo = self.split_final(recs)
        todo = [r for r in todo if r.jid]
        if not todo:
            return out
        jobs = self.jobs()
        now = time.monotonic()
        for rec in todo:
            job = jobs.get(rec.jid)
            status = job.get("JobStatus") if job else None
            if job is not None:
                self.missing_since.pop(rec.uid, None)
            if status == IDLE:
                why = job.get("LastRejMatchReason") if job else None
                detail = f": {why}" if isinstance(why, str) and why else ""
                out[rec.uid] = waiting_pod(rec, "JobPending", f"HTCondor job {rec.jid} idle{detail}")
            elif status == HELD and job is not None and job.get("HoldReasonCode") == SPOOLING_INPUT:
                out[rec.uid] = waiting_pod(rec, "JobPending", f"HTCondor job {rec.jid}: spooling its input files")
            elif status == HELD:
                reason = str(job.get("HoldReason") or "") if job else ""
                out[rec.uid] = waiting_pod(rec, "JobHeld", f"HTCondor job {rec.jid} held: {reason}"[:500])
            elif status in (RUNNING, TRANSFERRING_OUTPUT, SUSPENDED):
                out[rec.uid] = self.chirped(rec, job)
            elif status == COMPLETED and job is not None:
                if self.retrieve(rec):
                    self.final[rec.uid] = self.completed(rec, job)
                    out[rec.uid] = self.final[rec.uid]
                else:  # retried at the next refresh; meanwhile the chirped states
                    out[rec.uid] = self.chirped(rec, job)
            elif status == REMOVED:
                st = lose_unfinished(self.chirped(rec, job), "JobRemoved", f"HTCondor job {rec.jid} was removed")
                self.final[rec.uid] = out[rec.uid] = st
            else:  # not in the queue: removed by someone else, or the schedd lost it
                message = f"HTCondor job {rec.jid} is not in the queue any more"
                out[rec.uid] = self.missing(rec, self.chirped(rec, None), now, message)
        return out

    def logs(self, rec: PodRecord, req: LogRequest, finished: Callable[[], bool]) -> AsyncIterator[bytes]:
        """The runner's log file, once the job's output is back. A container that has terminated (as chirped)
        while the output is on its way is waited for, so that its logs are complete, not empty."""
        pod_dir = self.pod_dir(rec)

        def back() -> bool:
            return rec.uid in self.final

        if req.follow:
            return container_log(rec, pod_dir, req, lambda: finished() and back())
        read = container_log(rec, pod_dir, req, finished)  # raises now for a container the pod does not have

        async def once() -> AsyncIterator[bytes]:
            deadline = time.monotonic() + OUTPUT_WAIT_S
            while finished() and not back() and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            async for chunk in read:
                yield chunk

        return once()

    def adopt(self, recs: list[PodRecord]) -> list[PodRecord]:
        """At start: a create cut short (no job id stored) may still have queued a job: find it by its pod uid
        and remove it with the rest of the pod."""
        gone = [r for r in recs if r.phase != "created"]
        for rec in gone:
            if not rec.jid:
                constraint = f"MareaPodUid == {classad_string(rec.uid)}"
                with contextlib.suppress(BackendError):
                    for ad in self._query(constraint):
                        rec.jid = f"{ad['ClusterId']}.{ad['ProcId']}"
            self.delete(rec)
        return gone

    def close(self) -> None:
        self.runner.close()
