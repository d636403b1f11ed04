"""Workload traces: read a batch system's history into one list of jobs the simulator can replay.

A replay keeps what the user did (when each job was submitted, what it asked for) and how long it ran, and
throws away what the original machine did (when it started the job): the simulated policy decides that part.
Three formats are read, so an admin can replay their own history:

- SWF, the Standard Workload Format of the Parallel Workloads Archive (plain or gzipped);
- `condor_history -json` (HTCondor job ClassAds as a JSON array);
- `sacct --json` (Slurm's accounting output, an object with a `jobs` array; Slurm's data_parser schema).
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

TraceFormat = Literal["auto", "swf", "condor-json", "sacct-json"]
MemorySource = Literal["none", "requested", "used"]


class TraceError(Exception):
    """A trace that cannot be read, phrased for the user: `FILE: what is wrong`."""


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One job to replay: submitted at `submit` (s), runs for `runtime` s once started, on this much."""

    id: str
    submit: float
    runtime: float
    cores: float = 1.0
    memory_mb: float = 0.0
    gpus: int = 0


@dataclass(frozen=True, slots=True)
class Trace:
    """Jobs sorted by submit time, plus what was dropped while reading (and why), for the report."""

    name: str
    jobs: tuple[TraceJob, ...]
    dropped: int = 0
    dropped_reason: str = ""

    @property
    def start(self) -> float:
        return self.jobs[0].submit if self.jobs else 0.0

    @property
    def end(self) -> float:
        return self.jobs[-1].submit if self.jobs else 0.0

    def window(self, start: float | None = None, end: float | None = None) -> Trace:
        """Jobs submitted in [trace start + start, trace start + end): a slice in seconds from the start."""
        t0 = self.start
        lo = -math.inf if start is None else t0 + start
        hi = math.inf if end is None else t0 + end
        jobs = tuple(j for j in self.jobs if lo <= j.submit < hi)
        return Trace(self.name, jobs, self.dropped, self.dropped_reason)


def _open_text(path: Path) -> Iterator[str]:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
                yield from fh
        else:
            with path.open(encoding="utf-8", errors="replace") as fh:
                yield from fh
    except FileNotFoundError:
        raise TraceError(f"{path}: file not found") from None
    except (OSError, EOFError) as exc:
        raise TraceError(f"{path}: cannot read: {exc}") from None


def _finish(name: str, jobs: Iterable[TraceJob], dropped: int, reason: str) -> Trace:
    ordered = tuple(sorted(jobs, key=lambda j: (j.submit, j.id)))
    return Trace(name, ordered, dropped, reason if dropped else "")


def read_swf(path: str | Path, memory: MemorySource = "none", keep_failed: bool = False) -> Trace:
    """A Parallel Workloads Archive SWF log. Fields (1-based): 1 id, 2 submit, 4 run time, 5 allocated
    processors (8, requested processors, when <= 0), 7 used memory (KB per processor), 10 requested memory
    (KB per processor). Jobs with run time <= 0 (cancelled or failed before running) are dropped unless
    `keep_failed`: the log does not say how long they waited before being cancelled, so they cannot be
    replayed faithfully.
    """
    p = Path(path)
    jobs: list[TraceJob] = []
    dropped = 0
    for lineno, line in enumerate(_open_text(p), start=1):
        text = line.strip()
        if not text or text.startswith(";"):
            continue
        fields = text.split()
        if len(fields) < 18:
            raise TraceError(f"{p}:{lineno}: an SWF line has 18 fields, this one has {len(fields)}")
        try:
            values = [float(f) for f in fields[:18]]
        except ValueError:
            raise TraceError(f"{p}:{lineno}: SWF fields must be numbers") from None
        runtime = values[3]
        if runtime <= 0 and not keep_failed:
            dropped += 1
            continue
        cores = values[4] if values[4] > 0 else values[7]
        cores = max(cores, 1.0)
        mem_kb = {"none": -1.0, "used": values[6], "requested": values[9]}[memory]
        memory_mb = cores * mem_kb / 1024.0 if mem_kb > 0 else 0.0
        jobs.append(TraceJob(str(int(values[0])), values[1], max(runtime, 0.0), cores, memory_mb))
    return _finish(p.name, jobs, dropped, "run time <= 0 (cancelled or failed before running)")


def _load_json(path: Path) -> Any:
    text = "".join(_open_text(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}") from None


def _number(value: Any) -> float | None:
    """A plain number, or Slurm's `{"set": bool, "infinite": bool, "number": n}` wrapper (data_parser >= 0.0.39)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        if value.get("set") is False or value.get("infinite") is True:
            return None
        return _number(value.get("number"))
    return None


def read_condor_history(path: str | Path) -> Trace:
    """`condor_history -json` output: QDate is the submit time; the run time is RemoteWallClockTime of the
    last run (CompletionDate - JobCurrentStartDate when absent); RequestCpus, RequestMemory (MiB) and
    RequestGPUs are the shape. Jobs that never completed (no start or no completion) are dropped.
    """
    p = Path(path)
    data = _load_json(p)
    if not isinstance(data, list):
        raise TraceError(f"{p}: condor_history -json output is a JSON array of job ads")
    jobs: list[TraceJob] = []
    dropped = 0
    for ad in data:
        if not isinstance(ad, dict):
            raise TraceError(f"{p}: every element of the array must be a job ad (an object)")
        qdate = _number(ad.get("QDate"))
        start = _number(ad.get("JobCurrentStartDate")) or _number(ad.get("JobStartDate"))
        end = _number(ad.get("CompletionDate"))
        runtime = _number(ad.get("LastRemoteWallClockTime")) or _number(ad.get("RemoteWallClockTime"))
        if runtime is None and start is not None and end:
            runtime = end - start
        if qdate is None or runtime is None or runtime <= 0:
            dropped += 1
            continue
        job_id = f"{ad.get('ClusterId', '?')}.{ad.get('ProcId', 0)}"
        cores = _number(ad.get("RequestCpus")) or 1.0
        memory_mb = _number(ad.get("RequestMemory")) or 0.0  # an expression (not a number) counts as unknown
        gpus = int(_number(ad.get("RequestGPUs")) or 0)
        jobs.append(TraceJob(job_id, qdate, runtime, cores, memory_mb, gpus))
    return _finish(p.name, jobs, dropped, "never ran to completion")


def _tres(job: dict[str, Any], kind: str, what: str) -> float | None:
    entries = (job.get("tres") or {}).get(kind) or []
    for entry in entries:
        if isinstance(entry, dict) and entry.get("type") == what and not entry.get("name"):
            return _number(entry.get("count"))
    return None


def _sacct_memory_mb(job: dict[str, Any], cores: float) -> float:
    req = job.get("required") or {}
    per_cpu = _number(req.get("memory_per_cpu"))
    if per_cpu:
        return per_cpu * cores
    for key in ("memory_per_node", "memory"):
        value = _number(req.get(key))
        if value:
            return value
    return _tres(job, "requested", "mem") or 0.0


def read_sacct(path: str | Path) -> Trace:
    """`sacct --json` output: `jobs[].time.{submission,start,end,elapsed}` (s), the shape from
    `jobs[].required.CPUs` (or the allocated/requested `cpu` TRES) and `required.memory_per_cpu`,
    `memory_per_node` or (older data_parser) `memory`, in MiB. Jobs that never started are dropped.
    """
    p = Path(path)
    data = _load_json(p)
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        raise TraceError(f"{p}: sacct --json output is an object with a 'jobs' array")
    jobs: list[TraceJob] = []
    dropped = 0
    for job in data["jobs"]:
        if not isinstance(job, dict):
            raise TraceError(f"{p}: every element of 'jobs' must be an object")
        times = job.get("time") or {}
        submit = _number(times.get("submission"))
        start = _number(times.get("start"))
        end = _number(times.get("end"))
        elapsed = _number(times.get("elapsed"))
        runtime = elapsed if elapsed else (end - start if start and end else None)
        if submit is None or not start or runtime is None or runtime <= 0:
            dropped += 1
            continue
        cores = (
            _number((job.get("required") or {}).get("CPUs"))
            or _tres(job, "allocated", "cpu")
            or _tres(job, "requested", "cpu")
            or 1.0
        )
        gpus = 0
        for kind in ("allocated", "requested"):
            for entry in (job.get("tres") or {}).get(kind) or []:
                if isinstance(entry, dict) and entry.get("type") == "gres" and entry.get("name") == "gpu":
                    gpus = max(gpus, int(_number(entry.get("count")) or 0))
        job_id = str(job.get("job_id", "?"))
        jobs.append(TraceJob(job_id, submit, runtime, cores, _sacct_memory_mb(job, cores), gpus))
    return _finish(p.name, jobs, dropped, "never started")


def detect_format(path: Path) -> TraceFormat:
    """SWF by name (.swf, .swf.gz), otherwise JSON: an array is condor_history, an object sacct."""
    name = path.name.lower()
    if name.endswith((".swf", ".swf.gz")):
        return "swf"
    for line in _open_text(path):
        stripped = line.lstrip()
        if not stripped:
            continue
        if stripped.startswith("["):
            return "condor-json"
        if stripped.startswith("{"):
            return "sacct-json"
        if stripped.startswith(";") or stripped[0].isdigit():
            return "swf"
        break
    raise TraceError(f"{path}: cannot tell the trace format; give --format swf, condor-json or sacct-json")


def read_trace(
    path: str | Path, fmt: TraceFormat = "auto", memory: MemorySource = "none", keep_failed: bool = False
) -> Trace:
    """Read a trace in any supported format (detected from the name and first character when `auto`)."""
    p = Path(path)
    if fmt == "auto":
        fmt = detect_format(p)
    if fmt == "swf":
        return read_swf(p, memory, keep_failed)
    if fmt == "condor-json":
        return read_condor_history(p)
    return read_sacct(p)
