"""Trace readers: SWF (the Parallel Workloads Archive's format, a real log in tests/data), condor_history -json
(a real recording from HTCondor 23.9.6 in tests/data) and sacct --json."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from marea.sim.trace import TraceError, read_condor_history, read_sacct, read_swf, read_trace
from tests.sim.simhelpers import DATA

SWF_HEADER = "; Version: 2.2\n; Computer: test\n"


def _swf(tmp_path: Path, *lines: str, gz: bool = False) -> Path:
    text = SWF_HEADER + "\n".join(lines) + "\n"
    if gz:
        p = tmp_path / "t.swf.gz"
        p.write_bytes(gzip.compress(text.encode()))
    else:
        p = tmp_path / "t.swf"
        p.write_text(text)
    return p


def test_swf_fields_fallbacks_and_dropped_jobs(tmp_path: Path) -> None:
    p = _swf(
        tmp_path,
        # id submit wait run alloc avgcpu usedmem reqprocs reqtime reqmem status ...
        "1 10 5 100 2 -1 1024 2 200 2048 1 1 1 1 1 -1 -1 -1",
        "2 5 0 50 -1 -1 -1 4 100 -1 1 1 1 1 1 -1 -1 -1",  # allocated <= 0: requested processors (4)
        "3 20 0 0 1 -1 -1 1 100 -1 5 1 1 1 1 -1 -1 -1",  # run time 0: cancelled, dropped
        gz=True,
    )
    t = read_swf(p)
    assert [j.id for j in t.jobs] == ["2", "1"]  # sorted by submit time
    assert (t.jobs[0].cores, t.jobs[0].runtime, t.jobs[0].submit) == (4.0, 50.0, 5.0)
    assert t.jobs[1].memory_mb == 0.0  # memory ignored by default
    assert t.dropped == 1 and "run time" in t.dropped_reason
    used = read_swf(p, memory="used")
    assert used.jobs[1].memory_mb == pytest.approx(2 * 1024 / 1024)  # KB per processor x 2 processors
    requested = read_swf(p, memory="requested")
    assert requested.jobs[1].memory_mb == pytest.approx(2 * 2048 / 1024)
    kept = read_swf(p, keep_failed=True)
    assert len(kept.jobs) == 3 and kept.dropped == 0


def test_swf_bad_lines_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="18 fields"):
        read_swf(_swf(tmp_path, "1 2 3"))
    with pytest.raises(TraceError, match="numbers"):
        read_swf(_swf(tmp_path, " ".join(["x"] * 18)))
    with pytest.raises(TraceError, match="not found"):
        read_swf(tmp_path / "missing.swf")


def test_real_lpc_egee_log_reads_as_the_archive_describes_it() -> None:
    t = read_trace(DATA / "LPC-EGEE-2004-1.2-cln.swf.gz")
    # README of the traces: 234,889 jobs, 20,567 with run time <= 0, all serial, 239 days
    assert len(t.jobs) + t.dropped == 234_889
    assert t.dropped == 20_567
    assert {j.cores for j in t.jobs} == {1.0}
    assert 230 < (t.end - t.start) / 86400 < 240
    window = t.window(86400.0, 2 * 86400.0)
    assert all(t.start + 86400 <= j.submit < t.start + 2 * 86400 for j in window.jobs)
    assert 0 < len(window.jobs) < len(t.jobs)


def test_condor_history_json_recorded_from_htcondor_23_9() -> None:
    """The file is the real `condor_history -json` output of an HTCondor 23.9.6 pool (4 finished jobs)."""
    t = read_condor_history(DATA / "condor_history-json-23.9.6.json")
    by_id = {j.id: j for j in t.jobs}
    assert set(by_id) == {"1.0", "2.0", "2.1", "2.2"}
    assert by_id["2.2"].submit == 1795318819 and by_id["2.2"].runtime == 30.0
    assert by_id["2.2"].cores == 1.0 and by_id["2.2"].memory_mb == 200.0
    assert by_id["1.0"].runtime == 5.0  # the last run's wall clock (LastRemoteWallClockTime)
    assert t.jobs[0].id == "1.0"  # submitted first
    assert read_trace(DATA / "condor_history-json-23.9.6.json").jobs == t.jobs  # detected as condor-json


def test_sacct_json_both_schema_generations(tmp_path: Path) -> None:
    """There is no slurmdbd here, so no real `sacct --json` output could be recorded: these documents are
    written from Slurm's documented data_parser schema: `jobs[].time.{submission,start,end,elapsed}`,
    `jobs[].required.{CPUs,memory_per_cpu,memory_per_node}` (numbers wrapped as {set, infinite, number} since
    v0.0.39; `required.memory` in v0.0.37), `jobs[].tres.{allocated,requested}[] = {type, name, count}`."""
    doc = {
        "jobs": [
            {  # data_parser v0.0.40 style
                "job_id": 11,
                "time": {"submission": 1000, "start": 1060, "end": 1360, "elapsed": 300},
                "required": {
                    "CPUs": 4,
                    "memory_per_cpu": {"set": True, "infinite": False, "number": 1000},
                    "memory_per_node": {"set": False, "infinite": False, "number": 0},
                },
                "tres": {"allocated": [{"type": "gres", "name": "gpu", "id": 1001, "count": 1}]},
                "state": {"current": ["COMPLETED"], "reason": "None"},
            },
            {  # v0.0.37 style: required.memory, plain numbers
                "job_id": 10,
                "time": {"submission": 900, "start": 905, "end": 965, "elapsed": 60},
                "required": {"CPUs": 1, "memory": 2000},
                "state": {"current": "COMPLETED", "reason": "None"},
            },
            {  # cancelled while pending: never started, dropped
                "job_id": 12,
                "time": {"submission": 1100, "start": 0, "end": 1200, "elapsed": 0},
                "required": {"CPUs": 1},
            },
        ]
    }
    p = tmp_path / "sacct.json"
    p.write_text(json.dumps(doc))
    t = read_sacct(p)
    assert [j.id for j in t.jobs] == ["10", "11"]
    assert (t.jobs[0].submit, t.jobs[0].runtime, t.jobs[0].cores, t.jobs[0].memory_mb) == (900, 60, 1, 2000)
    assert (t.jobs[1].cores, t.jobs[1].memory_mb, t.jobs[1].gpus) == (4, 4000, 1)
    assert t.dropped == 1
    assert read_trace(p).jobs == t.jobs  # detected as sacct-json


def test_json_traces_with_the_wrong_shape_are_clear_errors(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text('{"no_jobs": 1}')
    with pytest.raises(TraceError, match="'jobs' array"):
        read_sacct(p)
    with pytest.raises(TraceError, match="JSON array"):
        read_condor_history(p)
    p.write_text("[1, 2")
    with pytest.raises(TraceError, match="not valid JSON"):
        read_condor_history(p)
    p.write_text("hello")
    with pytest.raises(TraceError, match="cannot tell"):
        read_trace(p)
