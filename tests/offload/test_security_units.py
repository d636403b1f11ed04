"""Pure and file-level parts of the offload server's defences: the grammars, the request depth limit, the
Slurm job script's quoting (run by a real `sh`), the runner's podman argument vector and its mount-source
check against a planted symlink, and the parse cache's bound in bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from marea.config import OffloadSection
from marea.offload import grammar
from marea.offload.backends.local import LocalBackend
from marea.offload.backends.slurm import job_script
from marea.offload.podspec import PodDirWriter
from marea.offload.runner import PodRunner, Refused
from marea.offload.security import SecurityPolicy, check_pod, container_options
from marea.offload.service import OffloadService
from marea.offload.state import PodStore
from marea.offload.wire import WireError, check_depth, parse_create
from tests.conftest import run_cli
from tests.offload.conftest import simple_pod

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "ref",
    [
        "busybox",
        "docker.io/library/busybox:latest",
        "localhost:5000/team/app:1.0-rc.1",
        f"ghcr.io/org/img@{DIGEST}",
        f"registry.example.org/a__b/c-d.e:v_1@{DIGEST}",
        "[::1]:5000/x",
    ],
)
def test_image_references_accepted(ref: str) -> None:
    assert grammar.image(ref, "image") == ref


@pytest.mark.parametrize(
    "ref",
    ["--privileged", "-v/:/x", "busybox --privileged", "busybox;id", "$(id)", "Busybox", "busybox:", "a@sha256:zz",
     "busybox\n", "/busybox", "a//b", "", "busybox:" + "t" * 129],
)  # fmt: skip
def test_image_references_refused(ref: str) -> None:
    with pytest.raises(WireError) as exc:
        grammar.image(ref, "pod.spec.containers[0].image")
    assert exc.value.status == 422 and "pod.spec.containers[0].image" in exc.value.message


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        (
            grammar.uid,
            ["7f3c2a9e-5b1d-4c8e-9a6f-2d4e1b0c8a11", "u-1"],
            ["../x", "a/b", "$(id)", "-x", "a b", "x" * 129],
        ),
        (grammar.dns_label, ["main", "a-1"], ["Main", "-a", "a-", "a.b", "../x", "a" * 64]),
        (grammar.dns_subdomain, ["a.b-c", "pod-1"], ["a..b", "A", "a/b", ".a"]),
        (grammar.config_key, ["ca.crt", "_x-1"], ["..", ".", "a/b", "a b"]),
        (grammar.env_name, ["PATH", "my.var-1", "a b"], ["A=B", "", "a\x00b", "\n"]),
        (grammar.capability, ["NET_ADMIN", "CAP_CHOWN", "ALL"], ["--privileged", "net_admin", "A=B"]),
    ],
)
def test_grammars(check: Any, good: list[str], bad: list[str]) -> None:
    for value in good:
        check(value, "field")
    for value in bad:
        with pytest.raises(WireError):
            check(value, "field")


def test_request_depth_limit() -> None:
    def nested(depth: int) -> Any:
        doc: Any = []  # `depth` nested lists
        for _ in range(depth - 1):
            doc = [doc]
        return doc

    check_depth(nested(64))
    with pytest.raises(WireError) as exc:
        check_depth(nested(65))
    assert exc.value.status == 422
    with pytest.raises(WireError) as exc:
        parse_create(json.dumps({"pod": nested(500)}).encode())
    assert exc.value.status == 422


def test_slurm_job_script_quotes_every_word(tmp_path: Path) -> None:
    """The script sh runs: a pod directory with a space, quotes and `$(...)` is one literal word."""
    sentinel = tmp_path / "pwned"
    pod_dir = tmp_path / f"state dir 'q' \"dq\" $(touch {sentinel}) `touch {sentinel}`" / "pods" / "uid-1"
    show = tmp_path / "show"  # stands for python: prints each argument it gets on a line
    show.write_text('#!/bin/sh\nfor a in "$@"; do printf \'%s\\n\' "$a"; done\n')
    show.chmod(0o755)
    script = tmp_path / "job.sh"
    script.write_text(job_script(str(show), "/opt/runner dir/runner.py", pod_dir))
    out = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["/opt/runner dir/runner.py", "run", str(pod_dir)]
    assert not sentinel.exists()


def _plan_dir(tmp_path: Path, change: Any = None) -> Path:
    req = simple_pod(str(uuid.uuid4()), "true")
    req["pod"]["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    req["pod"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "scratch", "mountPath": "/s", "subPath": "sub"},
        {"name": "scratch", "mountPath": "/t"},
    ]
    if change:
        change(req)
    (parsed,) = parse_create(json.dumps(req).encode())
    pod_dir = tmp_path / "pod"
    PodDirWriter(parsed, pod_dir).write(["podman"], ["--ulimit=nofile=1024:1024"], 1)
    return pod_dir


def test_runner_argument_vector(tmp_path: Path) -> None:
    """One word per option, the image right after `--`, the pod's args after it; the network is the pod's."""

    def change(req: dict[str, Any]) -> None:
        main = req["pod"]["spec"]["containers"][0]
        main["args"] = ["--privileged", "-v", "/:/host"]
        main["env"] = [{"name": "-e", "value": "x"}]
        main["securityContext"] = {"capabilities": {"drop": ["ALL"]}, "allowPrivilegeEscalation": False}

    runner = PodRunner(_plan_dir(tmp_path, change))
    (main,) = runner.plan["containers"]
    args, env = runner.create_args(main, None)
    cut = args.index("--")
    assert args[cut + 1] == "docker.io/library/busybox:latest" and args[cut + 2 :] == ["--privileged", "-v", "/:/host"]
    options = args[2:cut]  # after "create", "--replace"
    assert all(o.startswith("--") for o in options), options
    assert "--network=none" in options and "--cap-drop=ALL" in options
    assert "--security-opt=no-new-privileges" in options and "-e" not in env
    (env_file,) = [o.split("=", 1)[1] for o in options if o.startswith("--env-file=")]
    assert Path(env_file).read_text() == "-e=x\n" and Path(env_file).stat().st_mode & 0o777 == 0o600
    joined, _ = runner.create_args(main, "marea-holder")
    assert "--network=container:marea-holder" in joined


def test_pod_variables_never_reach_podmans_own_environment(tmp_path: Path) -> None:
    """PATH, LD_PRELOAD, CONTAINERS_CONF from a pod go to the container through the env file, never into the
    environment podman runs with (PATH or LD_PRELOAD pointing into a volume would run the pod's code on the
    host); a multi-line value, which the env file cannot carry, is refused under such a name."""

    def change(req: dict[str, Any]) -> None:
        req["pod"]["spec"]["containers"][0]["env"] = [
            {"name": "PATH", "value": "/pod/bin"},
            {"name": "LD_PRELOAD", "value": "/pod/evil.so"},
            {"name": "CONTAINERS_CONF", "value": "/pod/containers.conf"},
            {"name": "CERT", "value": "line 1\nline 2"},
        ]

    runner = PodRunner(_plan_dir(tmp_path, change))
    (main,) = runner.plan["containers"]
    args, env = runner.create_args(main, None)
    assert env.get("PATH") == os.environ.get("PATH") and "LD_PRELOAD" not in env and "CONTAINERS_CONF" not in env
    assert env["CERT"] == "line 1\nline 2" and "--env=CERT" in args
    (env_file,) = [a.split("=", 1)[1] for a in args if a.startswith("--env-file=")]
    assert Path(env_file).read_text().splitlines() == [
        "PATH=/pod/bin", "LD_PRELOAD=/pod/evil.so", "CONTAINERS_CONF=/pod/containers.conf"
    ]  # fmt: skip
    main["env"]["LD_PRELOAD"] = "/pod/a.so\n/pod/b.so"
    with pytest.raises(Refused):
        runner.create_args(main, None)


def test_runner_refuses_a_symlink_out_of_the_pod_dir(tmp_path: Path) -> None:
    """An init container can write symlinks into an emptyDir; the subPath mounted later must not follow one
    out of the pod's directory (the runner resolves mount sources just before each container)."""
    pod_dir = _plan_dir(tmp_path)
    runner = PodRunner(pod_dir)
    (main,) = runner.plan["containers"]
    sub = pod_dir / "volumes" / "scratch" / "sub"
    sub.rmdir()
    sub.symlink_to("/etc")
    with pytest.raises(Refused):
        runner.create_args(main, None)
    sub.unlink()
    sub.symlink_to("../../plan.json")  # inside the pod directory, but not inside the volume
    with pytest.raises(Refused):
        runner.create_args(main, None)
    runner.create(main)  # reported as the container's CreateContainerConfigError, no podman call
    state = json.loads((pod_dir / "status" / "main.json").read_text())["state"]["terminated"]
    assert state["reason"] == "CreateContainerConfigError" and "outside its volume" in state["message"]


def test_security_options_follow_kubernetes_precedence() -> None:
    pod = {"spec": {"securityContext": {"runAsUser": 1, "supplementalGroups": [5]}, "containers": []}}
    c = {"name": "c", "securityContext": {"readOnlyRootFilesystem": True, "capabilities": {"drop": ["CAP_KILL"]}}}
    assert container_options(pod, c, SecurityPolicy()) == ["--cap-drop=KILL", "--read-only", "--group-add=5"]
    pod["spec"]["containers"] = [{**c, "securityContext": {"privileged": True, "allowPrivilegeEscalation": False}}]
    with pytest.raises(WireError) as exc:
        check_pod(pod, SecurityPolicy(allow_privileged=True))
    assert "contradicts" in exc.value.message


def test_parse_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    """Distinct status bodies of 100 kB each: the cache keeps at most its byte budget, whatever the count."""
    budget = 1 << 20
    backend = LocalBackend(OffloadSection(), tmp_path / "pods")
    service = OffloadService(backend, PodStore(tmp_path / "db"), parse_cache_bytes=budget)
    pad = "x" * 100_000
    for i in range(40):
        pod = {"metadata": {"uid": f"u-{i}", "name": "p", "namespace": "d", "annotations": {"pad": pad}}, "spec": {}}
        assert service.status_answer(json.dumps([pod]).encode()) is not None
        assert service.parsed_bytes <= budget
        assert sum(len(k) for k in service.parsed) <= budget
    assert 5 <= len(service.parsed) <= 10
    huge = json.dumps([{"metadata": {"uid": "big", "name": "p", "namespace": "d", "a": "y" * (2 << 20)}}])
    service.status_answer(huge.encode())
    assert huge.encode() not in service.parsed  # larger than one entry may be: never kept
    service.store.close()


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ('[offload]\nrun_options = ["--network=host"]\n', "offload.network"),
        ('[offload]\nrun_options = ["--net", "host"]\n', "offload.network"),
        ('[offload]\nnetwork = "bridge"\n', "offload.network"),
        ('[offload.security]\nallowed_host_paths = ["relative"]\n', "allowed_host_paths"),
        ('[offload.security]\nallowed_capabilities = ["--privileged"]\n', "allowed_capabilities"),
    ],
)
def test_security_configuration_errors_exit_2(tmp_path: Path, toml: str, words: str) -> None:
    """The network is one explicit key, and the allowances are checked: bad values are one line and exit 2."""
    f = tmp_path / "marea.toml"
    f.write_text(toml)
    proc = run_cli("config", "check", str(f))
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
