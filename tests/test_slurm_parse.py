"""Slurm JSON parsing, over outputs recorded from real Slurm 22.05.8 (testbed) and 24.11 (guests) (tests/data/slurm)."""

from __future__ import annotations

import json

import pytest

from marea.batch.slurm import array_tasks, parse_demand, parse_workers
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


def test_slurm_24_11_nodes_from_scontrol_with_feature_lists() -> None:
    """Recorded from Slurm 24.11 (Debian 13) on the booting testbed: `sinfo --json` groups nodes into "sinfo"
    records (no per-node list), `scontrol show nodes --json` lists nodes with features as lists and states as
    lists of flags. The drained template node has no feature: it is never a worker."""
    assert "nodes" not in _load("24.11/sinfo.json")
    workers = parse_workers(_load("24.11/scontrol-show-nodes.json"), "marea")
    assert list(workers) == ["js4-7ffca8"]
    w = workers["js4-7ffca8"]
    assert w.total.cores == 1 and w.total.memory_mb == 2048
    assert not w.busy and not w.draining and not w.lost


def test_a_pending_job_array_is_demand_for_each_task_up_to_its_throttle() -> None:
    """Recorded from Slurm 24.11: `sbatch --array=1-5%3` with task 1 running: the pending tasks 2-5 are one
    record ("2-5%3"); at most 3 run at once, so they are demand for 3 workers, not 1."""
    groups, queued = parse_demand(_load("24.11/squeue-array.json"), "marea")
    assert sum(g.count for g in groups) == 3
    assert queued == 3


@pytest.mark.parametrize(
    ("text", "limit", "tasks"),
    [("", 0, 1), ("1-6", 0, 6), ("2-5%3", 3, 3), ("1,3,7-9", 0, 5), ("1-9:2", 0, 5), ("0-99%10", 0, 10), ("x", 0, 1)],
)
def test_array_task_strings(text: str, limit: int, tasks: int) -> None:
    job = {"array_task_string": text, "array_max_tasks": {"set": bool(limit), "infinite": False, "number": limit}}
    assert array_tasks(job) == tasks


def test_a_node_just_resumed_awaits_its_ping_and_is_not_lost() -> None:
    """`scontrol update state=RESUME` leaves the node NOT_RESPONDING until slurmctld's ping is answered ("idle*"):
    for a node the driver just resumed that flag alone is not a loss (its room is real); DOWN still is."""
    node = {"name": "n1", "features": "marea", "state": "idle", "state_flags": ["NOT_RESPONDING"], "cpus": 2,
            "alloc_cpus": 0, "real_memory": 2000, "alloc_memory": 0}  # fmt: skip
    assert parse_workers({"nodes": [node]}, "marea")["n1"].lost
    w = parse_workers({"nodes": [node]}, "marea", frozenset({"n1"}))["n1"]
    assert not w.lost and w.free == Resources(2, 2000)
    down = {**node, "state": "down"}
    assert parse_workers({"nodes": [down]}, "marea", frozenset({"n1"}))["n1"].lost
