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
"""

from __future__ import annotations

import json
import os
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
        # ClassAd string quoting, as marea.batch.htcondor.classad_string (this file imports nothing of marea)
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

    def create(self, container: dict[str, Any]) -> str | None:
        """`podman create`; the env values go through the runner's environment (`--env NAME`), never argv."""
        name = self.cname(container)
        args = ["create", "--replace", "--name", name]
        args += [
            "--label",
            f"marea.offload.pod={self.plan['uid']}",
            "--label",
            f"marea.offload.container={container['name']}",
        ]
        args += [
            "--log-driver",
            "k8s-file",
            "--log-opt",
            f"path={self.log_dir / (container['name'] + '.log')}",
        ]
        args += list(self.plan.get("run_options", []))
        env = dict(os.environ)
        for key, value in container.get("env", {}).items():
            env[key] = value
            args += ["--env", key]
        for m in container.get("mounts", []):
            opts = "ro" if m.get("readOnly") else "rw"
            args += ["--volume", f"{self.dir / m['source']}:{m['target']}:{opts}"]
        if container.get("workingDir"):
            args += ["--workdir", container["workingDir"]]
        if container.get("command"):
            args += ["--entrypoint", json.dumps(container["command"])]
        args.append(container["image"])
        args += list(container.get("args") or [])
        res = self.run_cmd(args, env=env)
        if res.returncode != 0:
            msg = (res.stderr.strip().splitlines() or ["podman create failed"])[-1][:300]
            self.set_state(
                container,
                {
                    "terminated": {
                        "exitCode": CREATE_FAILED,
                        "reason": "CreateContainerError",
                        "message": msg,
                        "startedAt": now_iso(),
                        "finishedAt": now_iso(),
                    }
                },
            )
            return None
        return name

    def start_and_wait(self, container: dict[str, Any]) -> int:
        """Create, start, wait: returns the exit code and leaves the terminated state in the status file."""
        name = self.create(container)
        if name is None:
            return CREATE_FAILED
        if self.stopping.is_set():
            self.run_cmd(["rm", "-f", name])
            return 143
        res = self.run_cmd(["start", name])
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

            def one(c: dict[str, Any], into: dict[str, int]) -> None:
                into[c["name"]] = self.start_and_wait(c)

            threads = [threading.Thread(target=one, args=(c, codes)) for c in apps]
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

    def cleanup(self) -> None:
        names = [self.cname(c) for c in [*self.plan.get("initContainers", []), *self.plan.get("containers", [])]]
        self.run_cmd(["rm", "-f", "--ignore", *names])


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
