"""Slurm through its machine-readable commands: `squeue --json`, `sinfo --json`, `scontrol update|delete`.

Workers are Slurm dynamic nodes (`slurmd -Z`, Slurm >= 22.05): a new VM registers itself with the running
slurmctld under the name marea gave it and with the feature `feature`; the partition's Nodeset selects nodes
by that feature. Nothing in slurm.conf lists the workers, so Slurm's power saving plays no part: marea's policy
alone decides when and what to boot. Removal is drain (`state=DRAIN`: running jobs finish, nothing new starts),
then `scontrol delete nodename=...`, which slurmctld refuses while a job still runs there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections import Counter
from typing import Any

from marea.batch.base import BatchError, BatchSnapshot, BatchSystem, Worker
from marea.config import SlurmSection
from marea.model import DemandGroup, Flavour, Resources

#: pending reasons that mean "waiting for resources": such a job is demand. Others (Dependency, held jobs,
#: BeginTime, limits of associations or QOS) would not start on a new worker either, so they are not.
DEMAND_REASONS = frozenset(
    {"None", "Resources", "Priority", "PartitionConfig", "ReqNodeNotAvail", "NodeDown", "Nodes_required"}
)
#: after `scontrol update state=RESUME` slurmctld flags the node NOT_RESPONDING and pings it at once (sinfo shows
#: "idle*" until the answer, and nothing is scheduled there meanwhile). For this long after the driver's own resume,
#: that flag alone does not make the node lost: a lost worker has no free room for the policy, which would boot a
#: VM for the very work the resume was for (seen on the Slurm testbed, tests/slurm/test_resume_crash.py).
#: DOWN and FAIL still do; a node that stays unresponsive is lost once the window ends.
RESUME_PING_S = 30.0
_GPU_RE = re.compile(r"gpu(?::[^:,]+)?:(\d+)")


def _int(value: Any, default: int = 0) -> int:
    """Slurm 22.05 JSON gives plain numbers; later versions give {"set":..,"number":..}: accept both."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return default
        value = value.get("number", default)
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _gpus(tres: str) -> int:
    m = _GPU_RE.search(tres or "")
    return int(m.group(1)) if m else 0


def job_node_request(job: dict[str, Any]) -> tuple[Resources, int]:
    """What one node of a pending job needs, and how many such nodes: (per-node request, node count)."""
    nodes = max(1, _int(job.get("node_count"), 1))
    cpus = max(1, _int(job.get("cpus"), 1))
    per_node_cpus = -(-cpus // nodes)
    mem = _int(job.get("memory_per_node"))
    if mem <= 0:
        per_cpu = _int(job.get("memory_per_cpu"))
        mem = per_cpu * per_node_cpus if per_cpu > 0 else 0
    gpus = _gpus(str(job.get("tres_per_node") or "")) or _gpus(str(job.get("tres_per_job") or "")) // nodes
    return Resources(float(per_node_cpus), float(mem), gpus), nodes


_ARRAY_RANGE = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


def array_tasks(job: dict[str, Any]) -> int:
    """How many tasks a pending record stands for: Slurm lists the pending tasks of a job array as one record
    (`array_task_string` "1-6", "2-5%3", "1,3,7-9:2"); at most `%N` of them run at once."""
    text = str(job.get("array_task_string") or "")
    if not text:
        return 1
    spec, _, throttle = text.partition("%")
    count = 0
    for part in spec.split(","):
        m = _ARRAY_RANGE.match(part.strip())
        if not m:
            return 1  # a form this parser does not know: count the record once, as before
        first, last, step = int(m.group(1)), int(m.group(2) or m.group(1)), int(m.group(3) or 1)
        count += len(range(first, last + 1, max(1, step)))
    limit = _int(job.get("array_max_tasks")) or (int(throttle) if throttle.isdigit() else 0)
    return max(1, min(count, limit) if limit > 0 else count)


def _partitions(job: dict[str, Any]) -> set[str]:
    return {p for p in str(job.get("partition") or "").split(",") if p}


def parse_demand(squeue: dict[str, Any], partition: str) -> tuple[tuple[DemandGroup, ...], int]:
    """Group the pending jobs of `partition` that wait for resources into shapes; also count them."""
    shapes: Counter[Resources] = Counter()
    oldest: dict[Resources, float] = {}
    queued = 0
    for job in squeue.get("jobs", []):
        state = job.get("job_state", "")
        states = {str(x).upper() for x in state} if isinstance(state, list) else {str(state).upper()}
        if "PENDING" not in states or partition not in _partitions(job):
            continue
        queued += array_tasks(job)
        if str(job.get("state_reason", "None")) not in DEMAND_REASONS:
            continue
        # Slurm reports PartitionConfig before Dependency or a hold while no node exists: look at both.
        if job.get("dependency") or _int(job.get("priority"), 1) == 0:
            continue
        request, nodes = job_node_request(job)
        shapes[request] += nodes * array_tasks(job)
        submit = float(_int(job.get("submit_time")))
        oldest[request] = min(oldest.get(request, submit), submit)
    groups = tuple(DemandGroup(r, n, "", oldest.get(r)) for r, n in shapes.items())
    return groups, queued


def _node_states(node: dict[str, Any]) -> tuple[str, set[str]]:
    state = node.get("state", "")
    if isinstance(state, list):  # later Slurm versions: a list of flags including the base state
        flags = {str(s).upper() for s in state}
        base = next((s for s in flags if s in {"IDLE", "MIXED", "ALLOCATED", "DOWN", "FUTURE", "UNKNOWN"}), "")
        return base, flags
    flags = {str(f).upper() for f in node.get("state_flags", [])}
    return str(state).upper().rstrip("*"), flags


def parse_workers(
    sinfo: dict[str, Any], feature: str, awaiting_ping: frozenset[str] = frozenset()
) -> dict[str, Worker]:
    """The nodes carrying `feature` (marea's workers), with free resources and drain state. Nodes in
    `awaiting_ping` were just resumed: NOT_RESPONDING alone is slurmctld's ping after the resume, not a loss."""
    workers: dict[str, Worker] = {}
    for node in sinfo.get("nodes", []):
        listed = node.get("active_features") or node.get("features") or ""
        if isinstance(listed, list):  # Slurm 24.11: a list of features
            listed = ",".join(str(f) for f in listed)
        features = set(re.split(r"[,&|]", str(listed)))
        if feature not in features:
            continue
        base, flags = _node_states(node)
        cpus = _int(node.get("cpus"))
        alloc_cpus = _int(node.get("alloc_cpus"))
        mem = _int(node.get("real_memory"))
        alloc_mem = _int(node.get("alloc_memory"))
        gpus = _gpus(str(node.get("gres") or ""))
        gpus_used = _gpus(str(node.get("gres_used") or ""))
        busy = alloc_cpus > 0 or base in {"MIXED", "ALLOCATED"} or "COMPLETING" in flags
        draining = "DRAIN" in flags
        name = str(node.get("name"))
        no_response = "NOT_RESPONDING" in flags and name not in awaiting_ping
        lost = base == "DOWN" or bool(flags & {"DOWN", "FAIL"}) or no_response
        workers[name] = Worker(
            name=name,
            total=Resources(float(cpus), float(mem), gpus),
            free=Resources(float(max(0, cpus - alloc_cpus)), float(max(0, mem - alloc_mem)), max(0, gpus - gpus_used)),
            busy=busy,
            draining=draining,
            drained=draining and not busy,
            lost=lost,
            address=str(node.get("address")) if node.get("address") else None,
        )
    return workers


class SlurmBatch(BatchSystem):
    """A Slurm cluster reached through its client commands (on the master, or through a prefix)."""

    name = "slurm"

    def __init__(self, section: SlurmSection) -> None:
        self.section = section
        self.env = dict(os.environ)
        if section.slurm_conf:
            self.env["SLURM_CONF"] = section.slurm_conf
        #: nodes this driver resumed, and when (time.monotonic()): see RESUME_PING_S
        self._resumed: dict[str, float] = {}

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [*self.section.command_prefix, *args]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=self.env, timeout=self.section.command_timeout_s
            )
        except FileNotFoundError:
            raise BatchError(f"slurm: command not found: {cmd[0]}") from None
        except subprocess.TimeoutExpired:
            raise BatchError(f"slurm: {args[0]} timed out after {self.section.command_timeout_s:g} s") from None
        if check and proc.returncode != 0:
            raise BatchError(f"slurm: {' '.join(args[:2])} failed: {proc.stderr.strip()[:300]}")
        return proc

    def _json(self, *args: str) -> dict[str, Any]:
        out = self._run(*args).stdout
        try:
            data: dict[str, Any] = json.loads(out)
        except json.JSONDecodeError:
            raise BatchError(f"slurm: {args[0]} did not return JSON") from None
        return data

    def snapshot(self, flavours: tuple[Flavour, ...]) -> BatchSnapshot:
        squeue = self._json("squeue", "--json", "--states=PENDING")
        nodes = self._json("sinfo", "--json")
        if "nodes" not in nodes:
            # Slurm >= 23.02 groups `sinfo --json` into "sinfo" records; per-node data comes from scontrol,
            # which has --json there (22.05 has neither the grouping nor scontrol --json)
            nodes = self._json("scontrol", "show", "nodes", "--json")
        demand, queued = parse_demand(squeue, self.section.partition)
        workers = parse_workers(nodes, self.section.feature)
        if self._resumed:
            now = time.monotonic()
            # a resumed node seen responding has answered the ping: a NOT_RESPONDING from then on is a real one
            self._resumed = {n: t for n, t in self._resumed.items()
                             if now - t < RESUME_PING_S and n in workers and workers[n].lost}  # fmt: skip
            if self._resumed:
                workers = parse_workers(nodes, self.section.feature, frozenset(self._resumed))
        return BatchSnapshot(demand, (), workers, queued)

    def pending_jobs(self) -> frozenset[str] | None:
        """One light RPC: pending jobs of the partition, job ids only (no JSON, no node table)."""
        out = self._run("squeue", "--noheader", "--states=PENDING", f"--partition={self.section.partition}",
                        "--format=%i").stdout  # fmt: skip
        return frozenset(line.strip() for line in out.splitlines() if line.strip())

    def drain(self, worker: str, reason: str) -> None:
        self._run("scontrol", "update", f"nodename={worker}", "state=DRAIN", f"reason=marea: {reason[:200]}")

    def resume(self, worker: str) -> None:
        proc = self._run("scontrol", "update", f"nodename={worker}", "state=RESUME", check=False)
        text = proc.stderr.lower()
        # slurmctld answers "Invalid node state specified" for a node that is not drained: nothing to undo
        if proc.returncode != 0 and "invalid node state" not in text and "not drained" not in text:
            raise BatchError(
                f"slurm: scontrol update nodename={worker} state=RESUME failed: {proc.stderr.strip()[:300]}"
            )
        if proc.returncode == 0:
            self._resumed[worker] = time.monotonic()

    def remove(self, worker: str) -> bool:
        proc = self._run("scontrol", "delete", f"nodename={worker}", check=False)
        if proc.returncode == 0:
            return True
        text = proc.stderr.lower()
        if "invalid node name" in text or "not found" in text:
            return True
        if "busy" in text:
            return False
        raise BatchError(f"slurm: scontrol delete nodename={worker} failed: {proc.stderr.strip()[:300]}")

    def join_variables(self, worker: str) -> dict[str, str]:
        return {
            "MAREA_SLURM_CONF": self.section.slurm_conf or "/etc/slurm/slurm.conf",
            "MAREA_SLURM_FEATURE": self.section.feature,
            "MAREA_SLURM_PARTITION": self.section.partition,
        }
