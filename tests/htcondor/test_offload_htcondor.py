"""The offload `htcondor` backend end to end: the real HTCondor 23.9 pool, one worker VM, real rootless podman.

One pod -> one vanilla-universe job running the pod runner on the worker (as the submit user `tester`, with
rootless podman in the job); input spooled to the schedd, per-container states chirped into the job ad, logs
brought back with the job's output. The same interLink 0.6.2-shaped requests and the same lifecycle as the
`slurm` backend's test (tests/offload/test_slurm_pods.py).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from marea.batch.htcondor import HTCondorBatch
from marea.config import HTCondorSection
from marea.model import Flavour
from marea.offload.backends.local import server_id
from tests.conftest import wait_until
from tests.htcondor.conftest import ROOTFS_PODMAN, SUBNET, CondorTestbed, load_pod_image
from tests.offload.conftest import (
    BUSYBOX,
    LogFollower,
    Server,
    all_terminated,
    assert_recorded_pod_output,
    check_failing_pod_exit_code,
    check_server_restart_while_pod_runs,
    load_create,
    podman_containers,
    simple_pod,
    states,
    wait_for,
)
from tests.offload.hostile import MARK, assert_all_refused, assert_nothing_escaped, files_under, send_corpus

pytestmark = [pytest.mark.htcondor, pytest.mark.podman]

WORKER = "offw1"


def htcondor_toml(condor: CondorTestbed) -> str:
    return f"""
[offload]
backend = "htcondor"
socket = "@SOCK@"
state_dir = "@STATE@"
refresh_s = 0.3
grace_s = 2

[batch.htcondor]
collector = "{SUBNET}.1"
netns = "marea-condor"
condor_config = "{condor.client_conf}"
"""


@pytest.fixture(scope="module")
def offload_worker(condor: CondorTestbed) -> Iterator[str]:
    """One 2-core worker whose jobs find the busybox image in the submit user's rootless podman storage."""
    load_pod_image(BUSYBOX)
    condor.start_vm(WORKER, 41, cores=2, memory=1000)
    wait_until(f"{WORKER} in the pool", lambda: condor.slots(f'MareaWorker == "{WORKER}"'), 60)
    try:
        yield WORKER
    finally:
        condor.remove_jobs("MareaOffloadServer =!= undefined")
        condor.power_off(WORKER)


@pytest.fixture
def condor_server(tmp_path: Path, condor: CondorTestbed, offload_worker: str) -> Iterator[Server]:
    server = Server(tmp_path, htcondor_toml(condor)).start()
    yield server
    server.stop()


def job_ad(condor: CondorTestbed, jid: str) -> dict[str, Any] | None:
    cluster, proc = jid.split(".")

    def go(h: Any) -> list[Any]:
        return list(condor.schedd(h).query(constraint=f"ClusterId == {cluster} && ProcId == {proc}"))

    ads = condor.call(go)
    return dict(ads[0]) if ads else None


def test_pod_runs_as_an_htcondor_job(condor_server: Server, condor: CondorTestbed) -> None:
    req = load_create(str(uuid.uuid4()))
    pod = req["pod"]
    uid = pod["metadata"]["uid"]
    r = condor_server.create(req)
    assert r.status_code == 200, r.text
    jid = r.json()["PodJID"]
    assert jid.endswith(".0") and jid.split(".")[0].isdigit()

    ad = job_ad(condor, jid)
    assert ad is not None and ad["MareaPodUid"] == uid
    # the job carries the pod's requests (main: cpu 1, memory 64Mi): that is what the engine counts as demand
    assert ad["RequestCpus"] == 1 and ad["RequestMemory"] == 64
    assert ad["Owner"] == "tester"

    seen = wait_for(condor_server, pod, lambda st: states(st)["main"] == "running", timeout=90)
    assert states(seen[0]) == {"prepare": "waiting", "main": "waiting"}
    # the init container's exit code came through the job ad while the job runs
    init = seen[-1]["initContainers"][0]["state"]
    assert init["terminated"]["exitCode"] == 0 and init["terminated"]["reason"] == "Completed"

    follower = LogFollower(condor_server, pod)
    final = wait_for(condor_server, pod, all_terminated, timeout=90)[-1]
    assert [c["state"]["terminated"]["exitCode"] for c in final["initContainers"] + final["containers"]] == [0, 0]
    followed = follower.text()
    assert "tick 2" in followed and followed.endswith("main done\n")
    assert_recorded_pod_output(condor_server, pod)
    assert condor_server.logs(pod, "prepare").status_code == 200

    assert condor_server.delete(pod).status_code == 200
    assert not (condor_server.workdir / "state" / "pods" / uid).exists()
    assert job_ad(condor, jid) is None
    assert podman_containers(uid, ROOTFS_PODMAN) == []


def test_failing_pod_gives_its_exit_code(condor_server: Server) -> None:
    check_failing_pod_exit_code(condor_server, timeout=90)


def test_pending_pod_is_demand_and_delete_removes_it(condor_server: Server, condor: CondorTestbed) -> None:
    """A pod bigger than any worker idles as an ordinary job with the pod's cpu and memory, which the elastic
    engine's own `htcondor` plugin counts as demand."""
    req = simple_pod(str(uuid.uuid4()), "true", cpu="3500m", memory="1.5Gi")
    r = condor_server.create(req)
    jid = r.json()["PodJID"]
    # held with HoldReasonCode 16 while its input is spooled, then idle
    ad = wait_until("the job idle", lambda: (a := job_ad(condor, jid)) and a["JobStatus"] == 1 and a, 60)
    assert ad["RequestCpus"] == 4 and ad["RequestMemory"] == 1536
    plugin = HTCondorBatch(HTCondorSection(collector=f"{SUBNET}.1", netns="marea-condor",
                                           condor_config=condor.client_conf))  # fmt: skip
    try:
        snap = plugin.snapshot((Flavour("big", 4, 4000),))
    finally:
        plugin.close()
    shapes = {(g.request.cores, g.request.memory_mb): g.count for g in snap.demand}
    assert shapes.get((4.0, 1536.0), 0) >= 1, shapes
    time.sleep(1)
    waiting = condor_server.status(req["pod"])["containers"][0]["state"]["waiting"]
    assert waiting["reason"] == "JobPending" and jid in waiting["message"]
    assert condor_server.delete(req["pod"]).status_code == 200
    assert job_ad(condor, jid) is None


def test_server_restart_while_job_runs(condor_server: Server) -> None:
    check_server_restart_while_pod_runs(condor_server, timeout=90)


def test_delete_of_a_running_pod_stops_its_containers(condor_server: Server, condor: CondorTestbed) -> None:
    req = simple_pod(str(uuid.uuid4()), "echo up; sleep 300")
    pod = req["pod"]
    uid = pod["metadata"]["uid"]
    jid = condor_server.create(req).json()["PodJID"]
    wait_for(condor_server, pod, lambda st: states(st)["main"] == "running", timeout=90)
    started = time.monotonic()
    assert condor_server.delete(pod).status_code == 200
    assert time.monotonic() - started < 60
    assert job_ad(condor, jid) is None
    wait_until("the pod's container gone from the worker", lambda: podman_containers(uid, ROOTFS_PODMAN) == [], 30)


def test_create_cut_short_is_found_by_pod_uid_and_removed(tmp_path: Path, condor: CondorTestbed) -> None:
    """The server died between the submit and storing the job id: at start, adopt() finds the job by its
    MareaPodUid in the queue and removes it with the pod directory (in process, the real schedd)."""
    from marea.config import MareaConfig
    from marea.offload.backends.htcondor import HTCondorBackend
    from marea.offload.state import PodRecord
    from marea.offload.wire import parse_create

    cfg = MareaConfig.model_validate(
        {
            "offload": {"backend": "htcondor"},
            "batch": {"htcondor": {"collector": f"{SUBNET}.1", "netns": "marea-condor",
                                   "condor_config": condor.client_conf}},
        }
    )  # fmt: skip
    backend = HTCondorBackend(cfg, tmp_path / "pods")
    try:
        # bigger than any worker: it stays in the queue
        req = parse_create(json.dumps(simple_pod(str(uuid.uuid4()), "true", cpu="8")).encode())[0]
        rec = PodRecord(uid=req.ref.uid, name=req.ref.name, namespace=req.ref.namespace, backend="htcondor",
                        phase="creating", containers={"init": [], "containers": [["main", BUSYBOX]]})  # fmt: skip
        backend.create(req, rec)
        jid, rec.jid = rec.jid, ""  # as if the crash came before the job id was stored
        assert job_ad(condor, jid) is not None
        assert backend.adopt([rec]) == [rec]
        assert rec.jid == jid
        assert job_ad(condor, jid) is None
        assert not (tmp_path / "pods" / rec.uid).exists()
    finally:
        backend.close()


def test_unreachable_pool_is_a_clear_502_and_leaves_nothing(tmp_path: Path, condor: CondorTestbed) -> None:
    """A pool the server cannot reach (here: a network namespace that does not exist): create answers 502
    with one line saying why, the pod directory is removed, and the server goes on serving."""
    toml = htcondor_toml(condor).replace('netns = "marea-condor"', 'netns = "marea-condor-nope"')
    server = Server(tmp_path, toml).start()
    try:
        req = simple_pod(str(uuid.uuid4()), "true")
        r = server.create(req)
        assert r.status_code == 502
        assert "marea-condor-nope" in r.text and "\n" not in r.text.strip()
        assert list((tmp_path / "state" / "pods").iterdir()) == []
        assert server.client.get("/healthz").status_code == 200
    finally:
        server.stop()


def test_hostile_corpus_htcondor(condor_server: Server, condor: CondorTestbed) -> None:
    """The hostile corpus (tests/offload/hostile.py): every request a 4xx, no file outside the pod directory,
    and no job ever submitted by this server (the schedd's queue and history, asked through the bindings,
    hold no job of its id and none carrying the corpus' marker)."""
    before_files = files_under(condor_server.workdir)
    answers = send_corpus(condor_server)
    assert_all_refused(answers)
    assert_nothing_escaped(condor_server, before_files)
    mine = f'MareaOffloadServer == "{server_id(condor_server.workdir / "state" / "pods")}"'
    projection = ["ClusterId", "Cmd", "Args", "Iwd", "JobBatchName", "MareaPodUid", "TransferInput"]

    def go(h: Any) -> tuple[list[Any], list[Any], list[Any]]:
        schedd = condor.schedd(h)
        queued = list(schedd.query(constraint=mine, projection=projection))
        done = list(schedd.history(constraint=mine, projection=projection, match=10))
        everything = list(schedd.query(constraint="true", projection=projection))
        return queued, done, everything

    queued, done, everything = condor.call(go)
    assert queued == [] and done == []
    assert MARK not in repr([dict(ad) for ad in everything])
