"""The slurm backend end to end: real slurmctld + one dynamic slurmd (this suite's own instance), real podman.

One pod -> one sbatch job running the pod runner on the node; status from one cached `squeue --json` per
refresh plus the runner's files. The same interLink 0.6.2-shaped request as the local backend's test.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from marea.batch.slurm import parse_demand
from marea.model import Resources
from tests.offload.conftest import (
    SLURM_TOML,
    LogFollower,
    Server,
    all_terminated,
    assert_recorded_pod_output,
    check_failing_pod_exit_code,
    check_server_restart_while_pod_runs,
    load_create,
    podman_containers,
    simple_pod,
    slurm_client,
    states,
    wait_for,
)
from tests.offload.hostile import MARK, assert_all_refused, assert_nothing_escaped, files_under, send_corpus

pytestmark = [pytest.mark.slurm, pytest.mark.podman]


def squeue_job(jid: str) -> dict[str, Any] | None:
    for job in json.loads(slurm_client("squeue", "--json"))["jobs"]:
        if str(job["job_id"]) == jid:
            return dict(job)
    return None


def test_pod_runs_as_a_slurm_job(slurm_server: Server) -> None:
    req = load_create(str(uuid.uuid4()))
    pod = req["pod"]
    uid = pod["metadata"]["uid"]
    r = slurm_server.create(req)
    assert r.status_code == 200, r.text
    jid = r.json()["PodJID"]
    assert jid.isdigit()

    job = squeue_job(jid)
    assert job is not None and job["partition"] == "marea"
    # the job carries the pod's requests (main: cpu 1, memory 64Mi): that is what the engine counts as demand
    assert job["cpus"] == 1 and job["memory_per_node"] == 64

    seen = wait_for(slurm_server, pod, lambda st: states(st)["main"] == "running", timeout=60)
    assert states(seen[0]) == {"prepare": "waiting", "main": "waiting"}

    follower = LogFollower(slurm_server, pod)
    final = wait_for(slurm_server, pod, all_terminated, timeout=60)[-1]
    assert [c["state"]["terminated"]["exitCode"] for c in final["initContainers"] + final["containers"]] == [
        0,
        0,
    ]
    followed = follower.text()
    assert "tick 2" in followed and followed.endswith("main done\n")
    assert_recorded_pod_output(slurm_server, pod)

    assert slurm_server.delete(pod).status_code == 200
    assert not (slurm_server.workdir / "state" / "pods" / uid).exists()
    assert podman_containers(uid) == []


def test_failing_pod_gives_its_exit_code(slurm_server: Server) -> None:
    check_failing_pod_exit_code(slurm_server, timeout=60)


def test_pending_pod_is_demand_and_delete_cancels_it(slurm_server: Server) -> None:
    """A pod bigger than any node pends as an ordinary job of the partition, with the pod's cpu and memory."""
    req = simple_pod(str(uuid.uuid4()), "true", cpu="3500m", memory="1.5Gi")
    r = slurm_server.create(req)
    jid = r.json()["PodJID"]
    job = squeue_job(jid)
    assert job is not None
    assert job["job_state"] == "PENDING" and job["partition"] == "marea"
    assert job["cpus"] == 4 and job["memory_per_node"] == 1536
    # and the elastic engine's own Slurm demand parser counts it: one job of 4 cores and 1536 MB
    squeue = json.loads(slurm_client("squeue", "--json", "--states=PENDING"))
    groups, queued = parse_demand(squeue, "marea")
    assert queued >= 1 and any(g.request == Resources(4.0, 1536.0, 0) and g.count >= 1 for g in groups)
    time.sleep(1)
    st = slurm_server.status(req["pod"])
    waiting = st["containers"][0]["state"]["waiting"]
    assert waiting["reason"] == "JobPending" and jid in waiting["message"]
    assert slurm_server.delete(req["pod"]).status_code == 200
    job = squeue_job(jid)
    assert job is None or job["job_state"] == "CANCELLED"


def test_server_restart_while_job_runs(slurm_server: Server) -> None:
    check_server_restart_while_pod_runs(slurm_server, timeout=60)


def all_jobs_text() -> str:
    """What Slurm itself knows of every job (squeue and scontrol), to search for the corpus' marker."""
    return slurm_client("squeue", "--json") + slurm_client("scontrol", "show", "jobs", "--oneliner")


def test_hostile_corpus_slurm(slurm_server: Server) -> None:
    """The hostile corpus (tests/offload/hostile.py): every request a 4xx, no file outside the pod directory,
    and no job submitted (checked with squeue and scontrol: no new job id, nothing carrying the marker)."""
    before_jobs = {j["job_id"] for j in json.loads(slurm_client("squeue", "--json"))["jobs"]}
    before_files = files_under(slurm_server.workdir)
    answers = send_corpus(slurm_server)
    assert_all_refused(answers)
    assert_nothing_escaped(slurm_server, before_files)
    after_jobs = {j["job_id"] for j in json.loads(slurm_client("squeue", "--json"))["jobs"]}
    assert after_jobs <= before_jobs
    assert MARK not in all_jobs_text()


def test_state_dir_with_a_space_and_shell_characters(tmp_path: Path, slurm_cluster: dict[str, str]) -> None:
    """The job script quotes every word: a state directory with a space, a quote and `$(...)` in its name
    runs the pod, and the `$(...)` is never run."""
    sentinel = Path("/tmp/marea-slurm-space-pwned")
    sentinel.unlink(missing_ok=True)
    toml = SLURM_TOML.replace('"@STATE@"', f"\"@STATE@ with space 'q' $(touch {sentinel})\"")
    server = Server(tmp_path, toml).start()
    try:
        req = simple_pod(str(uuid.uuid4()), "echo hello from a spaced dir")
        r = server.create(req)
        assert r.status_code == 200, r.text
        final = wait_for(server, req["pod"], all_terminated, timeout=60)[-1]
        assert final["containers"][0]["state"]["terminated"]["exitCode"] == 0, final
        assert server.logs(req["pod"], "main").text == "hello from a spaced dir\n"
        assert not sentinel.exists()
        assert server.delete(req["pod"]).status_code == 200
    finally:
        server.stop()
