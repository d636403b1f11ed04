"""The hostile corpus: requests an attacker in control of a pod (or of the central cluster) could send.

Each case is one HTTP request to a running offload server (a real process on a real unix socket); every one
must get a 4xx. What the attacker would want from each (an option for podman, a path outside the pod's
directory, shell code in a job script, a privileged container, memory) is then checked where it would show:
the files on disk, and podman / Slurm / HTCondor themselves (in the backend test files that use this corpus).

Every hostile string carries MARK, so "did anything of it reach podman / squeue / condor_q" is a search for
MARK in what they list. The sentinel files the shell payloads would create are SENTINELS.
"""

from __future__ import annotations

import copy
import json
import select
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.offload.conftest import Server, simple_pod

MARK = "marea-hostile"
SENTINELS = [Path(f"/tmp/{MARK}-pwned"), Path(f"/tmp/{MARK}-uid"), Path(f"/tmp/{MARK}-name")]
#: the server's body limit (marea.offload.app.MAX_BODY)
MAX_BODY = 64 << 20


@dataclass
class Case:
    label: str
    path: str
    body: bytes
    method: str = "POST"
    #: expected status (any 4xx when 0)
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)


def _pod(change: Callable[[dict[str, Any]], None], script: str = "true") -> bytes:
    req = simple_pod(str(uuid.uuid4()), script)
    change(req)
    return json.dumps(req).encode()


def _main(req: dict[str, Any]) -> dict[str, Any]:
    return dict(req["pod"]["spec"]["containers"][0])


def _set_main(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(req: dict[str, Any]) -> None:
        req["pod"]["spec"]["containers"][0].update(copy.deepcopy(fields))

    return change


def _set_spec(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(req: dict[str, Any]) -> None:
        req["pod"]["spec"].update(copy.deepcopy(fields))

    return change


def _set_meta(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(req: dict[str, Any]) -> None:
        req["pod"]["metadata"].update(fields)

    return change


Change = Callable[[dict[str, Any]], None]


def _volume(volume: dict[str, Any], mount: dict[str, Any] | None = None, **extra: Any) -> Change:
    def change(req: dict[str, Any]) -> None:
        req["pod"]["spec"]["volumes"] = [volume]
        c = req["pod"]["spec"]["containers"][0]
        c["volumeMounts"] = [mount or {"name": volume["name"], "mountPath": "/v"}]
        for key, value in extra.items():
            req["container"][0][key] = value

    return change


def _configmap(data: dict[str, str], items: list[dict[str, Any]] | None = None, mode: int | None = None) -> Any:
    cm = {"metadata": {"name": "cm"}, "data": data}
    source: dict[str, Any] = {"name": "cm"}
    if items is not None:
        source["items"] = items
    if mode is not None:
        source["defaultMode"] = mode
    return _volume({"name": "cfg", "configMap": source}, configMaps=[cm])


def _sc(**sc: Any) -> Callable[[dict[str, Any]], None]:
    return _set_main(securityContext=sc)


def create_cases() -> list[Case]:
    """Pods whose fields would become podman options, paths outside the pod dir, shell code or privileges."""
    touch = f"$(touch /tmp/{MARK}-pwned)"
    pods: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
        ("image is an option", _set_main(image=f"--privileged={MARK}", args=["--volume=/:/host"])),
        ("image is a volume option", _set_main(image=f"--volume=/:/{MARK}")),
        ("image with a space and an option", _set_main(image=f"docker.io/library/busybox --privileged {MARK}")),
        ("image starting with -", _set_main(image=f"-v/:/{MARK}")),
        ("image with shell code", _set_main(image=f"busybox;touch /tmp/{MARK}-pwned")),
        ("container name traversal", _set_main(name=f"../../{MARK}")),
        ("container name with slash", _set_main(name=f"a/{MARK}")),
        ("container name is an option", _set_main(name=f"--privileged-{MARK}")),
        ("uid with shell code", _set_meta(uid=touch)),
        ("uid with backquotes", _set_meta(uid=f"`touch /tmp/{MARK}-uid`")),
        ("uid traversal", _set_meta(uid=f"../../{MARK}")),
        ("uid with a space and a semicolon", _set_meta(uid=f"x; touch /tmp/{MARK}-uid")),
        ("pod name with shell code", _set_meta(name=f"$(touch /tmp/{MARK}-name)")),
        ("namespace traversal", _set_meta(namespace=f"../../{MARK}")),
        ("volume name traversal", _volume({"name": f"../../{MARK}", "emptyDir": {}})),
        ("configmap key traversal", _configmap({f"../../../{MARK}": "x"})),
        ("configmap items path traversal", _configmap({"k": "x"}, items=[{"key": "k", "path": f"../../{MARK}"}])),
        ("configmap items absolute path", _configmap({"k": "x"}, items=[{"key": "k", "path": f"/tmp/{MARK}"}])),
        ("setuid file mode", _configmap({"k": "x"}, mode=0o4777)),
        (
            "subPath traversal",
            _volume({"name": "scratch", "emptyDir": {}}, {"name": "scratch", "mountPath": "/v", "subPath": "../../.."}),
        ),
        (
            "mountPath injecting volume options",
            _volume({"name": "scratch", "emptyDir": {}}, {"name": "scratch", "mountPath": f"/v:/{MARK}:rw,suid"}),
        ),
        ("env name with =", _set_main(env=[{"name": f"A={MARK}", "value": "x"}])),
        ("env value with NUL", _set_main(env=[{"name": "A", "value": f"{MARK}\x00--privileged"}])),
        ("args with NUL", _set_main(args=[f"{MARK}\x00x"])),
        ("relative workingDir", _set_main(workingDir=f"../{MARK}")),
        ("privileged", _sc(privileged=True)),
        ("added capability", _sc(capabilities={"add": ["SYS_ADMIN"]})),
        ("capability that is an option", _sc(capabilities={"drop": [f"--privileged={MARK}"]})),
        ("unconfined seccomp", _sc(seccompProfile={"type": "Unconfined"})),
        ("unmasked proc", _sc(procMount="Unmasked")),
        ("runAsNonRoot with uid 0", _sc(runAsNonRoot=True, runAsUser=0)),
        ("runAsUser not an integer", _sc(runAsUser=f"0; {MARK}")),
        ("hostNetwork", _set_spec(hostNetwork=True)),
        ("hostPID", _set_spec(hostPID=True)),
        ("hostIPC", _set_spec(hostIPC=True)),
        ("hostPath /", _volume({"name": "root", "hostPath": {"path": "/"}})),
        ("hostPath with options", _volume({"name": "root", "hostPath": {"path": f"/tmp:/{MARK}:rw"}})),
        ("pod sysctls", _set_spec(securityContext={"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}]})),
    ]
    cases = [Case(label, "/create", _pod(change, f"echo {MARK}")) for label, change in pods]
    deep = b"[" * 200 + b"]" * 200
    cases += [
        Case("deeply nested create (orjson depth)", "/create", b'{"pod":' + deep + b"}"),
        Case("nested beyond any parser", "/create", b"[" * 200_000 + b"]" * 200_000, status=400),
        Case(
            "nested past the pod depth limit",
            "/create",
            _pod(_set_main(args=["x"], resources={"requests": _nest(100)})),
            status=422,
        ),
        Case("invalid UTF-8", "/create", b'{"pod": {"metadata": {"uid": "\xff\xfe"}}}', status=400),
        Case("invalid UTF-8 in a status poll", "/status", b'[{"metadata": {"uid": "\xc3\x28"}}]', status=400),
        Case("status with a shell uid", "/status", _status(f"$(touch /tmp/{MARK}-pwned)"), status=422),
        Case("status with a traversal uid", "/status", _status(f"../../{MARK}"), status=422),
        Case("delete with a traversal uid", "/delete", _status(f"../../{MARK}")[1:-1], status=422),
        Case("logs with a traversal uid", "/getLogs", _logs(f"../../{MARK}", "main"), status=422),
        Case("logs of a traversal container", "/getLogs", _logs(str(uuid.uuid4()), f"../../{MARK}"), status=404),
    ]
    return cases


def _nest(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"cpu": "1"}
    for _ in range(depth):
        doc = {"x": doc}
    return doc


def _status(uid: str) -> bytes:
    return json.dumps([{"metadata": {"uid": uid, "name": "p", "namespace": "default"}, "spec": {}}]).encode()


def _logs(uid: str, container: str) -> bytes:
    return json.dumps({"PodUID": uid, "PodName": "p", "Namespace": "default", "ContainerName": container}).encode()


def raw_request(sock_path: Path, path: str, head: dict[str, str], chunks: Iterator[bytes]) -> int:
    """One HTTP/1.1 request written by hand (so chunked framing and early answers are under our control);
    returns the status the server answered, reading it as soon as it comes (the server may answer 413 and
    close before the body is all sent)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(sock_path))
    s.settimeout(60)
    lines = [f"POST {path} HTTP/1.1", "Host: offload", *(f"{k}: {v}" for k, v in head.items()), "", ""]
    answer = b""
    try:
        s.sendall("\r\n".join(lines).encode())
        for chunk in chunks:
            if select.select([s], [], [], 0)[0]:
                break  # answered early
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        while b"\r\n" not in answer:
            data = s.recv(4096)
            if not data:
                break
            answer += data
    finally:
        s.close()
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def oversized(server: Server) -> dict[str, int]:
    """Bodies past the limit: with a Content-Length that says so, with one that lies (says small), chunked."""
    mib = b" " * (1 << 20)
    n = (MAX_BODY >> 20) + 2

    def plain() -> Iterator[bytes]:
        yield b"["
        for _ in range(n):
            yield mib

    def chunked() -> Iterator[bytes]:
        yield b"1\r\n[\r\n"
        for _ in range(n):
            yield f"{len(mib):x}\r\n".encode() + mib + b"\r\n"
        yield b"1\r\n]\r\n0\r\n\r\n"

    size = str(n * len(mib) + 2)
    return {
        "content-length": raw_request(server.sock, "/create", {"Content-Length": size}, plain()),
        "chunked create": raw_request(server.sock, "/create", {"Transfer-Encoding": "chunked"}, chunked()),
        "chunked status": raw_request(server.sock, "/status", {"Transfer-Encoding": "chunked"}, chunked()),
    }


def send_corpus(server: Server) -> dict[str, int]:
    """Every case, then the oversized bodies; label -> the status answered."""
    out = {}
    for case in create_cases():
        r = server.client.request(
            case.method, case.path, content=case.body, headers={"content-type": "application/json", **case.headers}
        )
        assert not case.status or r.status_code == case.status, (case.label, r.status_code, r.text)
        assert len(r.text) < 400 and "Traceback" not in r.text, (case.label, r.text)
        out[case.label] = r.status_code
    out.update(oversized(server))
    return out


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def assert_all_refused(answers: dict[str, int]) -> None:
    wrong = {label: code for label, code in answers.items() if not 400 <= code < 500}
    assert not wrong, f"hostile requests not answered with a 4xx: {wrong}"
    assert answers["content-length"] == answers["chunked create"] == answers["chunked status"] == 413


def assert_nothing_escaped(server: Server, before: set[Path]) -> None:
    """No file appeared anywhere under the server's directory but its own state files; no pod directory is
    left (every refused pod was cleaned up); no sentinel the shell payloads would create exists; no name the
    corpus carries appears on disk."""
    after = files_under(server.workdir)
    new = {p for p in after - before if p.name not in ("offload.db", "offload.db-wal", "offload.db-shm")}
    new = {p for p in new if not (p.parent == server.workdir and p.suffix == ".log")}
    assert not new, f"files appeared: {sorted(map(str, new))[:10]}"
    pods = server.workdir / "state" / "pods"
    assert not pods.exists() or not any(pods.iterdir()), list(pods.iterdir())
    for path in SENTINELS:
        assert not path.exists(), path
    for root in (server.workdir.parent, Path("/tmp")):
        assert not any(MARK in p.name for p in root.iterdir()), [p for p in root.iterdir() if MARK in p.name]
