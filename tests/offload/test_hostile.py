"""The hostile corpus (tests/offload/hostile.py) against running servers: the `local` backend with real
podman, and the `kubernetes` backend against the HTTP stand-in of an API server (tests/offload/fake_kube.py:
no real API server can run here). The Slurm and HTCondor runs are in test_slurm_pods.py and
tests/htcondor/test_offload_htcondor.py.

Each hostile request must get a 4xx; then what it aimed at is checked where it would show, not through marea:
the files on disk, `podman ps -a` / `podman inspect` (no container at all, none carrying the corpus' marker),
and the objects the fake API server received.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.offload.conftest import PODMAN, Server, all_terminated, kube_toml, podman_containers, simple_pod, wait_for
from tests.offload.fake_kube import FakeKube
from tests.offload.hostile import MARK, assert_all_refused, assert_nothing_escaped, files_under, send_corpus


def all_containers_json() -> str:
    """`podman inspect` of every container on this host (all states), as one text to search."""
    ids = subprocess.run([*PODMAN, "ps", "-a", "-q"], capture_output=True, text=True, check=True).stdout.split()
    if not ids:
        return "[]"
    res = subprocess.run([*PODMAN, "inspect", *ids], capture_output=True, text=True)
    return res.stdout  # a container removed between ps and inspect only shortens the answer


@pytest.mark.podman
def test_hostile_corpus_local(local_server: Server) -> None:
    before_files = files_under(local_server.workdir)
    answers = send_corpus(local_server)
    assert_all_refused(answers)
    assert_nothing_escaped(local_server, before_files)
    text = all_containers_json()
    assert MARK not in text, "a container was created from a hostile request"
    assert local_server.proc is not None and local_server.proc.poll() is None
    assert local_server.client.get("/healthz").status_code == 200


@pytest.mark.podman
def test_option_looking_args_stay_arguments(local_server: Server) -> None:
    """Arguments are the container's business (Kubernetes allows any): `--privileged` and `--volume=/:/host`
    as args reach the container's process and never podman, as `podman inspect` shows."""
    req = simple_pod(str(uuid.uuid4()), 'echo "$0" "$1"; sleep 3')
    main = req["pod"]["spec"]["containers"][0]
    main["args"] = ['echo "$0" "$1"; sleep 3', "--privileged", "--volume=/:/host"]
    uid = req["pod"]["metadata"]["uid"]
    assert local_server.create(req).status_code == 200
    wait_for(local_server, req["pod"], lambda st: st["containers"][0]["state"].get("running") is not None)
    (c,) = podman_containers(uid)
    (info,) = json.loads(subprocess.run([*PODMAN, "inspect", c["Id"]], capture_output=True, check=True).stdout)
    assert info["HostConfig"]["Privileged"] is False
    assert not any(m.get("Destination") == "/host" for m in info["Mounts"])
    assert info["Args"][-2:] == ["--privileged", "--volume=/:/host"]
    assert info["HostConfig"]["NetworkMode"] == "none"  # offload.network's default: the pod's own namespace
    wait_for(local_server, req["pod"], all_terminated)
    assert local_server.logs(req["pod"], "main").text == "--privileged --volume=/:/host\n"
    assert local_server.delete(req["pod"]).status_code == 200


def test_hostile_corpus_kubernetes(tmp_path: Path, fake_kube: FakeKube) -> None:
    server = Server(tmp_path, kube_toml(tmp_path, fake_kube)).start()
    try:
        before_files = files_under(tmp_path)
        answers = send_corpus(server)
        assert_all_refused(answers)
        assert_nothing_escaped(server, before_files)
        # nothing was sent on to the remote cluster: no object at all, and no write call
        assert fake_kube.objects == {}
        assert not [r for r in fake_kube.requests if r[0] in ("POST", "PUT", "PATCH")]
        assert MARK not in json.dumps(fake_kube.requests)
    finally:
        server.stop()
