"""The kubernetes backend. No Kubernetes API server can run on this machine, so:

- the objects marea would create are validated against the OFFICIAL Kubernetes JSON schemas (PyPI package
  kubernetes-validate, strict mode: unknown fields are errors);
- the API calls go to an HTTP-level FAKE of the API server (tests/offload/fake_kube.py) on a real socket,
  which stores what it is sent and answers LIST / DELETE / log like the REST API. The fake is not a real
  API server: scheduling, admission and kubelets are not exercised here.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from marea.config import OffloadKubernetesSection
from marea.offload.backends.kubetranslate import MANAGED, remote_name, translate
from marea.offload.wire import WireError, parse_create
from tests.offload.conftest import Server, kube_toml, load_create, states, wait_for
from tests.offload.fake_kube import FakeKube

K8S_VERSION = "1.30.0"
SECTION = OffloadKubernetesSection(
    namespace_prefix="tenant-",
    node_selector={"pool": "offload"},
    tolerations=[{"key": "offload", "operator": "Exists", "effect": "NoSchedule"}],
)


def translated(uid: str | None = None) -> Any:
    req = load_create(uid or str(uuid.uuid4()))
    (parsed,) = parse_create(json.dumps(req).encode())
    return req, translate(parsed, SECTION)


def test_translated_objects_are_valid_kubernetes_objects() -> None:
    _, objs = translated()
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": objs.namespace}}
    for obj in [ns, objs.pod, *objs.configmaps, *objs.secrets]:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_translation_rewrites_references_and_keeps_the_spec() -> None:
    req, objs = translated()
    uid = req["pod"]["metadata"]["uid"]
    pod, spec = objs.pod, objs.pod["spec"]
    assert objs.namespace == "tenant-cms" and pod["metadata"]["namespace"] == "tenant-cms"
    assert len(pod["metadata"]["name"]) <= 63 and pod["metadata"]["name"].endswith(uid)
    assert pod["metadata"]["labels"][MANAGED] == "true" and pod["metadata"]["labels"]["app"] == "flashsim"
    cms = {c["metadata"]["name"] for c in objs.configmaps}
    secrets = {s["metadata"]["name"] for s in objs.secrets}
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["settings"]["configMap"]["name"] in cms
    assert vols["creds"]["secret"]["secretName"] in secrets
    assert vols["scratch"] == {"name": "scratch", "emptyDir": {}}
    # the projected service-account volume arrived as data: it becomes a ConfigMap with those files
    proj = vols["kube-api-access-x7k2p"]
    assert "projected" not in proj and proj["configMap"]["name"] in cms
    token_cm = next(c for c in objs.configmaps if c["metadata"]["name"] == proj["configMap"]["name"])
    assert set(token_cm["data"]) == {"token", "ca.crt", "namespace"}
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["DB_USER"]["valueFrom"]["secretKeyRef"]["name"] in secrets
    assert spec["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in spec and "nodeName" not in spec
    assert spec["nodeSelector"] == {"pool": "offload"}
    assert {"key": "offload", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert any(t["key"] == "virtual-node.interlink/no-schedule" for t in spec["tolerations"])
    # full fidelity: probes, init containers, resources, restartPolicy come through untouched
    orig = req["pod"]["spec"]
    assert spec["containers"][0]["livenessProbe"] == orig["containers"][0]["livenessProbe"]
    assert spec["initContainers"] == orig["initContainers"]
    assert spec["containers"][0]["resources"] == orig["containers"][0]["resources"]
    assert spec["restartPolicy"] == "Never"


def test_names_and_namespaces() -> None:
    uid = str(uuid.uuid4())
    long = remote_name("a-very-long-pod-name-that-goes-on-and-on-and-on", uid)
    assert len(long) <= 63 and long.endswith(uid) and not long.startswith("-")
    keep = OffloadKubernetesSection(unprefixed=["shared"])
    req = load_create(uid)
    req["pod"]["metadata"]["namespace"] = "shared"
    (parsed,) = parse_create(json.dumps(req).encode())
    assert translate(parsed, keep).namespace == "shared"
    req["pod"]["metadata"]["namespace"] = "kube-system"
    (parsed,) = parse_create(json.dumps(req).encode())
    with pytest.raises(WireError):
        translate(parsed, keep)


@pytest.fixture
def kube_server(tmp_path: Path, fake_kube: FakeKube) -> Iterator[Server]:
    toml = kube_toml(tmp_path, fake_kube, 'namespace_prefix = "tenant-"\nnode_selector = { pool = "offload" }\n')
    server = Server(tmp_path, toml).start()
    yield server
    server.stop()


def test_pod_lifecycle_through_the_api(kube_server: Server, fake_kube: FakeKube) -> None:
    req = load_create(str(uuid.uuid4()))
    pod = req["pod"]
    r = kube_server.create(req)
    assert r.status_code == 200, r.text
    ns, name = r.json()["PodJID"].split("/")
    assert ns == "tenant-cms"
    remote = fake_kube.objects[("pods", ns, name)]
    kinds = sorted(k for (k, n, _) in fake_kube.objects if n == ns)
    assert kinds == ["configmaps", "configmaps", "pods", "secrets"]
    assert remote["spec"]["nodeSelector"] == {"pool": "offload"}
    # a retried create is the same pod
    assert kube_server.create(req).json()["PodJID"] == f"{ns}/{name}"

    assert states(kube_server.status(pod)) == {"prepare": "waiting", "main": "waiting"}
    running = {
        "name": "main",
        "image": "docker.io/library/busybox:latest",
        "ready": True,
        "restartCount": 0,
        "state": {"running": {"startedAt": "2026-11-22T04:00:05Z"}},
    }
    done_init = {
        "name": "prepare",
        "image": "docker.io/library/busybox:latest",
        "ready": False,
        "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
    }
    remote["status"] = {
        "phase": "Running",
        "initContainerStatuses": [done_init],
        "containerStatuses": [running],
    }
    fake_kube.modified(ns, name)
    wait_for(kube_server, pod, lambda st: states(st) == {"prepare": "terminated", "main": "running"}, timeout=10)

    fake_kube.logs[(ns, name, "main")] = ["one", "two", "three"]
    assert kube_server.logs(pod, "main").text == "one\ntwo\nthree\n"
    assert kube_server.logs(pod, "main", Tail=1).text == "three\n"
    assert (
        "GET",
        f"/api/v1/namespaces/{ns}/pods/{name}/log",
        "container=main&tailLines=1",
    ) in fake_kube.requests
    started = time.monotonic()
    followed = kube_server.logs(pod, "main", Follow=True)
    assert followed.text == "one\ntwo\nthree\n" and time.monotonic() - started >= 0.6  # streamed, not buffered

    finished = copy.deepcopy(running)
    finished["state"] = {"terminated": {"exitCode": 3, "reason": "Error"}}
    remote["status"]["containerStatuses"] = [finished]
    fake_kube.modified(ns, name)
    st = wait_for(kube_server, pod, lambda st: states(st)["main"] == "terminated", timeout=10)[-1]
    assert st["containers"][0]["state"]["terminated"]["exitCode"] == 3

    # the status changes above arrived through the watch: one watch, no LIST per refresh or per status call
    watches = [q for m, p, q in fake_kube.requests if p == "/api/v1/pods" and "watch=true" in q]
    lists = [q for m, p, q in fake_kube.requests if p == "/api/v1/pods" and "watch=true" not in q]
    assert len(watches) == 1 and len(lists) <= 3, (watches, lists)
    for _ in range(20):
        kube_server.status(pod)
    assert [q for m, p, q in fake_kube.requests if p == "/api/v1/pods" and "watch" not in q] == lists

    ping = kube_server.client.request("GET", "/status", json=[]).json()
    assert ping["resources"]["cpu"] == "7" and ping["resources"]["memory"] == "16384Mi"

    assert kube_server.delete(pod).status_code == 200
    assert not [k for k in fake_kube.objects if k[1] == ns]
    assert kube_server.delete(pod).status_code == 200


def test_broken_watch_is_relisted(kube_server: Server, fake_kube: FakeKube) -> None:
    req = load_create(str(uuid.uuid4()))
    ns, name = kube_server.create(req).json()["PodJID"].split("/")
    watching = [("GET", "/api/v1/pods")]  # wait until the watch is open and has delivered the pod
    wait_for(
        kube_server,
        req["pod"],
        lambda st: any(r[:2] == watching[0] and "watch" in r[2] for r in fake_kube.requests),
        timeout=10,
    )
    time.sleep(0.5)
    lists_before = len([q for m, p, q in fake_kube.requests if p == "/api/v1/pods" and "watch" not in q])
    # the API server ends the watch with 410 Gone (a compacted resourceVersion), then the pod changes
    fake_kube.events.append((fake_kube.version + 1, "ERROR", {"metadata": {}, "code": 410, "message": "too old"}))
    fake_kube.version += 1
    remote = fake_kube.objects[("pods", ns, name)]
    remote["status"] = {
        "phase": "Failed",
        "containerStatuses": [
            {
                "name": "main",
                "image": "x",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 9, "reason": "Error"}},
            }
        ],
    }
    st = wait_for(kube_server, req["pod"], lambda st: states(st)["main"] == "terminated", timeout=15)[-1]
    assert st["containers"][0]["state"]["terminated"]["exitCode"] == 9
    lists_after = len([q for m, p, q in fake_kube.requests if p == "/api/v1/pods" and "watch" not in q])
    assert lists_after > lists_before
    kube_server.delete(req["pod"])


def test_refused_namespace_is_a_clear_422(kube_server: Server, fake_kube: FakeKube) -> None:
    req = load_create(str(uuid.uuid4()))
    req["pod"]["metadata"]["namespace"] = "kube-system"
    r = kube_server.create(req)
    assert r.status_code == 422 and "kube-system" in r.text
    assert not [k for k in fake_kube.objects if k[0] == "pods"]


def test_follow_ends_when_client_goes_away(kube_server: Server, fake_kube: FakeKube) -> None:
    req = load_create(str(uuid.uuid4()))
    ns, name = kube_server.create(req).json()["PodJID"].split("/")
    fake_kube.logs[(ns, name, "main")] = [f"line {i}" for i in range(100)]
    fake_kube.follow_delay = 0.05
    got: list[str] = []

    def read_some() -> None:
        body = {"PodUID": req["pod"]["metadata"]["uid"], "ContainerName": "main", "Opts": {"Follow": True}}
        with kube_server.client.stream("GET", "/getLogs", json=body) as resp:
            for chunk in resp.iter_text():
                got.append(chunk)
                if "line 3" in "".join(got):
                    return

    t = threading.Thread(target=read_some)
    t.start()
    t.join(20)
    assert not t.is_alive() and "line 0" in "".join(got)
    assert kube_server.client.get("/healthz").status_code == 200
    kube_server.delete(req["pod"])


def test_failed_remote_log_read_is_an_error_status(kube_server: Server, fake_kube: FakeKube) -> None:
    """A log read the remote cluster fails is a 502 (a 404 when it says not found), never a 200 whose body
    is the error; with Follow too (the answer waits for the remote stream to open)."""
    req = load_create(str(uuid.uuid4()))
    pod = req["pod"]
    assert kube_server.create(req).status_code == 200
    ns, name = kube_server.create(req).json()["PodJID"].split("/")
    r = kube_server.logs(pod, "main")  # the fake has no log for it: the API server's 404
    assert r.status_code == 404 and "not found" in r.text
    fake_kube.logs[(ns, name, "main")] = ["one"]
    assert kube_server.logs(pod, "main").text == "one\n"
    fake_kube.log_error = 500
    for follow in (False, True):
        r = kube_server.logs(pod, "main", Follow=follow)
        assert r.status_code == 502 and "HTTP 500" in r.text and "one" not in r.text, (follow, r.text)
    fake_kube.log_error = 0
    assert kube_server.logs(pod, "main", Follow=True).text == "one\n"
    assert kube_server.delete(pod).status_code == 200


def _client_cert(tmp: Path) -> tuple[str, str, str]:
    """A self-signed CA-less client certificate and key (openssl), base64 as a kubeconfig embeds them."""
    key, crt = tmp / "k.pem", tmp / "c.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
         "-days", "1", "-subj", "/CN=marea-test"],
        check=True, capture_output=True,
    )  # fmt: skip
    b64 = [base64.b64encode(p.read_bytes()).decode() for p in (crt, key)]
    return b64[0], b64[1], b64[0]


def test_embedded_key_files_do_not_outlive_the_server(
    tmp_path: Path, fake_kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kubeconfig with an embedded client key and CA: the server loads them and leaves no file of them in
    its temporary directory, neither while it runs nor after it is killed with SIGKILL (no cleanup runs)."""
    cert, key, ca = _client_cert(tmp_path)
    doc = json.loads(fake_kube.kubeconfig())
    doc["users"][0]["user"].update({"client-certificate-data": cert, "client-key-data": key})
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = ca
    private_tmp = tmp_path / "tmpdir"
    private_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    server = Server(tmp_path, kube_toml(tmp_path, fake_kube, kubeconfig_text=json.dumps(doc))).start()
    try:
        req = load_create(str(uuid.uuid4()))
        assert server.create(req).status_code == 200  # the backend is up and talking (http: no TLS here)
        assert list(private_tmp.iterdir()) == []
        key_text = base64.b64decode(key)
        leftovers = [p for p in Path("/tmp").glob("marea-kube-*") if p.is_file() and p.read_bytes() == key_text]
        assert leftovers == []
        server.kill()
        assert list(private_tmp.iterdir()) == []
    finally:
        server.stop()
