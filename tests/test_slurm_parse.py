"""Slurm JSON parsing, over outputs recorded from the real Slurm 22.05.8 testbed (tests/data/slurm)."""

from __future__ import annotations

import json

from marea.batch.slurm import parse_demand, parse_workers
from marea.model import Resources
from tests.conftest import DATA


def _load(name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((DATA / "slurm" / name).read_text())
    return data


def test_pending_jobs_become_demand_by_shape_and_held_or_future_jobs_do_not() -> None:
    demand, queued = parse_demand(_load("squeue-pending-22.05.8.json"), "marea")
    shapes = {(d.request, d.count) for d in demand}
    # job 6: 4 cpus 6000 MiB; job 7: 1 cpu x 300 MiB per cpu; jobs 8, 10: 1 cpu, 100 MiB (DefMemPerCPU);
    # job 9: 4 cpus on 2 nodes -> 2 nodes of 2 cpus, 100 MiB per cpu. Job 4 (BeginTime), 5 (held): not demand.
    assert shapes == {
        (Resources(4, 6000), 1),
        (Resources(1, 300), 1),
        (Resources(1, 100), 2),
        (Resources(2, 200), 2),
    }
    assert queued == 7
    assert parse_demand(_load("squeue-pending-22.05.8.json"), "other") == ((), 0)


def test_workers_with_drain_flags() -> None:
    workers = parse_workers(_load("sinfo-drain-22.05.8.json"), "marea")
    busy, idle = workers["cap1"], workers["cap2"]
    assert busy.busy and busy.draining and not busy.drained
    assert busy.free == Resources(0, 1500) and busy.total == Resources(2, 2000)
    assert not idle.busy and idle.draining and idle.drained
    assert idle.address == "10.231.0.62"
    assert parse_workers(_load("sinfo-drain-22.05.8.json"), "gpu") == {}


def test_newer_slurm_number_objects_are_accepted() -> None:
    """Slurm >= 23.02 wraps numbers as {"set", "number"} and gives node state as a list; shape from the docs."""
    job = {
        "job_state": ["PENDING"],
        "partition": "marea",
        "state_reason": "Resources",
        "cpus": {"set": True, "infinite": False, "number": 3},
        "node_count": {"set": True, "infinite": False, "number": 1},
        "memory_per_node": {"set": True, "infinite": False, "number": 1234},
        "tres_per_node": "gres/gpu:2",
    }
    demand, _ = parse_demand({"jobs": [job]}, "marea")
    assert demand[0].request == Resources(3, 1234, 2)
    node = {"name": "n1", "features": "marea", "state": ["IDLE", "DRAIN"], "cpus": 4, "alloc_cpus": 0,
            "real_memory": 100, "alloc_memory": 0}  # fmt: skip
    w = parse_workers({"nodes": [node]}, "marea")["n1"]
    assert w.drained and not w.busy
