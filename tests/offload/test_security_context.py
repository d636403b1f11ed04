"""securityContext and host access on the `local` backend, checked with `podman inspect` and from inside the
containers: refused (422 naming the field) under the default configuration, applied when
`[offload.security]` allows it; the pod's network namespace (offload.network) shared by its app containers.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.offload.conftest import (
    LOCAL_TOML,
    PODMAN,
    Server,
    all_terminated,
    podman_containers,
    simple_pod,
    wait_for,
)

pytestmark = pytest.mark.podman


def inspect(uid: str) -> dict[str, dict[str, Any]]:
    """container name (in the pod) -> podman inspect of it."""
    out = {}
    for c in podman_containers(uid):
        (info,) = json.loads(subprocess.run([*PODMAN, "inspect", c["Id"]], capture_output=True, check=True).stdout)
        out[info["Config"]["Labels"]["marea.offload.container"]] = info
    return out


def running(st: dict[str, Any]) -> bool:
    return all("running" in c["state"] for c in st["containers"])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"containers": {"securityContext": {"privileged": True}}}, "securityContext.privileged"),
        ({"containers": {"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}}, "capabilities.add NET_ADMIN"),
        ({"spec": {"hostNetwork": True}}, "pod.spec.hostNetwork"),
        ({"spec": {"hostPID": True}}, "pod.spec.hostPID"),
        ({"spec": {"hostIPC": True}}, "pod.spec.hostIPC"),
        ({"spec": {"volumes": [{"name": "h", "hostPath": {"path": "/etc"}}]}}, "hostPath /etc"),
        ({"containers": {"securityContext": {"runAsNonRoot": True, "runAsUser": 0}}}, "runAsNonRoot"),
        ({"spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 0}}}, "runAsNonRoot"),
    ],
)
def test_refused_by_default(local_server: Server, change: dict[str, Any], field: str) -> None:
    req = simple_pod(str(uuid.uuid4()), "true")
    req["pod"]["spec"].update(change.get("spec", {}))
    req["pod"]["spec"]["containers"][0].update(change.get("containers", {}))
    r = local_server.create(req)
    assert r.status_code == 422 and field in r.text, r.text
    assert podman_containers(req["pod"]["metadata"]["uid"]) == []


@pytest.fixture
def allowing_server(tmp_path: Path, podman_image: str) -> Iterator[Server]:
    host_dir = tmp_path / "shared"
    host_dir.mkdir()
    (host_dir / "data.txt").write_text("from the host\n")
    toml = (
        LOCAL_TOML.replace('backend = "local"', 'backend = "local"\nnetwork = "default"')
        + f"""
[offload.security]
allow_privileged = true
allowed_capabilities = ["NET_ADMIN"]
allow_host_network = true
allowed_host_paths = ["{host_dir}"]
"""
    )
    server = Server(tmp_path, toml).start()
    yield server
    server.stop()


def test_security_context_is_applied(allowing_server: Server) -> None:
    script = "id; grep NoNewPrivs /proc/self/status; touch /rootfs-write 2>/dev/null || echo read-only; sleep 4"
    req = simple_pod(str(uuid.uuid4()), script)
    req["pod"]["spec"]["securityContext"] = {"supplementalGroups": [3000], "runAsGroup": 2000}
    req["pod"]["spec"]["containers"][0]["securityContext"] = {
        "runAsUser": 1000,
        "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
    }
    pod, uid = req["pod"], req["pod"]["metadata"]["uid"]
    assert allowing_server.create(req).status_code == 200
    wait_for(allowing_server, pod, running)
    info = inspect(uid)["main"]
    assert info["Config"]["User"] == "1000:2000"
    assert info["HostConfig"]["CapAdd"] == ["CAP_NET_ADMIN"]
    assert "CAP_CHOWN" in info["HostConfig"]["CapDrop"] and "CAP_SETUID" in info["HostConfig"]["CapDrop"]
    assert info["EffectiveCaps"] == ["CAP_NET_ADMIN"]
    assert "no-new-privileges" in info["HostConfig"]["SecurityOpt"]
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert info["HostConfig"]["GroupAdd"] == ["3000"]
    assert info["HostConfig"]["Privileged"] is False
    assert info["HostConfig"]["NetworkMode"] == "bridge"  # network = "default": podman's (root: the bridge)
    wait_for(allowing_server, pod, all_terminated)
    out = allowing_server.logs(pod, "main").text.splitlines()
    assert out[0].startswith("uid=1000(1000) gid=2000(2000)") and ",3000" in out[0]
    assert out[1].split() == ["NoNewPrivs:", "1"]
    assert out[2] == "read-only"
    assert allowing_server.delete(pod).status_code == 200


def test_allowed_privileges_host_network_and_host_path(allowing_server: Server) -> None:
    req = simple_pod(str(uuid.uuid4()), "cat /h/data.txt; sleep 4")
    spec = req["pod"]["spec"]
    spec["hostNetwork"] = True
    spec["volumes"] = [{"name": "h", "hostPath": {"path": str(allowing_server.workdir / "shared")}}]
    spec["containers"][0]["volumeMounts"] = [{"name": "h", "mountPath": "/h", "readOnly": True}]
    spec["containers"][0]["securityContext"] = {"privileged": True}
    pod, uid = req["pod"], req["pod"]["metadata"]["uid"]
    assert allowing_server.create(req).status_code == 200, allowing_server.create(req).text
    wait_for(allowing_server, pod, running)
    info = inspect(uid)["main"]
    assert info["HostConfig"]["Privileged"] is True
    assert info["HostConfig"]["NetworkMode"] == "host"
    assert any(m["Destination"] == "/h" and m["Source"].endswith("/shared") for m in info["Mounts"])
    wait_for(allowing_server, pod, all_terminated)
    assert allowing_server.logs(pod, "main").text == "from the host\n"
    assert allowing_server.delete(pod).status_code == 200


def test_run_as_non_root_against_a_root_image(local_server: Server) -> None:
    """runAsNonRoot with no runAsUser: the image's user (busybox: root) decides, at run time, as the kubelet."""
    req = simple_pod(str(uuid.uuid4()), "true")
    req["pod"]["spec"]["securityContext"] = {"runAsNonRoot": True}
    assert local_server.create(req).status_code == 200
    final = wait_for(local_server, req["pod"], all_terminated)[-1]
    term = final["containers"][0]["state"]["terminated"]
    assert term["reason"] == "CreateContainerConfigError" and "runAsNonRoot" in term["message"]
    assert local_server.delete(req["pod"]).status_code == 200


def test_app_containers_share_the_pods_own_network_namespace(local_server: Server) -> None:
    """offload.network = "none" (the default): the first app container holds a namespace with loopback only,
    the second joins it (same namespace inode seen from inside both), and it is not the host's."""
    req = simple_pod(str(uuid.uuid4()), "readlink /proc/self/ns/net; ip -o link | cut -d: -f2; sleep 3")
    second = json.loads(json.dumps(req["pod"]["spec"]["containers"][0]))
    second["name"] = "side"
    req["pod"]["spec"]["containers"].append(second)
    req["container"].append({"name": "side", "configMaps": None, "secrets": None, "projectedvolumemaps": None})
    pod, uid = req["pod"], req["pod"]["metadata"]["uid"]
    assert local_server.create(req).status_code == 200, local_server.create(req).text
    wait_for(local_server, pod, running)
    infos = inspect(uid)
    assert infos["main"]["HostConfig"]["NetworkMode"] == "none"
    assert infos["side"]["HostConfig"]["NetworkMode"] == f"container:{infos['main']['Id']}"
    wait_for(local_server, pod, all_terminated)
    main, side = (local_server.logs(pod, c).text.split() for c in ("main", "side"))
    assert main[0] == side[0] != Path("/proc/self/ns/net").readlink().name
    assert main[1:] == ["lo"]
    assert local_server.delete(pod).status_code == 200


def test_root_refused_where_the_configuration_forbids_it(tmp_path: Path, podman_image: str) -> None:
    """`allow_run_as_root = false`: runAsUser 0 is a 422; an image whose user is root (busybox) does not run
    (CreateContainerConfigError, as runAsNonRoot); runAsUser 1000 runs as 1000 (podman inspect and `id`)."""
    toml = LOCAL_TOML + "\n[offload.security]\nallow_run_as_root = false\n"
    server = Server(tmp_path, toml).start()
    try:
        root = simple_pod(str(uuid.uuid4()), "id")
        root["pod"]["spec"]["containers"][0]["securityContext"] = {"runAsUser": 0}
        r = server.create(root)
        assert r.status_code == 422 and "runAsUser 0" in r.text and "allow_run_as_root" in r.text, r.text

        image_root = simple_pod(str(uuid.uuid4()), "id")
        assert server.create(image_root).status_code == 200
        term = wait_for(server, image_root["pod"], all_terminated)[-1]["containers"][0]["state"]["terminated"]
        assert term["reason"] == "CreateContainerConfigError" and "run as root" in term["message"]
        assert server.delete(image_root["pod"]).status_code == 200

        user = simple_pod(str(uuid.uuid4()), "id -u; sleep 3")
        user["pod"]["spec"]["securityContext"] = {"runAsUser": 1000}
        assert server.create(user).status_code == 200
        wait_for(server, user["pod"], running)
        assert inspect(user["pod"]["metadata"]["uid"])["main"]["Config"]["User"] == "1000"
        wait_for(server, user["pod"], all_terminated)
        assert server.logs(user["pod"], "main").text == "1000\n"
        assert server.delete(user["pod"]).status_code == 200
    finally:
        server.stop()


def test_pod_variables_do_not_steer_podman(local_server: Server) -> None:
    """A pod's PATH, CONTAINERS_CONF and LD_PRELOAD reach its container, not the podman process that creates
    it (with them in podman's environment, podman would read the pod's file as its configuration, or fail)."""
    req = simple_pod(str(uuid.uuid4()), 'echo "$PATH|$CONTAINERS_CONF|$LD_PRELOAD"')
    req["pod"]["spec"]["containers"][0]["env"] = [
        {"name": "PATH", "value": "/bin:/marea-pod-bin"},
        {"name": "CONTAINERS_CONF", "value": "/marea-no-such/containers.conf"},
        {"name": "LD_PRELOAD", "value": "/marea-no-such/evil.so"},
    ]
    assert local_server.create(req).status_code == 200
    final = wait_for(local_server, req["pod"], all_terminated)[-1]
    assert final["containers"][0]["state"]["terminated"]["exitCode"] == 0, final
    text = local_server.logs(req["pod"], "main").text
    assert text == "/bin:/marea-pod-bin|/marea-no-such/containers.conf|/marea-no-such/evil.so\n"
    assert local_server.delete(req["pod"]).status_code == 200
