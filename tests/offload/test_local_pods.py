"""The local backend end to end: a real server process on a unix socket, real podman, the busybox image.

Requests are shaped exactly as interLink 0.6.2 sends them (tests/data/offload/create_busybox.json: the pod
with an init container, a ConfigMap volume, a Secret volume, an emptyDir, the service-account projected volume
and env with valueFrom, plus the per-container `container[]` list).
"""

from __future__ import annotations

import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from marea.offload.backends.local import server_id
from tests.offload.conftest import (
    BUSYBOX,
    PODMAN,
    LogFollower,
    Server,
    all_terminated,
    assert_recorded_pod_output,
    load_create,
    podman_containers,
    simple_pod,
    states,
    wait_for,
)

pytestmark = pytest.mark.podman


def test_full_pod_lifecycle_over_unix_socket(local_server: Server) -> None:
    req = load_create(str(uuid.uuid4()))
    pod = req["pod"]
    uid = pod["metadata"]["uid"]
    assert stat.S_IMODE(local_server.sock.stat().st_mode) == 0o600

    r = local_server.create(req)
    assert r.status_code == 200, r.text
    assert r.json()["PodUID"] == uid and r.json()["PodJID"]

    first = local_server.status(pod)
    assert first["UID"] == uid and first["name"] == pod["metadata"]["name"] and first["namespace"] == "cms"
    assert states(first) == {"prepare": "waiting", "main": "waiting"}

    seen = wait_for(local_server, pod, lambda st: states(st)["main"] == "running")
    assert states(seen[-1])["prepare"] == "terminated"

    # follow while main runs: the stream stays open and ends when the container ends
    follower = LogFollower(local_server, pod, SinceTime="0001-01-01T00:00:00Z")

    final = wait_for(local_server, pod, all_terminated)[-1]
    for c in [*final["initContainers"], *final["containers"]]:
        assert c["state"]["terminated"]["exitCode"] == 0, c
        assert c["state"]["terminated"]["reason"] == "Completed"
    text = follower.text()
    assert "tick 3" in text and text.rstrip().endswith("main done")

    assert_recorded_pod_output(local_server, pod)
    assert local_server.logs(pod, "main", Tail=2).text == "tick 3\nmain done\n"
    assert local_server.logs(pod, "main", Bytes=5).text == "hello"
    stamped = local_server.logs(pod, "main", Tail=1, Timestamps=True).text
    assert stamped.endswith(" main done\n") and stamped[:4].isdigit() and "T" in stamped.split()[0]
    assert local_server.logs(pod, "prepare").text == "init done\n"
    assert local_server.logs(pod, "nosuch").status_code == 404

    pod_dir = local_server.workdir / "state" / "pods" / uid
    assert pod_dir.is_dir()
    # the Secret's values reach the container (above) but no log of marea's own
    for own_log in (local_server.workdir / "server.log", pod_dir / "runner.log"):
        text = own_log.read_text()
        assert "s3cr3t-pw" not in text and "alice" not in text
    assert local_server.delete(pod).status_code == 200
    assert not pod_dir.exists()
    assert podman_containers(uid) == []
    assert states(local_server.status(pod)) == {"prepare": "terminated", "main": "terminated"}
    assert local_server.status(pod)["containers"][0]["state"]["terminated"]["reason"] == "NotFound"
    assert local_server.delete(pod).status_code == 200  # idempotent


def test_failing_container_and_failing_init(local_server: Server) -> None:
    bad = simple_pod(str(uuid.uuid4()), "echo failing; exit 7")
    assert local_server.create(bad).status_code == 200
    st = wait_for(local_server, bad["pod"], all_terminated)[-1]
    term = st["containers"][0]["state"]["terminated"]
    assert term["exitCode"] == 7 and term["reason"] == "Error"

    req = load_create(str(uuid.uuid4()))
    req["pod"]["spec"]["initContainers"][0]["args"] = ["exit 3"]
    assert local_server.create(req).status_code == 200
    st = wait_for(local_server, req["pod"], all_terminated)[-1]
    assert st["initContainers"][0]["state"]["terminated"]["exitCode"] == 3
    main = st["containers"][0]["state"]["terminated"]
    assert main["reason"] == "InitContainerFailed" and main["exitCode"] != 0

    missing = simple_pod(str(uuid.uuid4()), "true")
    missing["pod"]["spec"]["containers"][0]["image"] = "localhost/marea-no-such-image:1"
    assert local_server.create(missing).status_code == 200
    st = wait_for(local_server, missing["pod"], all_terminated)[-1]
    assert st["containers"][0]["state"]["terminated"]["reason"] == "CreateContainerError"
    for r in (bad, req, missing):
        assert local_server.delete(r["pod"]).status_code == 200


def test_list_form_create_and_ping(local_server: Server) -> None:
    a, b = simple_pod(str(uuid.uuid4()), "echo a"), simple_pod(str(uuid.uuid4()), "echo b")
    r = local_server.create([a, b])
    assert r.status_code == 200, r.text
    assert [x["PodUID"] for x in r.json()] == [a["pod"]["metadata"]["uid"], b["pod"]["metadata"]["uid"]]
    for x in (a, b):
        wait_for(local_server, x["pod"], all_terminated)
    ping = local_server.client.request("GET", "/status", json=[])
    assert ping.status_code == 200
    res = ping.json()["resources"]
    assert int(res["cpu"]) >= 1 and res["memory"].endswith("Mi") and int(res["pods"]) >= 1
    for x in (a, b):
        local_server.delete(x["pod"])


def test_restart_while_running_keeps_status_and_orphans_nothing(local_server: Server, tmp_path: Path) -> None:
    req = simple_pod(str(uuid.uuid4()), "echo start; sleep 4; echo end")
    pod = req["pod"]
    uid = pod["metadata"]["uid"]
    assert local_server.create(req).status_code == 200
    wait_for(local_server, pod, lambda st: states(st)["main"] == "running")
    local_server.kill()

    assert podman_containers(uid), "the pod's container should still be running"
    # a container labelled as this server's but belonging to no recorded pod: a crash leftover
    orphan = str(uuid.uuid4())
    sid = server_id(local_server.workdir / "state" / "pods")
    subprocess.run(
        [
            *PODMAN,
            "create",
            "--label",
            f"marea.offload.server={sid}",
            "--label",
            f"marea.offload.pod={orphan}",
            BUSYBOX,
            "true",
        ],
        check=True,
        capture_output=True,
    )
    assert podman_containers(orphan)
    restarted = local_server.start()  # same config, same state directory, same socket
    st = restarted.status(pod)
    assert states(st)["main"] in ("running", "terminated")
    final = wait_for(restarted, pod, all_terminated)[-1]
    assert final["containers"][0]["state"]["terminated"]["exitCode"] == 0
    assert restarted.logs(pod, "main").text == "start\nend\n"
    assert podman_containers(orphan) == []
    assert restarted.delete(pod).status_code == 200
    assert podman_containers(uid) == []


def test_bad_requests_get_short_clear_answers(local_server: Server) -> None:
    c = local_server.client
    r = c.post("/create", content=b"{not json")
    assert r.status_code == 400 and "malformed JSON" in r.text
    r = c.post("/create", json={"pod": {"metadata": {"name": "x"}}})
    assert r.status_code == 422 and "uid" in r.text
    r = c.post("/create", json={"container": []})
    assert r.status_code == 422 and "pod is missing" in r.text
    r = c.post("/create", json={"pod": {"metadata": {"name": "x", "uid": "u1", "namespace": "n"}, "spec": {}}})
    assert r.status_code == 422 and "containers" in r.text
    req = simple_pod(str(uuid.uuid4()), "true", cpu="lots")
    r = c.post("/create", json=req)
    assert r.status_code == 422 and "quantity" in r.text
    req = simple_pod(str(uuid.uuid4()), "true")
    req["pod"]["spec"]["volumes"] = [{"name": "h", "hostPath": {"path": "/etc"}}]
    r = c.post("/create", json=req)
    assert r.status_code == 422 and "hostPath" in r.text
    r = c.request("GET", "/status", content=b'{"a": 1}')
    assert r.status_code == 422
    r = c.request("GET", "/getLogs", json={"PodUID": "nope", "ContainerName": "main"})
    assert r.status_code == 404 and "not known" in r.text
    r = c.request("GET", "/getLogs", json={"PodUID": "nope", "ContainerName": "main", "Opts": {"Tail": "x"}})
    assert r.status_code == 422 and "Tail" in r.text
    assert c.post("/delete", content=b"[]").status_code == 422
    huge = c.post("/create", content=b" " * (65 << 20))
    assert huge.status_code == 413 and "too large" in huge.text
    assert all(len(x) < 200 for x in (r.text,))
    assert c.get("/metrics").status_code == 200 and "marea_offload_requests" in c.get("/metrics").text
