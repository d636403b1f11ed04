"""Reading HTCondor ClassAds: job requests, flavour templates, workers. Pure: no daemon is contacted here.

Why a separate module: the same functions serve the live plugin (ads from the PyPI `htcondor2` bindings)
and the tests over recorded outputs of other HTCondor versions (`condor_q -json`, `condor_status -long`), so
marea is not tied to the 23.9 pool it is tested on. Values are evaluated with `classad2`, never parsed as
text: RequestMemory and RequestDisk are often expressions, and Requirements always are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import classad2

from marea.batch.base import HTCONDOR_WORKER_ATTR, Worker
from marea.model import DemandGroup, Flavour, Resources, Unsatisfiable

#: JobStatus values (HTCondor manual): 1 idle, 2 running, 3 removed, 4 completed, 5 held, 6 transferring
#: output, 7 suspended. Only idle jobs wait for a machine; a held job would not start on a new worker either.
JOB_IDLE = 1

#: What a new worker looks like before it exists, for evaluating jobs' Requirements. Admins add their pool's
#: own attributes (FileSystemDomain, UidDomain, OpSysAndVer, HasSingularity...) in
#: `[batch.htcondor] machine_attributes`; an attribute missing here is undefined, and a job that requires it
#: is reported as unsatisfiable rather than booting VMs that would never run it.
DEFAULT_MACHINE_ATTRIBUTES: dict[str, str] = {
    "Arch": '"X86_64"',
    "OpSys": '"LINUX"',
    "HasFileTransfer": "true",
    "SlotType": '"Partitionable"',
    "PartitionableSlot": "true",
    "State": '"Unclaimed"',
    "Activity": '"Idle"',
    "Start": "true",
}

_EXPR_RE = re.compile(r"^/Expr\((.*)\)/$", re.DOTALL)
_IP_RE = re.compile(r"^[0-9.]+$|^[0-9a-fA-F]*:[0-9a-fA-F:]*$")


# -- loading recorded outputs ------------------------------------------------------------------------------
def _json_value(value: Any) -> Any:
    if isinstance(value, str):
        m = _EXPR_RE.match(value)
        return classad2.ExprTree(m.group(1)) if m else value
    if isinstance(value, dict):
        return ad_from_json(value)
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def ad_from_json(obj: Mapping[str, Any]) -> classad2.ClassAd:
    """One object of `condor_q -json` / `condor_status -json`: `"/Expr(...)/"` strings become expressions,
    `null` (undefined) is left out."""
    ad = classad2.ClassAd()
    for key, value in obj.items():
        if value is not None:
            ad[key] = _json_value(value)
    return ad


def load_ads(text: str) -> list[classad2.ClassAd]:
    """Ads from the text of `-json` (a JSON array) or `-long` (blank-line separated `Attr = value` lines)."""
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        data = json.loads(stripped)
        return [ad_from_json(o) for o in (data if isinstance(data, list) else [data])]
    return list(classad2.parseAds(text, classad2.ParserType.Old))


# -- evaluation helpers ------------------------------------------------------------------------------------
def _number(ad: classad2.ClassAd, attr: str, default: float) -> float:
    """An attribute evaluated in the ad's own scope; undefined, errors and non-numbers give `default`."""
    if attr not in ad:
        return default
    try:
        value = ad.eval(attr)
    except Exception:  # classad2 raises on evaluation errors of malformed expressions
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def _text(ad: classad2.ClassAd, attr: str) -> str | None:
    try:
        value = ad.eval(attr) if attr in ad else None
    except Exception:
        return None
    return value if isinstance(value, str) else None


def _true(ad: classad2.ClassAd, attr: str) -> bool:
    try:
        return attr in ad and ad.eval(attr) is True
    except Exception:
        return False


def job_id(job: classad2.ClassAd) -> str:
    return f"{int(_number(job, 'ClusterId', 0))}.{int(_number(job, 'ProcId', 0))}"


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What one job asks of a slot: cores, memory (MiB) and GPUs for the planner, disk (KiB) for matching."""

    resources: Resources
    disk_kb: float


def job_request(job: classad2.ClassAd) -> JobRequest:
    """RequestCpus (default 1), RequestMemory (MiB), RequestGPUs and RequestDisk (KiB), evaluated."""
    cores = max(0.0, _number(job, "RequestCpus", 1.0))
    memory = max(0.0, _number(job, "RequestMemory", 0.0))
    gpus = max(0, round(_number(job, "RequestGPUs", 0.0)))
    disk = max(0.0, _number(job, "RequestDisk", 0.0))
    return JobRequest(Resources(cores, memory, gpus), disk)


def flavour_machine_ad(flavour: Flavour, attributes: Mapping[str, str], disk_kb: float) -> classad2.ClassAd:
    """The partitionable slot a new VM of `flavour` would advertise, as far as matching is concerned."""
    ad = classad2.ClassAd()
    for key, expr in {**DEFAULT_MACHINE_ATTRIBUTES, **attributes}.items():
        ad[key] = classad2.ExprTree(expr)
    for prefix in ("", "Total", "TotalSlot", "Detected"):
        ad[f"{prefix}Cpus"] = flavour.cores
        ad[f"{prefix}Memory"] = flavour.memory_mb
        ad[f"{prefix}GPUs"] = flavour.gpus
    ad["Disk"] = int(disk_kb)
    ad["TotalDisk"] = int(disk_kb)
    ad["TotalSlotDisk"] = int(disk_kb)
    return ad


def _conjuncts(expr: str) -> list[str]:
    """Top-level `&&` clauses of an expression (for a readable reason), with outer parentheses removed."""
    parts, depth, start, i, quote = [], 0, 0, 0, False
    while i < len(expr):
        c = expr[i]
        if c == '"' and (i == 0 or expr[i - 1] != "\\"):
            quote = not quote
        elif not quote:
            if c in "([{":
                depth += 1
            elif c in ")]}":
                depth -= 1
            elif depth == 0 and expr.startswith("&&", i):
                parts.append(expr[start:i])
                start = i + 2
                i += 1
        i += 1
    parts.append(expr[start:])
    out = []
    for p in parts:
        p = p.strip()
        while p.startswith("(") and p.endswith(")") and _balanced(p[1:-1]):
            p = p[1:-1].strip()
        if p:
            out.append(p)
    return out


def _balanced(s: str) -> bool:
    depth = 0
    for c in s:
        depth += c == "("
        depth -= c == ")"
        if depth < 0:
            return False
    return depth == 0


def _evaluates_true(expr: classad2.ExprTree, job: classad2.ClassAd, machine: classad2.ClassAd) -> bool:
    try:
        value = expr.eval(job, machine)
    except Exception:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and not isinstance(value, classad2.Value):
        return value != 0
    return False


class Matcher:
    """Which flavours could ever run a job: Requirements evaluated against each flavour's template ad, plus
    the request fitting the flavour. Verdicts are cached per job shape (jobs of one cluster share them)."""

    def __init__(self, flavours: Iterable[Flavour], attributes: Mapping[str, str], disk_kb: float) -> None:
        self.flavours = tuple(flavours)
        self.disk_kb = disk_kb
        self.machines = [(f, flavour_machine_ad(f, attributes, disk_kb)) for f in self.flavours]
        self._cache: dict[tuple[Any, ...], tuple[tuple[Flavour, ...], str]] = {}

    def _key(self, job: classad2.ClassAd, req: JobRequest) -> tuple[Any, ...]:
        reqs = job.get("Requirements")
        text = str(reqs) if reqs is not None else "true"
        refs: tuple[Any, ...] = ()
        if isinstance(reqs, classad2.ExprTree):
            try:
                mine = {r[3:] for r in job.externalRefs(reqs) if r[:3] == "MY."}
                names = sorted(set(job.internalRefs(reqs)) | mine)
            except Exception:
                names = []
            refs = tuple((n, str(job.get(n))) for n in names)
        return (text, req.resources, req.disk_kb, refs)

    def fitting(self, job: classad2.ClassAd, req: JobRequest) -> tuple[tuple[Flavour, ...], str]:
        """The flavours (in preference order) that could run `job`, and the reason when there is none."""
        key = self._key(job, req)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._evaluate(job, req)
            if len(self._cache) >= 50_000:  # a long-lived engine sees endless shapes: start over
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def _evaluate(self, job: classad2.ClassAd, req: JobRequest) -> tuple[tuple[Flavour, ...], str]:
        reqs = job.get("Requirements")
        if reqs is None:
            reqs = classad2.ExprTree("true")
        elif not isinstance(reqs, classad2.ExprTree):
            reqs = classad2.ExprTree(json.dumps(reqs) if isinstance(reqs, str) else str(reqs).lower())
        big_enough = [(f, m) for f, m in self.machines if req.resources.fits_in(f.resources)]
        if not big_enough:
            biggest = max(self.flavours, key=lambda f: (f.gpus, f.cores, f.memory_mb))
            largest = f"largest: {biggest.name}, {biggest.resources}"
            return (), f"asks {req.resources}, more than any flavour ({largest})"
        if req.disk_kb > self.disk_kb:
            gib = 1024 * 1024
            return (), f"asks {req.disk_kb / gib:.1f} GiB of disk, workers have {self.disk_kb / gib:.1f} GiB"
        ok = tuple(f for f, m in big_enough if _evaluates_true(reqs, job, m))
        if ok:
            return ok, ""
        clauses = _conjuncts(str(reqs))
        failing = (
            [c for c in clauses if all(not _evaluates_true(classad2.ExprTree(c), job, m) for _, m in big_enough)]
            if len(clauses) > 1
            else []
        )
        names = ", ".join(f.name for f, _ in big_enough)
        if failing:
            return (), f"Requirements clause `{failing[0]}` is not true on any flavour ({names})"
        return (), f"Requirements `{reqs}` are not true on any flavour ({names})"


@dataclass(frozen=True, slots=True)
class Demand:
    groups: tuple[DemandGroup, ...]
    unsatisfiable: tuple[Unsatisfiable, ...]
    queued: int


def demand_from_jobs(
    jobs: Iterable[classad2.ClassAd], matcher: Matcher, autoclusters: Mapping[int, classad2.ClassAd] | None = None
) -> Demand:
    """Idle jobs grouped by shape; jobs no flavour could ever run are reported, grouped by reason.

    A job whose Requirements exclude the first flavour (in the admin's order) that its request fits in, but
    accept a later one, is counted as asking for that later flavour whole: the planner then boots a VM the job
    can really run on, instead of one it would wait beside forever.

    `autoclusters` maps AutoClusterId to one full ad of that autocluster: the schedd puts in one autocluster
    the jobs whose significant attributes (requests, Requirements and what it references) are equal, so a job
    of a known autocluster needs only its id, status and QDate, and a big queue costs one small query.
    """
    shapes: dict[Resources, int] = {}
    oldest: dict[Resources, float] = {}
    unsat: dict[str, list[str]] = {}
    queued = 0
    for job in jobs:
        if int(_number(job, "JobStatus", 0)) != JOB_IDLE:
            continue
        queued += 1
        ac = job.get("AutoClusterId")
        full = autoclusters.get(ac, job) if autoclusters and isinstance(ac, int) else job
        req = job_request(full)
        fitting, reason = matcher.fitting(full, req)
        if not fitting:
            unsat.setdefault(reason, []).append(job_id(job))
            continue
        first_fit = next(f for f in matcher.flavours if req.resources.fits_in(f.resources))
        shape = req.resources if first_fit in fitting else fitting[0].resources
        shapes[shape] = shapes.get(shape, 0) + 1
        qdate = _number(job, "QDate", 0.0)
        if qdate > 0:
            oldest[shape] = min(oldest.get(shape, qdate), qdate)
    groups = tuple(DemandGroup(shape, n, "", oldest.get(shape)) for shape, n in shapes.items())
    return Demand(groups, tuple(Unsatisfiable(tuple(ids), reason) for reason, ids in unsat.items()), queued)


# -- workers -----------------------------------------------------------------------------------------------
#: the attribute the worker user-data adds to its startd and master ads: the name marea gave the VM
WORKER_ATTR = HTCONDOR_WORKER_ATTR


def startd_key(slot: classad2.ClassAd) -> str | None:
    """The worker a slot belongs to: the VM name marea gave it when the startd advertises one (marea's
    user-data does); otherwise the startd's name, the slot Name after its `slotN@`. Never `Machine`: several
    startds may share a host. A startd named only by its host's FQDN (one startd there, the default) is keyed
    by the host's first label, which is the VM name clouds give as hostname (`w1.novalocal` -> `w1`), so
    workers contextualised by older user-data (an imported elastiq.conf) are still recognised."""
    name = _text(slot, WORKER_ATTR)
    if name:
        return name
    full = _text(slot, "Name")
    if not full:
        return None
    startd = full.split("@", 1)[1] if "@" in full else full
    if "@" in startd or _IP_RE.match(startd):
        return startd
    return startd.split(".", 1)[0]


def sinful_host(sinful: str | None) -> str | None:
    """`<10.232.0.11:9618?addrs=...>` -> `10.232.0.11`."""
    if not sinful:
        return None
    m = re.match(r"<(?:\[([^\]]+)\]|([^:>]+)):\d+", sinful)
    return (m.group(1) or m.group(2)) if m else None


def _slot_resources(slot: classad2.ClassAd, prefix: str = "") -> Resources:
    return Resources(
        _number(slot, f"{prefix}Cpus", 0.0),
        _number(slot, f"{prefix}Memory", 0.0),
        int(_number(slot, f"{prefix}GPUs", 0.0)),
    )


def _child_states(slot: classad2.ClassAd) -> list[str]:
    try:
        value = slot.eval("ChildState") if "ChildState" in slot else None
    except Exception:
        return []
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def workers_from_slots(
    slots: Iterable[classad2.ClassAd], now: float, lost_after_s: float, running_on: Iterable[str] = ()
) -> dict[str, Worker]:
    """Slot ads (`condor_status`, `Collector.query(AdType.Startd)`) grouped into one Worker per startd.

    A partitionable slot gives the totals (TotalSlot*) and the free part (what it has left); its dynamic
    children, or its Child* lists when they are not queried, tell whether work runs. `drained` needs every
    slot Drained/Idle, so a slot still Retiring keeps the VM alive. A startd not heard from for `lost_after_s`
    (its ads outlive it by the collector's CLASSAD_LIFETIME) is `lost`.

    `running_on` are the RemoteHost of running jobs, from the schedd: a worker that runs one is busy even when
    its slot ads, which reach the collector up to UPDATE_INTERVAL late, still say Unclaimed. Without this a
    worker that just received its first job looks idle and may be drained under it.
    """
    by_key: dict[str, list[classad2.ClassAd]] = {}
    key_of_startd: dict[str, str] = {}  # the startd part of slot names -> worker key
    for slot in slots:
        my_type = _text(slot, "MyType")
        if my_type not in (None, "Machine"):
            continue
        key = startd_key(slot)
        if key:
            by_key.setdefault(key, []).append(slot)
            name = _text(slot, "Name") or ""
            key_of_startd[name.split("@", 1)[-1]] = key
    busy_by_schedd = {key_of_startd.get(host.split("@", 1)[-1]) for host in running_on}
    workers = {}
    for key, group in by_key.items():
        total = free = Resources()
        busy = draining = False
        drained = True
        heard = 0.0
        address = None
        for slot in group:
            kind = _text(slot, "SlotType") or "Static"
            state, activity = _text(slot, "State"), _text(slot, "Activity")
            address = address or sinful_host(_text(slot, "StartdIpAddr") or _text(slot, "MyAddress"))
            heard = max(heard, _number(slot, "LastHeardFrom", 0.0))
            if _true(slot, "Draining") or state == "Drained":
                draining = True
            if not (state == "Drained" and activity == "Idle"):
                drained = False
            if kind == "Partitionable":
                total += _slot_resources(slot, "TotalSlot")
                free += _slot_resources(slot)
                children = _child_states(slot)
                if any(s != "Drained" for s in children):
                    busy = True
                    drained = False
            elif kind == "Dynamic":
                busy = busy or state == "Claimed"
            else:  # a static slot
                total += _slot_resources(slot)
                if state == "Claimed":
                    busy = True
                elif state in ("Unclaimed", "Drained"):
                    free += _slot_resources(slot)
        lost = heard > 0 and now - heard > lost_after_s
        if key in busy_by_schedd:
            busy, drained = True, False
        workers[key] = Worker(
            name=key,
            total=total,
            free=free,
            busy=busy,
            draining=draining,
            drained=draining and drained,
            lost=lost,
            address=address,
        )
    return workers
