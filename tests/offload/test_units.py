"""Pure parts of the offload server: wire checks, quantities, k8s-file logs, the pod directory writer."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from marea.offload.logs import parse_chunk, read_log, render, select
from marea.offload.podspec import PodDirWriter, expand
from marea.offload.quantity import QuantityError, parse_quantity, pod_request
from marea.offload.wire import LogRequest, PodRef, WireError, parse_create, parse_logs, parse_pod_list
from tests.offload.conftest import load_create


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_create_single_and_list_forms() -> None:
    req = load_create("u-1")
    (one,) = parse_create(body(req))
    assert one.ref == PodRef("u-1", "pod-u-1", "cms")
    assert set(one.configmaps) == {"flashsim-settings"} and set(one.secrets) == {"flashsim-creds"}
    assert set(one.projected) == {"kube-api-access-x7k2p"}
    assert one.pod is not req["pod"] and one.pod == req["pod"]  # kept whole, every field
    two = parse_create(body([req, load_create("u-2")]))
    assert [r.ref.uid for r in two] == ["u-1", "u-2"]


@pytest.mark.parametrize(
    ("doc", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"{", 400, "malformed"),
        (b"[]", 422, "no pod"),
        (b'"x"', 422, "object"),
        (b'{"pod": {"metadata": {"name": "a"}}}', 422, "uid"),
        (b'{"pod": {"metadata": {"name": "a", "uid": "../x"}}}', 422, "uid"),
        (
            b'{"pod": {"metadata": {"name": "a", "uid": "u"}, "spec": {"containers": [{"name": "c"}]}}}',
            422,
            "image",
        ),
        (
            b'{"pod": {"metadata": {"name": "a", "uid": "u"}, "spec": {"containers": '
            b'[{"name": "c", "image": "i", "command": "ls"}]}}}',
            422,
            "command",
        ),
        (
            b'{"pod": {"metadata": {"name": "a", "uid": "u"}, "spec": {"containers": '
            b'[{"name": "c", "image": "i"}]}}, "container": '
            b'[{"configMaps": [{"metadata": {"name": "m"}, "data": {"k": 1}}]}]}',
            422,
            "strings",
        ),
    ],
)
def test_create_errors_are_short_and_clear(doc: bytes, status: int, words: str) -> None:
    with pytest.raises(WireError) as exc:
        parse_create(doc)
    assert exc.value.status == status and words in exc.value.message and len(exc.value.message) < 200


def test_status_and_log_requests() -> None:
    assert parse_pod_list(b"[]") == [] and parse_pod_list(b"null") == []
    with pytest.raises(WireError):
        parse_pod_list(b'[{"metadata": {}}]')
    req = parse_logs(
        body(
            {
                "PodUID": "u",
                "ContainerName": "c",
                "Opts": {"Tail": 5, "Bytes": 10, "SinceTime": "0001-01-01T00:00:00Z", "Follow": True},
            }
        )
    )
    assert (req.tail, req.limit_bytes, req.since_time, req.follow) == (5, 10, None, True)
    nano = parse_logs(
        body({"PodUID": "u", "ContainerName": "c", "Opts": {"SinceTime": "2026-11-22T04:00:01.123456789Z"}})
    )
    assert nano.since_time == datetime(2026, 11, 22, 4, 0, 1, 123456, tzinfo=UTC)
    for bad in ({"Tail": -1}, {"Follow": "yes"}, {"SinceTime": "yesterday"}, {"Bytes": 1.5}):
        with pytest.raises(WireError):
            parse_logs(body({"PodUID": "u", "ContainerName": "c", "Opts": bad}))


def test_quantities_and_pod_request() -> None:
    assert parse_quantity("500m") == 0.5 and parse_quantity("2") == 2 and parse_quantity("1Gi") == 2**30
    assert parse_quantity("1e3") == 1000 and parse_quantity("128M") == 128e6
    for bad in ("lots", "", "-1", "1Xi", {"a": 1}, True):
        with pytest.raises(QuantityError):
            parse_quantity(bad)
    pod = {
        "spec": {
            "initContainers": [{"resources": {"requests": {"cpu": "3", "memory": "1Gi"}}}],
            "containers": [
                {"resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "100Mi"}}},
                {"resources": {"limits": {"cpu": "1", "memory": "200Mi"}}},
            ],
        }
    }
    want = pod_request(pod)
    assert want.cpus == 3 and want.memory_bytes == 2**30  # the init container is larger than the apps' sum
    assert want.slurm_cpus == 3 and want.slurm_mem_mb == 1024
    pod["spec"]["initContainers"] = []
    want = pod_request(pod)
    assert want.cpus == 1.5 and want.slurm_cpus == 2 and want.slurm_mem_mb == 300


LOG = (
    "2026-11-22T04:00:00.000000001+00:00 stdout F first\n"
    "2026-11-22T04:00:01.000000000+00:00 stdout P par\n"
    "2026-11-22T04:00:01.500000000+00:00 stdout F tial\n"
    "2026-11-22T04:00:02.000000000+00:00 stderr F third\n"
)


def test_k8s_file_logs(tmp_path: Path) -> None:
    entries = parse_chunk(LOG, [])
    assert [e.text for e in entries] == ["first\n", "partial\n", "third\n"]
    ref = PodRef("u", "n", "ns")
    assert render(select(entries, LogRequest(ref, "c", tail=2)), False) == b"partial\nthird\n"
    since = LogRequest(ref, "c", since_time=datetime(2026, 11, 22, 4, 0, 1, 600000, tzinfo=UTC))
    assert render(select(entries, since), False) == b"third\n"
    now = datetime(2026, 11, 22, 4, 0, 2, 500000, tzinfo=UTC)
    recent = LogRequest(ref, "c", since_seconds=1)
    assert render(select(entries, recent, now=now), False) == b"partial\nthird\n"
    assert render(select(entries, LogRequest(ref, "c", tail=1)), True).startswith(b"2026-11-22T04:00:02")
    path = tmp_path / "c.log"
    path.write_text(LOG)
    assert read_log(path, LogRequest(ref, "c", limit_bytes=8)) == b"first\npa"
    assert read_log(tmp_path / "missing.log", LogRequest(ref, "c")) == b""
    assert now - timedelta(seconds=1) > datetime(2026, 11, 22, 4, 0, 1, tzinfo=UTC)


def write_pod(tmp_path: Path, req: dict[str, Any]) -> dict[str, Any]:
    (parsed,) = parse_create(body(req))
    return PodDirWriter(parsed, tmp_path / "pod").write(["podman"], [], 1)


def test_pod_directory(tmp_path: Path) -> None:
    req = load_create("uid-dir")
    main = req["pod"]["spec"]["containers"][0]
    main["envFrom"] = [{"prefix": "CM_", "configMapRef": {"name": "flashsim-settings"}}]
    main["env"].append({"name": "GREETING", "value": "$(MODE)-$(NOPE)-$$"})
    main["volumeMounts"].append({"name": "settings", "mountPath": "/g", "subPath": "greeting"})
    req["pod"]["spec"]["containers"][0]["volumeMounts"] = main["volumeMounts"]
    req["container"][1]["configMaps"] = req["container"][0]["configMaps"]
    plan = write_pod(tmp_path, req)
    pod_dir = tmp_path / "pod"
    assert (pod_dir / "plan.json").stat().st_mode & 0o777 == 0o600
    assert (pod_dir / "volumes/settings/greeting").read_text() == "hello offload"
    assert (pod_dir / "volumes/creds/password").read_text() == "s3cr3t-pw"
    assert (pod_dir / "volumes/kube-api-access-x7k2p/namespace").read_text() == "cms"
    assert (pod_dir / "volumes/scratch").is_dir()
    c = plan["containers"][0]
    assert c["env"]["DB_USER"] == "alice" and c["env"]["POD_NAME"] == "pod-uid-dir"
    assert c["env"]["CM_greeting"] == "hello offload" and c["env"]["GREETING"] == "fast-$(NOPE)-$"
    assert {"source": "volumes/settings/greeting", "target": "/g", "readOnly": False, "host": False} in c["mounts"]
    assert [x["name"] for x in plan["initContainers"]] == ["prepare"]
    assert expand("$(A)$(B)", {"A": "1"}) == "1$(B)"


def test_pod_directory_builds_projected_files_when_no_map_arrived(tmp_path: Path) -> None:
    req = load_create("uid-proj")
    req["container"][1]["projectedvolumemaps"] = None
    write_pod(tmp_path, req)
    assert (tmp_path / "pod/volumes/kube-api-access-x7k2p/namespace").read_text() == "cms"
    assert not (tmp_path / "pod/volumes/kube-api-access-x7k2p/token").exists()  # only the API server mints it


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda r: r["container"][0].update(configMaps=None), "did not arrive"),
        (lambda r: r["container"][1]["secrets"][0]["data"].update(password="%%%"), "base64"),
        (
            lambda r: r["pod"]["spec"]["volumes"].append({"name": "pvc", "persistentVolumeClaim": {"claimName": "x"}}),
            "not supported",
        ),
        (
            lambda r: r["pod"]["spec"]["containers"][0]["volumeMounts"].append({"name": "nope", "mountPath": "/x"}),
            "names no volume",
        ),
        (
            lambda r: r["pod"]["spec"]["containers"][0]["volumeMounts"].append(
                {"name": "scratch", "mountPath": "/x", "subPath": "../../etc"}
            ),
            "without '..'",
        ),
    ],
)
def test_pod_directory_refuses_what_it_cannot_honour(tmp_path: Path, change: Any, words: str) -> None:
    req = load_create("uid-bad")
    change(req)
    with pytest.raises(WireError) as exc:
        write_pod(tmp_path, req)
    assert exc.value.status == 422 and words in exc.value.message


def test_optional_configmap_may_be_missing(tmp_path: Path) -> None:
    req = load_create("uid-opt")
    req["container"][0]["configMaps"] = None
    req["pod"]["spec"]["volumes"][0]["configMap"]["optional"] = True
    write_pod(tmp_path, req)
    assert (tmp_path / "pod/volumes/settings").is_dir()
    secret = base64.b64encode(b"x").decode()
    assert secret == "eA=="


def test_status_parse_cache_never_serves_stale_answers(tmp_path: Path) -> None:
    from marea.offload.service import OffloadService
    from marea.offload.state import PodStore
    from marea.offload.wire import pod_status

    svc = OffloadService(None, PodStore(tmp_path / "s.db"), parse_cache_size=2)  # type: ignore[arg-type]
    pods = [load_create(f"u-{i}")["pod"] for i in range(3)]
    bodies = [body([p]) for p in pods]
    ref = PodRef("u-0", "pod-u-0", "cms")
    svc.cache["u-0"] = pod_status(ref, "1", [{"name": "main", "state": {"waiting": {}}}], [])
    first = json.loads(svc.status_answer(bodies[0]) or b"")
    assert first[0]["containers"][0]["state"] == {"waiting": {}}
    svc.cache["u-0"] = pod_status(ref, "1", [{"name": "main", "state": {"running": {}}}], [])
    assert json.loads(svc.status_answer(bodies[0]) or b"")[0]["containers"][0]["state"] == {"running": {}}
    unknown = json.loads(svc.status_answer(bodies[1]) or b"")
    assert unknown[0]["containers"][0]["state"]["terminated"]["reason"] == "NotFound"
    svc.status_answer(bodies[2])
    assert len(svc.parsed) <= 2
    assert svc.status_answer(b"[]") is None
    with pytest.raises(WireError):
        svc.status_answer(b"[{}]")
