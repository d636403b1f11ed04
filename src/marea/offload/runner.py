#!/usr/bin/env python3
"""Run one pod's containers with podman, from a pod spec directory; the one place where containers start.

    python3 -m marea.offload.runner run POD_DIR      (or: python3 runner.py run POD_DIR)

The same runner serves every backend that runs pods on a host it does not own the scheduling of: `local`
starts it as a detached process, `slurm` makes it the body of the batch job, and an HTCondor backend can ship
this file as the job's executable together with the pod directory. That is why it imports nothing but the
standard library: a node needs python3 and podman, not marea.

The pod directory (written by `marea.offload.podspec`) holds `plan.json` (images, commands, env, mounts, the
podman command line) and `volumes/`. The runner writes back only into that directory:
`status/<container>.json` at every state change, `logs/<container>.log` (podman's k8s-file log driver, which
carries timestamps and streams), and `status/_pod.json` when it ends. The server reads those files in bulk on
its refresh, so a status request never costs a call to podman or to the batch system, and a node on a shared
filesystem needs no callback to the server.

Without a shared filesystem (HTCondor moves the pod directory in and out with its file transfer), the
environment variable MAREA_RUNNER_CHIRP names HTCondor's `condor_chirp`: at every state change the runner
also writes all containers' states, as one JSON string, into the job's ad attribute `MareaContainers`, so
the server reads every pod's per-container states from one schedd query while the jobs run.

Kubernetes semantics kept: init containers run first, one at a time, in order, and each must exit 0; then the
app containers run together. A failed init container ends the pod: app containers are reported terminated
with reason `InitContainerFailed`. Containers are removed when the pod ends (status and logs are in files);
SIGTERM (delete, `scancel`) stops them with a grace period first.

Network (`plan["network"]`, from offload.network): "none" and "default" give the pod its own network
namespace, which the first app container holds (`--network=none`, or podman's default network) and the other
app containers join (`--network=container:<first>`), so they share localhost as in a pod; "host" is the host's
network. Every podman option is one `--flag=value` word and the image comes after `--`, so nothing from the
pod can become an option; mount sources are resolved again here, just before each container is created, and
must stay inside the pod directory (an init container may have planted a symlink in an emptyDir).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: runtime exit code podman uses when it could not create or start the container
CREATE_FAILED = 125
#: container names are DNS-1123 labels (checked by the server; again here, since they become file names)
NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)


#: names podman (and the dynamic loader, Go's runtime, conmon, runc) read from their own environment: a pod's
#: variable must never reach podman's process under one of these (PATH or LD_PRELOAD pointing into a volume
#: the pod wrote would run its code on the host)
HOST_ENV_NAMES = {"PATH", "HOME", "TMPDIR", "SHELL", "USER", "LOGNAME", "TZ", "TERM", "NOTIFY_SOCKET", "IFS",
                  "SSL_CERT_FILE", "SSL_CERT_DIR", "REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "DOCKER_HOST",
                  "CONTAINER_HOST", "CONTAINER_CONNECTION", "CONTAINER_SSHKEY", "NO_PROXY", "ALL_PROXY"}  # fmt: skip
HOST_ENV_PREFIXES = ("LD_", "CONTAINERS_", "_CONTAINERS", "STORAGE_", "BUILDAH_", "PODMAN", "CONMON", "XDG_",
                     "GO", "DBUS_", "SYSTEMD_", "HTTP", "RUNC", "CRUN", "MAREA_", "LC_", "LANG", "PYTHON")  # fmt: skip


def reaches_host(name: str) -> bool:
    """Whether podman's own process would read a variable of this name (case-insensitively: proxies)."""
    upper = name.upper()
    return upper in HOST_ENV_NAMES or upper.startswith(HOST_ENV_PREFIXES)


class Refused(Exception):
    """A container the runner will not create (the message becomes its CreateContainerConfigError)."""


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: the server may read the file at any moment."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class PodRunner:
    """Carries out one plan. Every podman call goes through `self.podman` (the configured command line)."""

    def __init__(self, pod_dir: Path) -> None:
        self.dir = pod_dir.resolve()
        self.plan: dict[str, Any] = json.loads((self.dir / "plan.json").read_text())
        self.podman: list[str] = list(self.plan["podman"])
        self.status_dir = self.dir / "status"
        self.log_dir = self.dir / "logs"
        self.status_dir.mkdir(exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self.stopping = threading.Event()
        self.started: dict[str, str] = {}
        self.lock = threading.Lock()
        self.chirp = os.environ.get("MAREA_RUNNER_CHIRP", "")
        self.states: dict[str, dict[str, Any]] = {}

    def cname(self, container: dict[str, Any]) -> str:
        return f"marea-{self.plan['uid'][:13]}-{container['name']}"[:128]

    def set_state(self, container: dict[str, Any], state: dict[str, Any]) -> None:
        if not NAME.fullmatch(container["name"]):
            raise ValueError(f"container name {container['name']!r} is not a DNS-1123 label")
        doc = {"name": container["name"], "image": container["image"], "state": state}
        with self.lock:
            write_json(self.status_dir / f"{container['name']}.json", doc)
            self.states[container["name"]] = state
            if self.chirp:
                self.report()

    def report(self) -> None:
        """All states into the job ad (`condor_chirp set_job_attr`, at once: the schedd has them in seconds).

        A failed report is not fatal: the status files still come back with the job's output at its end.
        """
        text = json.dumps(self.states, separators=(",", ":"))
        # ClassAd string quoting, as marea.batch.htcondor_bindings.classad_string (this file imports nothing of marea)
        literal = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        try:
            res = subprocess.run(
                [self.chirp, "set_job_attr", "MareaContainers", literal],
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"marea runner: condor_chirp failed: {exc}", file=sys.stderr)
            return
        if res.returncode != 0:
            print(f"marea runner: condor_chirp failed: {res.stderr.strip()[-200:]}", file=sys.stderr)

    def run_cmd(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.podman, *args], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)

    def mount_source(self, m: dict[str, Any]) -> str:
        """The host path of a mount: a host path the server allowed, or a path resolved inside the pod dir."""
        if m.get("host"):
            source = str(m["source"])
        else:
            # inside its own volume, not merely the pod directory: a symlink to ../../plan.json or ../../job.sh
            # would let a container rewrite what the runner or a requeued job reads next
            parts = Path(m["source"]).parts
            if len(parts) < 2 or parts[0] != "volumes":
                raise Refused(f"volume path {m['source']} is not in a volume")
            root = (self.dir / "volumes" / parts[1]).resolve()
            real = (self.dir / m["source"]).resolve()
            if (real != root and root not in real.parents) or self.dir not in root.parents:
                raise Refused(f"volume path {m['source']} leads outside its volume")
            source = str(real)
        if any(ch in source for ch in ":,\n") or any(ch in str(m["target"]) for ch in ":,\n"):
            raise Refused(f"mount {m['source']}: ':' or ',' in a path")
        return source

    def user_option(self, container: dict[str, Any]) -> list[str]:
        """`--user` from runAsUser / runAsGroup, and runAsNonRoot checked against the image's user."""
        user = container.get("user") or {}
        uid, gid, non_root = user.get("uid"), user.get("gid"), bool(user.get("nonRoot"))
        if uid is None and (gid is not None or non_root):
            res = self.run_cmd(["image", "inspect", "--format", "{{.Config.User}}", "--", container["image"]])
            image_user = res.stdout.strip().split(":")[0] if res.returncode == 0 else ""
            if res.returncode == 0 and non_root:
                if image_user in ("", "0", "root"):
                    raise Refused("container has runAsNonRoot (or the server forbids root) and image will run as root")
                if not image_user.isdigit():
                    raise Refused(f"container has runAsNonRoot and image has non-numeric user ({image_user[:40]})")
            uid = image_user or 0
        if uid is None:
            return []
        if non_root and str(uid) == "0":
            raise Refused("container has runAsNonRoot and runAsUser 0")
        return [f"--user={uid}" + (f":{int(gid)}" if gid is not None else "")]

    def network_option(self, holder: str | None) -> list[str]:
        mode = self.plan.get("network", "none")
        if mode == "host":
            return ["--network=host"]
        if holder is not None:  # join the pod's namespace, held by its first app container
            return [f"--network=container:{holder}"]
        return ["--network=none"] if mode == "none" else []

    def create_args(self, container: dict[str, Any], holder: str | None) -> tuple[list[str], dict[str, str]]:
        """The `podman create` argument vector: one `--flag=value` word per option, the image after `--`."""
        name = self.cname(container)
        args = ["create", "--replace", f"--name={name}"]
        args += [
            f"--label=marea.offload.pod={self.plan['uid']}",
            f"--label=marea.offload.container={container['name']}",
        ]
        args += ["--log-driver=k8s-file", f"--log-opt=path={self.log_dir / (container['name'] + '.log')}"]
        args += list(self.plan.get("run_options", []))
        args += self.network_option(holder)
        args += list(container.get("security") or [])
        args += self.user_option(container)
        env = dict(os.environ)
        lines = []
        for key, value in container.get("env", {}).items():
            if "\n" not in value and "\r" not in value:
                lines.append(f"{key}={value}\n")  # the env file: podman's own environment stays its own
            elif reaches_host(key):
                raise Refused(f"env {key[:60]}: a multi-line value under a name podman itself reads")
            else:  # podman's env file has no multi-line values: by name, from podman's environment
                env[key] = value
                args.append(f"--env={key}")
        if lines:
            args.append(f"--env-file={self.env_file(container, ''.join(lines))}")
        for m in container.get("mounts", []):
            opts = "ro" if m.get("readOnly") else "rw"
            args.append(f"--volume={self.mount_source(m)}:{m['target']}:{opts}")
        if container.get("workingDir"):
            args.append(f"--workdir={container['workingDir']}")
        if container.get("command"):
            args.append(f"--entrypoint={json.dumps(container['command'])}")
        args += ["--", container["image"], *list(container.get("args") or [])]
        return args, env

    def env_file(self, container: dict[str, Any], text: str) -> Path:
        """The container's variables for `--env-file` (0600 in the 0700 pod directory; removed after create:
        it may hold Secret values)."""
        path = self.dir / f".env-{container['name']}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def create_failed(self, container: dict[str, Any], reason: str, msg: str) -> None:
        self.set_state(
            container,
            {
                "terminated": {
                    "exitCode": CREATE_FAILED,
                    "reason": reason,
                    "message": msg[:300],
                    "startedAt": now_iso(),
                    "finishedAt": now_iso(),
                }
            },
        )

    def create(self, container: dict[str, Any], holder: str | None = None) -> str | None:
        """`podman create`; the env values go through the runner's environment (`--env=NAME`), never argv."""
        try:
            args, env = self.create_args(container, holder)
        except Refused as exc:
            self.create_failed(container, "CreateContainerConfigError", str(exc))
            return None
        try:
            res = self.run_cmd(args, env=env)
        finally:
            (self.dir / f".env-{container['name']}").unlink(missing_ok=True)
        if res.returncode != 0:
            msg = (res.stderr.strip().splitlines() or ["podman create failed"])[-1]
            self.create_failed(container, "CreateContainerError", msg)
            return None
        return self.cname(container)

    def start_and_wait(
        self, container: dict[str, Any], holder: str | None = None, on_start: threading.Event | None = None
    ) -> int:
        """Create, start, wait: returns the exit code and leaves the terminated state in the status file.

        `holder`: the container whose network namespace this one joins; `on_start` is set once this one runs
        (or failed to), so that the containers joining its namespace may start."""
        try:
            return self._start_and_wait(container, holder, on_start)
        finally:
            if on_start is not None:
                on_start.set()

    def _start_and_wait(self, container: dict[str, Any], holder: str | None, on_start: threading.Event | None) -> int:
        name = self.create(container, holder)
        if name is None:
            return CREATE_FAILED
        if self.stopping.is_set():
            self.run_cmd(["rm", "-f", name])
            return 143
        res = self.run_cmd(["start", name])
        if on_start is not None:
            on_start.set()
        started = now_iso()
        if res.returncode != 0:
            msg = (res.stderr.strip().splitlines() or ["podman start failed"])[-1][:300]
            self.set_state(
                container,
                {
                    "terminated": {
                        "exitCode": CREATE_FAILED,
                        "reason": "StartError",
                        "message": msg,
                        "startedAt": started,
                        "finishedAt": now_iso(),
                    }
                },
            )
            return CREATE_FAILED
        with self.lock:
            self.started[container["name"]] = name
        self.set_state(container, {"running": {"startedAt": started}})
        res = self.run_cmd(["wait", name])
        try:
            code = int(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            code = 137
        reason = "Completed" if code == 0 else ("Killed" if self.stopping.is_set() else "Error")
        self.set_state(
            container,
            {
                "terminated": {
                    "exitCode": code,
                    "reason": reason,
                    "startedAt": started,
                    "finishedAt": now_iso(),
                }
            },
        )
        return code

    def on_term(self, signum: int, frame: object) -> None:
        """Delete or scancel: stop what runs (grace period), let the waits return, then clean up."""
        self.stopping.set()
        with self.lock:
            names = list(self.started.values())
        if names:
            threading.Thread(
                target=self.run_cmd,
                args=(["stop", "-t", str(self.plan.get("grace_s", 5)), *names],),
                daemon=True,
            ).start()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        write_json(self.status_dir / "_pod.json", {"phase": "Running", "pid": os.getpid(), "startedAt": now_iso()})
        init, apps = self.plan.get("initContainers", []), self.plan.get("containers", [])
        for c in [*init, *apps]:
            self.set_state(c, {"waiting": {"reason": "PodInitializing" if c in apps and init else "ContainerCreating"}})
        result = 0
        for c in init:
            code = self.start_and_wait(c)
            if code != 0 or self.stopping.is_set():
                result = code or 143
                for app in apps:
                    self.set_state(
                        app,
                        {
                            "terminated": {
                                "exitCode": result,
                                "reason": "InitContainerFailed",
                                "message": f"init container {c['name']} exited with code {code}; not started",
                                "startedAt": now_iso(),
                                "finishedAt": now_iso(),
                            }
                        },
                    )
                break
        else:
            codes: dict[str, int] = {}
            holder_started = threading.Event()
            shared = self.plan.get("network", "none") != "host" and len(apps) > 1
            threads = [
                threading.Thread(target=self.run_app, args=(c, apps, shared, holder_started, codes)) for c in apps
            ]
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.5)
            result = next((code for code in codes.values() if code != 0), 0)
        self.cleanup()
        write_json(
            self.status_dir / "_pod.json",
            {"phase": "Succeeded" if result == 0 else "Failed", "exitCode": result, "finishedAt": now_iso()},
        )
        return result

    def run_app(
        self,
        c: dict[str, Any],
        apps: list[dict[str, Any]],
        shared: bool,
        started: threading.Event,
        into: dict[str, int],
    ) -> None:
        """One app container; with a shared namespace the first holds it and the others join it once it runs."""
        if not shared:
            into[c["name"]] = self.start_and_wait(c)
        elif c is apps[0]:
            into[c["name"]] = self.start_and_wait(c, on_start=started)
        else:
            started.wait()
            into[c["name"]] = self.start_and_wait(c, holder=self.cname(apps[0]))

    def cleanup(self) -> None:
        names = [self.cname(c) for c in [*self.plan.get("initContainers", []), *self.plan.get("containers", [])]]
        # the containers that joined the first one's network namespace go first
        self.run_cmd(["rm", "-f", "--ignore", *reversed(names)])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "run":
        print("usage: runner.py run POD_DIR", file=sys.stderr)
        return 2
    pod_dir = Path(args[1])
    if not (pod_dir / "plan.json").is_file():
        print(f"{pod_dir}: no plan.json (not a pod directory)", file=sys.stderr)
        return 2
    started = time.monotonic()
    code = PodRunner(pod_dir).run()
    print(f"pod finished with code {code} after {time.monotonic() - started:.1f}s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
