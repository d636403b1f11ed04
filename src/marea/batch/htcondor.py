"""HTCondor through the official Python bindings (PyPI `htcondor`: `htcondor2` and `classad2`).

Demand is read from the schedd: idle jobs, their RequestCpus / RequestMemory / RequestGPUs / RequestDisk
evaluated (they may be expressions), grouped by shape. A job whose Requirements no configured flavour could
ever satisfy (evaluated against a template machine ad per flavour) is reported as unsatisfiable and never
boots a VM: elastiq counted every idle job and booted, idled and killed VMs for such jobs forever.

Workers are read from the collector: one per startd, keyed by the name marea gave the VM (the `MareaWorker`
attribute its user-data advertises) or by the startd's name, never by `Machine`. Scale-down drains
gracefully (`Startd.drainJobs(DrainType.Graceful)`, as `condor_drain -graceful`): running jobs finish,
nothing new starts; removal is accepted only once every slot is Drained/Idle, and then the worker's daemons
are switched off so its ads leave the collector at once. A worker whose ads are gone, or no longer
refreshed, is not waited on.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from marea.batch.base import BatchError, BatchSnapshot, BatchSystem, Worker
from marea.batch.htcondor_ads import WORKER_ATTR, Matcher, demand_from_jobs, startd_key, workers_from_slots
from marea.batch.htcondor_bindings import classad_string, configured_bindings, schedd_ads
from marea.batch.htcondor_netns import NamespaceRunner
from marea.batch.htcondor_tokens import WorkerTokens
from marea.config import HTCondorSection
from marea.model import Flavour

log = logging.getLogger(__name__)

#: the slot attributes a snapshot needs (projections keep collector answers small on big pools)
SLOT_PROJECTION = [
    "MyType", "Name", WORKER_ATTR, "SlotType", "State", "Activity", "Cpus", "Memory", "GPUs",
    "TotalSlotCpus", "TotalSlotMemory", "TotalSlotGPUs", "Draining", "ChildState", "StartdIpAddr",
    "MyAddress", "LastHeardFrom", "EnteredCurrentActivity",
]  # fmt: skip


#: keeps the autocluster ids of several schedds apart
_AC_STRIDE = 1 << 40
#: the job attributes needed when the job's autocluster gives the rest
JOB_PROJECTION = ["ClusterId", "ProcId", "JobStatus", "QDate", "AutoClusterId"]
#: what the queue watch reads of each idle job: its id, nothing else
ID_PROJECTION = ["ClusterId", "ProcId"]


_MACHINE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")


def drain_with_tool(machine: str, reason: str) -> str | None:
    """A graceful drain through `condor_drain`, when the bindings' own request was refused; None if not possible.

    Why: on pools secured with IDTOKENS (the cluster maker's), a worker cannot check a token, since only the
    central manager holds the pool's signing key. `condor_drain` authenticates to the worker with the
    remote-administration session that the collector hands to an administrator; the Python bindings (25.x) do
    not use it, so their drain is refused. The machine name is checked before it becomes an argument.
    """
    tool = shutil.which("condor_drain")
    if tool is None or not _MACHINE_RE.match(machine):
        return None
    try:
        done = subprocess.run(
            [tool, "-graceful", "-reason", reason[:200], machine], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return "condor_drain" if done.returncode == 0 else None


class HTCondorBatch(BatchSystem):
    name = "htcondor"

    def __init__(self, cfg: HTCondorSection, clock: Any = None) -> None:
        import time

        self.cfg = cfg
        self.clock = clock or time.time
        self.htcondor = configured_bindings(cfg)
        self.runner = NamespaceRunner(cfg.netns)
        self.tokens = (
            WorkerTokens(cfg.token_command, Path(cfg.token_registry), Path(cfg.revocation_file), cfg.reconfig_command)
            if cfg.token_command
            else None
        )
        self._matcher: Matcher | None = None
        self._matcher_key: tuple[Any, ...] = ()
        self._drains_sent: dict[str, str] = {}
        #: the schedd ads the last snapshot found: the queue watch asks them directly, not the collector first
        self._schedds: list[Any] | None = None

    # -- bindings helpers (always called through self.runner) ----------------------------------------------
    def _collector(self) -> Any:
        return self.htcondor.Collector(self.cfg.collector or None)

    def _call(self, what: str, fn: Any) -> Any:
        """Run `fn` in the right namespace; HTCondor's exceptions become a short BatchError."""
        try:
            return self.runner.run(fn)
        except BatchError:
            raise
        except Exception as exc:  # HTCondorException, ClassAdException, OSError from the bindings
            raise BatchError(f"htcondor: {what} failed: {str(exc).strip()[:300]}") from None

    def _schedd_ads(self, coll: Any) -> list[Any]:
        return schedd_ads(self.htcondor, coll, self.cfg)

    def _worker_slots(self, coll: Any, worker: str) -> list[Any]:
        """Full slot ads of one worker (full: Startd(ad) needs the address attributes)."""
        by_name = classad_string("@" + _regex_escape(worker) + "([.][^@]*)?$")
        constraint = f"{WORKER_ATTR} == {classad_string(worker)} || regexp({by_name}, Name)"
        slots = coll.query(self.htcondor.AdType.Startd, constraint=constraint)
        return [s for s in slots if startd_key(s) == worker]

    # -- the interface -------------------------------------------------------------------------------------
    def matcher(self, flavours: tuple[Flavour, ...], pool: dict[str, str] | None = None) -> Matcher:
        """The template machine ads: HTCondor's version as the pool runs it (jobs submitted by recent tools
        test TARGET.CondorVersion), overridden by the admin's `machine_attributes`."""
        attributes = {**(pool or {}), **self.cfg.machine_attributes}
        key = (flavours, tuple(sorted(attributes.items())))
        if self._matcher is None or self._matcher_key != key:
            disk_kb = self.cfg.worker_disk_gb * 1024 * 1024
            self._matcher = Matcher(flavours, attributes, disk_kb)
            self._matcher_key = key
        return self._matcher

    def snapshot(self, flavours: tuple[Flavour, ...]) -> BatchSnapshot:
        htcondor = self.htcondor
        job_constraint = self._idle_constraint()

        def read() -> tuple[list[Any], list[Any], list[str], dict[str, str], dict[int, Any]]:
            coll = self._collector()
            jobs: list[Any] = []
            autoclusters: dict[int, Any] = {}
            pool: dict[str, str] = {}
            schedds = self._schedd_ads(coll)
            self._schedds = schedds
            for n, ad in enumerate(schedds):
                if isinstance(ad.get("CondorVersion"), str):
                    pool.setdefault("CondorVersion", classad_string(ad["CondorVersion"]))
                schedd = htcondor.Schedd(ad)
                light, full = self._idle_jobs(schedd, job_constraint, n * _AC_STRIDE)
                jobs.extend(light)
                autoclusters.update(full)
            # every running job (of any user) keeps its worker busy, whatever the collector says yet
            running = self._running_on(coll)
            slots = list(coll.query(htcondor.AdType.Startd, projection=SLOT_PROJECTION))
            return jobs, slots, running, pool, autoclusters

        jobs, slots, running, pool, autoclusters = self._call("reading the queue and the pool", read)
        demand = demand_from_jobs(jobs, self.matcher(flavours, pool), autoclusters)
        workers = workers_from_slots(slots, self.clock(), self.cfg.lost_after_s, running)
        return BatchSnapshot(demand.groups, demand.unsatisfiable, workers, demand.queued)

    def _idle_constraint(self) -> str:
        """Idle jobs that are demand: JobStatus 1 and the admin's `job_constraint` (config, never job data)."""
        return f"JobStatus == 1 && ({self.cfg.job_constraint})"

    def pending_jobs(self) -> frozenset[str] | None:
        """The ids of the idle jobs that are demand, for the queue watch: one query per schedd, the snapshot's
        constraint projected to ClusterId and ProcId (the schedd sends two integers per job, no autocluster
        samples, no collector query: the schedd ads are the last snapshot's, looked up again after a failure).
        A running, held or removed job is not idle (JobStatus 2, 5, 3), so it is not pending. The ids are
        `schedd name#cluster.proc`, so that two schedds' job 1.0 stay two jobs."""
        htcondor, constraint = self.htcondor, self._idle_constraint()

        def read() -> frozenset[str]:
            if self._schedds is None:
                self._schedds = self._schedd_ads(self._collector())
            ids = set()
            for ad in self._schedds:
                name = ad.get("Name")
                for job in htcondor.Schedd(ad).query(constraint=constraint, projection=ID_PROJECTION):
                    ids.add(f"{name}#{job.get('ClusterId')}.{job.get('ProcId')}")
            return frozenset(ids)

        try:
            ids: frozenset[str] = self._call("reading the idle job ids", read)
            return ids
        except BatchError:
            self._schedds = None  # the schedd may have moved (restarted on another port): ask the collector again
            raise

    def drain(self, worker: str, reason: str) -> None:
        htcondor = self.htcondor

        def send() -> str:
            slots = self._worker_slots(self._collector(), worker)
            if not slots:
                return "absent from the collector: nothing to drain"
            if any(s.get("Draining") is True or s.get("State") == "Drained" for s in slots):
                return "already draining"
            try:
                startd = htcondor.Startd(slots[0])
                request = startd.drainJobs(htcondor.DrainType.Graceful, reason=reason[:200])
            except Exception:
                # The startd refuses a second drain ("Draining already in progress") and the bindings do not
                # say why; the collector may not show the first one yet (it lags by up to UPDATE_INTERVAL).
                if worker in self._drains_sent:
                    return "already draining (sent earlier)"
                request = drain_with_tool(str(slots[0].get("Machine") or ""), reason)
                if request is None:
                    raise
            self._drains_sent[worker] = str(request)
            return f"graceful drain sent (request {request})"

        outcome = self._call(f"drain of {worker}", send)
        log.info("htcondor: %s: %s (%s)", worker, outcome, reason)

    def resume(self, worker: str) -> None:
        htcondor = self.htcondor

        def cancel() -> str:
            slots = self._worker_slots(self._collector(), worker)
            if not slots:
                return "absent from the collector: nothing to resume"
            # every drain of this startd (no request id: the one marea sent, or one sent before a restart)
            htcondor.Startd(slots[0]).cancelDrainJobs()
            self._drains_sent.pop(worker, None)
            return "drain cancelled"

        outcome = self._call(f"resume of {worker}", cancel)
        log.info("htcondor: %s: %s", worker, outcome)

    def remove(self, worker: str) -> bool:
        now = self.clock()

        def check() -> bool:
            coll = self._collector()
            slots = self._worker_slots(coll, worker)
            if not slots:
                return True  # never joined, or already gone from the collector
            state = workers_from_slots(slots, now, self.cfg.lost_after_s, self._running_on(coll))[worker]
            if state.lost:
                log.warning("htcondor: %s is lost (silent for %.0f s): removing", worker, self.cfg.lost_after_s)
                return True
            if not state.drained:
                return False
            self._switch_off(coll, worker)
            return True

        removed = bool(self._call(f"removal of {worker}", check))
        if removed and self.tokens is not None:
            self.tokens.revoke(worker)  # gone from the pool: its token must not bring anything back
        return removed

    def _idle_jobs(self, schedd: Any, constraint: str, offset: int) -> tuple[list[Any], dict[int, Any]]:
        """Idle jobs as small ads, plus one full ad per autocluster (and full ads of the jobs the schedd has
        not put in an autocluster yet): the queue's size costs ids, not whole job ads. Autocluster ids are
        per schedd: `offset` keeps those of several schedds apart (rewritten in the small ads, ours alone)."""
        light = list(schedd.query(constraint=constraint, projection=JOB_PROJECTION))
        full: dict[int, Any] = {}
        for ac in sorted({j["AutoClusterId"] for j in light if isinstance(j.get("AutoClusterId"), int)}):
            sample = schedd.query(constraint=f"({constraint}) && AutoClusterId == {ac}", limit=1)
            if sample:
                full[ac] = sample[0]
        clustered = [j for j in light if j.get("AutoClusterId") in full]
        if len(clustered) < len(light):
            wanted = {(j.get("ClusterId"), j.get("ProcId")) for j in light if j.get("AutoClusterId") not in full}
            more = schedd.query(constraint=f"({constraint}) && AutoClusterId =?= undefined")
            clustered += [j for j in more if (j.get("ClusterId"), j.get("ProcId")) in wanted]
        if offset:
            for j in clustered:
                if j.get("AutoClusterId") in full:
                    j["AutoClusterId"] = j["AutoClusterId"] + offset
            full = {ac + offset: ad for ac, ad in full.items()}
        return clustered, full

    def _running_on(self, coll: Any) -> list[str]:
        """RemoteHost of every running job the schedd(s) know: fresher than the collector's slot ads."""
        hosts = []
        for ad in self._schedd_ads(coll):
            for job in self.htcondor.Schedd(ad).query(constraint="JobStatus == 2", projection=["RemoteHost"]):
                if isinstance(job.get("RemoteHost"), str):
                    hosts.append(job["RemoteHost"])
        return hosts

    def _switch_off(self, coll: Any, worker: str) -> None:
        """Stop the drained worker's daemons, so that its ads leave the collector now rather than after
        CLASSAD_LIFETIME; best effort, because the VM is deleted next anyway."""
        htcondor = self.htcondor
        constraint = f"{WORKER_ATTR} == {classad_string(worker)}"
        try:
            for master in coll.query(htcondor.AdType.Master, constraint=constraint):
                htcondor.send_command(master, htcondor.DaemonCommand.DaemonsOffPeaceful)
        except Exception as exc:
            log.info("htcondor: %s: daemons not switched off (%s); the VM is deleted anyway", worker, exc)

    def join_variables(self, worker: str) -> dict[str, str]:
        """The collector and the IDTOKEN, for the worker user-data (the token is a secret: never logged): the
        worker's own when `token_command` is set, else the pool-wide one of `token_file`."""
        variables = {"MAREA_CONDOR_HOST": self.cfg.collector or self._param("COLLECTOR_HOST")}
        if self.tokens is not None:
            variables["MAREA_CONDOR_IDTOKEN"] = self.tokens.mint(worker)
        elif self.cfg.token_file:
            try:
                variables["MAREA_CONDOR_IDTOKEN"] = Path(self.cfg.token_file).read_text().strip()
            except OSError as exc:
                what = f"htcondor: cannot read token_file {self.cfg.token_file}"
                raise BatchError(f"{what}: {exc.strerror}") from None
        return variables

    def _param(self, name: str) -> str:
        try:
            return str(self.htcondor.param[name])
        except KeyError:
            return ""

    def close(self) -> None:
        self.runner.close()


def _regex_escape(value: str) -> str:
    return "".join("\\" + c if c in r".^$*+?()[]{}|\\" else c for c in value)


__all__ = ["HTCondorBatch", "Worker"]
