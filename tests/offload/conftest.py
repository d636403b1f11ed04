"""Fixtures for the offload server tests: a real server process on a unix socket, podman, and a private Slurm.

The Slurm instance is this test suite's own (namespace marea-slurm-off, subnet 10.233.0.0/24), started with
the project's testbed script, plus one dynamic node (`slurmd -Z`) in its own network namespace; both are
stopped at the end of the session.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.offload.fake_kube import FakeKube

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "offload"
BUSYBOX = "docker.io/library/busybox:latest"
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]

SLURM_ENV = {
    "MAREA_SLURM_NS": "marea-slurm-off",
    "MAREA_SLURM_BASE": "/tmp/marea-slurm-off",
    "MAREA_SLURM_SUBNET": "10.233.0",
    "MAREA_SLURM_PORT_BASE": "17300",
}
SLURM_CONF = "/tmp/marea-slurm-off/etc/slurm.conf"
NODE = "offn1"
NODE_NS = "marea-slurm-off-n1"


def load_create(uid: str | None = None, **changes: Any) -> dict[str, Any]:
    """The recorded-shape create request (as interLink 0.6.2 sends it), with a fresh uid if asked."""
    req: dict[str, Any] = json.loads((DATA / "create_busybox.json").read_text())
    if uid:
        req["pod"]["metadata"]["uid"] = uid
        req["pod"]["metadata"]["name"] = f"pod-{uid[:8]}"
    for key, value in changes.items():
        req["pod"]["spec"][key] = value
    return req


def simple_pod(uid: str, script: str, cpu: str = "", memory: str = "", name: str = "main") -> dict[str, Any]:
    req = load_create(uid)
    spec = req["pod"]["spec"]
    spec["initContainers"] = []
    spec["volumes"] = []
    c = copy.deepcopy(spec["containers"][0])
    c.update(name=name, command=["sh", "-c"], args=[script], env=[], volumeMounts=[])
    c["resources"] = {"requests": {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}}
    spec["containers"] = [c]
    req["container"] = [{"name": name, "configMaps": None, "secrets": None, "projectedvolumemaps": None}]
    return req


class Server:
    """`marea offload serve` as a real process; an httpx client over its unix socket."""

    def __init__(self, workdir: Path, toml: str) -> None:
        self.workdir = workdir
        # unix socket paths are limited to 107 bytes: keep it short, outside pytest's long tmp path
        self.sock = Path(tempfile.mkdtemp(prefix="mo", dir="/tmp")) / "s.sock"
        self.config = workdir / "marea.toml"
        self.config.write_text(toml.replace("@SOCK@", str(self.sock)).replace("@STATE@", str(workdir / "state")))
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.sock)), base_url="http://offload", timeout=60
        )

    def start(self) -> Server:
        log = (self.workdir / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "marea.cli",
                "offload",
                "serve",
                "-c",
                str(self.config),
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=log,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.workdir / 'server.log').read_text()[-2000:]}")
            try:
                if self.client.get("/healthz").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not come up")

    def kill(self) -> None:
        """SIGKILL: the crash case (no shutdown code runs)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.sock.parent, ignore_errors=True)

    # -- the interLink calls ---------------------------------------------------------------------------------
    def create(self, req: Any) -> httpx.Response:
        return self.client.post("/create", json=req)

    def status(self, pod: dict[str, Any]) -> dict[str, Any]:
        r = self.client.request("GET", "/status", json=[pod])
        assert r.status_code == 200, r.text
        (st,) = r.json()
        return dict(st)

    def logs(self, pod: dict[str, Any], container: str, **opts: Any) -> httpx.Response:
        body = {
            "Namespace": pod["metadata"]["namespace"],
            "PodUID": pod["metadata"]["uid"],
            "PodName": pod["metadata"]["name"],
            "ContainerName": container,
            "Opts": {
                "Tail": 0,
                "LimitBytes": 0,
                "Timestamps": False,
                "Follow": False,
                "Previous": False,
                "SinceSeconds": 0,
                "SinceTime": "0001-01-01T00:00:00Z",
                **opts,
            },
        }
        return self.client.request("GET", "/getLogs", json=body)

    def delete(self, pod: dict[str, Any]) -> httpx.Response:
        return self.client.post("/delete", json=pod)


class LogFollower:
    """`kubectl logs -f` in a thread, started while the container runs: the stream must end by itself when the
    container ends (`text` fails otherwise)."""

    def __init__(self, server: Server, pod: dict[str, Any], container: str = "main", **opts: Any) -> None:
        self.chunks: list[str] = []
        self.status_code = 0
        body = {
            "PodUID": pod["metadata"]["uid"],
            "PodName": pod["metadata"]["name"],
            "Namespace": pod["metadata"]["namespace"],
            "ContainerName": container,
            "Opts": {"Follow": True, **opts},
        }
        self.thread = threading.Thread(target=self._follow, args=(server, body))
        self.thread.start()

    def _follow(self, server: Server, body: dict[str, Any]) -> None:
        with server.client.stream("GET", "/getLogs", json=body) as resp:
            self.status_code = resp.status_code
            self.chunks.extend(resp.iter_text())

    def text(self, timeout: float = 30) -> str:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "follow did not end with the container"
        assert self.status_code == 200
        return "".join(self.chunks)


def assert_recorded_pod_output(server: Server, pod: dict[str, Any]) -> None:
    """What the recorded interLink pod's `main` prints: the ConfigMap through the init container and the
    emptyDir, the downward API through the projected volume, env from a Secret and a fieldRef, the Secret
    volume; then its last line alone with Tail."""
    lines = server.logs(pod, "main").text.splitlines()
    assert lines[:3] == [
        f"hello offload from {pod['metadata']['name']} in cms",
        "user=alice mode=fast",
        "s3cr3t-pw",
    ]
    assert server.logs(pod, "main", Tail=1).text == "main done\n"


def check_failing_pod_exit_code(server: Server, timeout: float = 60) -> None:
    """A container that exits 42 gives exit code 42, reason Error, and its stderr as its log."""
    req = simple_pod(str(uuid.uuid4()), "echo boom >&2; exit 42")
    assert server.create(req).status_code == 200
    st = wait_for(server, req["pod"], all_terminated, timeout=timeout)[-1]
    term = st["containers"][0]["state"]["terminated"]
    assert term["exitCode"] == 42 and term["reason"] == "Error"
    assert server.logs(req["pod"], "main").text == "boom\n"
    assert server.delete(req["pod"]).status_code == 200


def check_server_restart_while_pod_runs(server: Server, timeout: float = 60) -> None:
    """SIGKILL the server while a pod's job runs, start it again: the pod is found, finishes, has its logs."""
    req = simple_pod(str(uuid.uuid4()), "echo a; sleep 4; echo b")
    pod = req["pod"]
    assert server.create(req).status_code == 200
    wait_for(server, pod, lambda st: states(st)["main"] == "running", timeout=timeout)
    server.kill()
    server.start()
    assert states(server.status(pod))["main"] in ("running", "terminated")
    final = wait_for(server, pod, all_terminated, timeout=timeout)[-1]
    assert final["containers"][0]["state"]["terminated"]["exitCode"] == 0
    assert server.logs(pod, "main").text == "a\nb\n"
    assert server.delete(pod).status_code == 200


def states(st: dict[str, Any]) -> dict[str, str]:
    """container name -> waiting | running | terminated"""
    return {c["name"]: next(iter(c["state"])) for c in [*(st.get("initContainers") or []), *st["containers"]]}


def wait_for(server: Server, pod: dict[str, Any], done: Any, timeout: float = 60) -> list[dict[str, Any]]:
    """Poll /status until done(status) holds; return every status seen (to check the order of states)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = server.status(pod)
        seen.append(st)
        if done(st):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"timed out; last status {seen[-1] if seen else None}")


def all_terminated(st: dict[str, Any]) -> bool:
    return all(s == "terminated" for s in states(st).values())


def podman_containers(uid: str, podman: list[str] = PODMAN) -> list[dict[str, Any]]:
    """The pod's containers (none must be left after a delete) in the storage `podman` sees."""
    res = subprocess.run(
        [*podman, "ps", "-a", "--format", "json", "--filter", f"label=marea.offload.pod={uid}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(res.stdout or "[]"))


@pytest.fixture(scope="session")
def podman_image() -> str:
    """podman + the local busybox image (testbeds/podman.sh install: idempotent, quick when present)."""
    subprocess.run(["bash", str(ROOT / "testbeds" / "podman.sh"), "install"], check=True, capture_output=True)
    return BUSYBOX


LOCAL_TOML = """
[offload]
backend = "local"
socket = "@SOCK@"
state_dir = "@STATE@"
refresh_s = 0.3
grace_s = 2
"""


@pytest.fixture
def local_server(tmp_path: Path, podman_image: str) -> Iterator[Server]:
    server = Server(tmp_path, LOCAL_TOML).start()
    yield server
    server.stop()


@pytest.fixture
def fake_kube() -> Iterator[FakeKube]:
    fake = FakeKube().start()
    yield fake
    fake.stop()


def kube_toml(tmp_path: Path, fake_kube: FakeKube, extra: str = "", kubeconfig_text: str | None = None) -> str:
    """The `kubernetes` backend's config against the stand-in, its kubeconfig (the stand-in's own unless
    `kubeconfig_text` is given) written under tmp_path; `extra`: more lines of [offload.kubernetes]."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(fake_kube.kubeconfig() if kubeconfig_text is None else kubeconfig_text)
    return f"""
[offload]
backend = "kubernetes"
socket = "@SOCK@"
state_dir = "@STATE@"
refresh_s = 0.2
[offload.kubernetes]
kubeconfig = "{kubeconfig}"
{extra}"""


def _slurm(cmd: str) -> None:
    subprocess.run(
        ["bash", str(ROOT / "testbeds" / "slurm.sh"), cmd],
        check=True,
        capture_output=True,
        env={**os.environ, **SLURM_ENV},
    )


def _sh(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True)


def stop_node() -> None:
    pid_file = Path(SLURM_ENV["MAREA_SLURM_BASE"]) / "run" / f"slurmd-{NODE}.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
    if Path(f"/run/netns/{NODE_NS}").exists():
        subprocess.run(["ip", "netns", "del", NODE_NS], capture_output=True)


@pytest.fixture(scope="session")
def slurm_cluster(podman_image: str) -> Iterator[dict[str, str]]:
    """Our own slurmctld (testbeds/slurm.sh, this suite's namespace) plus one dynamic node (2 CPUs, 1 GB)."""
    ns, subnet, base = (
        SLURM_ENV["MAREA_SLURM_NS"],
        SLURM_ENV["MAREA_SLURM_SUBNET"],
        SLURM_ENV["MAREA_SLURM_BASE"],
    )
    _slurm("install")
    _slurm("start")
    try:
        stop_node()
        _sh("ip", "netns", "add", NODE_NS)
        _sh("ip", "-n", NODE_NS, "link", "set", "lo", "up")
        _sh(
            "ip",
            "link",
            "add",
            "v-offn1",
            "netns",
            ns,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            NODE_NS,
        )
        _sh("ip", "-n", ns, "link", "set", "v-offn1", "master", "br0", "up")
        _sh("ip", "-n", NODE_NS, "addr", "add", f"{subnet}.11/24", "dev", "eth0")
        _sh("ip", "-n", NODE_NS, "link", "set", "eth0", "up")
        (Path(base) / "spool" / NODE).mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "nsenter",
                f"--net=/run/netns/{NODE_NS}",
                "slurmd",
                "-Z",
                "-N",
                NODE,
                "--conf",
                "CPUs=2 RealMemory=1000 Feature=marea",
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "SLURM_CONF": SLURM_CONF},
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            out = slurm_client("sinfo", "-h", "-N", "-o", "%N %t")
            if f"{NODE} idle" in out:
                break
            time.sleep(0.3)
        else:
            raise RuntimeError(f"node {NODE} did not join: {out!r}")
        yield {"ns": ns, "conf": SLURM_CONF}
    finally:
        stop_node()
        _slurm("stop")


def slurm_client(*args: str) -> str:
    res = subprocess.run(
        ["nsenter", f"--net=/run/netns/{SLURM_ENV['MAREA_SLURM_NS']}", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "SLURM_CONF": SLURM_CONF},
        check=True,
    )
    return res.stdout


SLURM_TOML = f"""
[offload]
backend = "slurm"
socket = "@SOCK@"
state_dir = "@STATE@"
refresh_s = 0.3
grace_s = 2

[batch.slurm]
partition = "marea"
command_prefix = ["nsenter", "--net=/run/netns/{SLURM_ENV["MAREA_SLURM_NS"]}"]
slurm_conf = "{SLURM_CONF}"
"""


@pytest.fixture
def slurm_server(tmp_path: Path, slurm_cluster: dict[str, str]) -> Iterator[Server]:
    server = Server(tmp_path, SLURM_TOML).start()
    yield server
    server.stop()
