"""The real HTCondor 23.9 testbed (testbeds/htcondor.sh): one central manager + schedd for the whole session,
in network namespace marea-condor; worker "VMs" in their own namespaces run marea's worker user-data.

The bindings (PyPI htcondor 25.x) talk to the 23.9 daemons from inside the manager's namespace, through the
same NamespaceRunner the plugin uses. Jobs are submitted as the unprivileged user `tester` (the schedd refuses
root's jobs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import string
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from marea.htcondor_demo import CondorClient

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "testbeds" / "htcondor.sh"
NS = "marea-condor"
SUBNET = "10.232.0"

pytestmark = pytest.mark.htcondor


#: podman as the submit user on the rootless storage the workers' jobs use
ROOTFS_PODMAN = ["bash", str(SCRIPT), "podman"]


def load_pod_image(image: str) -> None:
    """The host's podman gets `image` (testbeds/podman.sh), then the submit user's storage in the rootfs."""
    subprocess.run(["bash", str(REPO / "testbeds" / "podman.sh"), "install"], check=True, capture_output=True)
    subprocess.run(["bash", str(SCRIPT), "load-image", image], check=True, capture_output=True, timeout=300)


def script(*args: str, check: bool = True) -> str:
    """testbeds/htcondor.sh with these arguments; its stdout."""
    proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=180)
    if check and proc.returncode != 0:
        raise AssertionError(f"testbeds/htcondor.sh {args[0]} failed: {proc.stderr[-600:]}")
    return proc.stdout


class CondorTestbed(CondorClient):
    """The running pool: the demo's client (submit, jobs, call, schedd) plus what the tests need around it."""

    #: what `jobs` reads here: when and where each job ran, to check that none was killed or restarted
    JOB_HISTORY = ("ClusterId", "ProcId", "JobStatus", "NumJobStarts", "ExitCode", "LastRemoteHost", "RemoteHost",
                   "JobStartDate", "CompletionDate", "JobCurrentStartDate")  # fmt: skip

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env)
        self.env = env
        self.vms: dict[str, Path] = {}

    @property
    def client_conf(self) -> str:
        return self.env["CONDOR_CONFIG"]

    def submit(self, n: int, seconds: float, *, cpus: int = 1, memory: int = 100, batch: str = "t",
               requirements: str | None = None) -> list[str]:  # fmt: skip
        return super().submit(n, seconds, cpus=cpus, memory=memory, batch=batch, requirements=requirements)

    def jobs(self, ids: list[str], projection: tuple[str, ...] = JOB_HISTORY) -> dict[str, dict[str, Any]]:
        return super().jobs(ids, projection)

    def remove_jobs(self, constraint: str = "true") -> None:
        def go(h: Any) -> None:
            self.schedd(h).act(h.JobAction.Remove, constraint)

        self.call(go)

    def slots(self, constraint: str = "true") -> list[Any]:
        def go(h: Any) -> list[Any]:
            return list(h.Collector(f"{SUBNET}.1").query(h.AdType.Startd, constraint=constraint))

        slots: list[Any] = self.call(go)
        return slots

    def token(self) -> str:
        return Path(self.env["MAREA_CONDOR_TOKEN_FILE"]).read_text().strip()

    # -- worker VMs started by hand (the engine tests use the local cloud driver instead) --------------------------
    def start_vm(self, name: str, host: int, *, cores: int = 2, memory: int = 2000, token: str | None = None) -> Path:
        """A worker VM like the local driver's: own netns marea-condor-NAME on br0, the rendered user-data."""
        from marea.templates import worker_template

        ns, veth = f"{NS}-{name}", f"mcv-{name}"
        vm_dir = Path(self.env["VM_ROOT"]) / name
        shutil.rmtree(vm_dir, ignore_errors=True)
        vm_dir.mkdir(parents=True)
        variables = {
            "MAREA_NAME": name, "MAREA_CORES": str(cores), "MAREA_MEMORY_MB": str(memory), "MAREA_GPUS": "0",
            "MAREA_CONDOR_HOST": f"{SUBNET}.1",
            "MAREA_CONDOR_IDTOKEN": token if token is not None else self.token(),
            "MAREA_VAR_CONDOR_ROOTFS": self.env["MAREA_CONDOR_ROOTFS"],
            "MAREA_VAR_CONDOR_INCLUDE": "/etc/marea-condor/common.conf",
        }  # fmt: skip
        ud = vm_dir / "user-data"
        ud.write_text(string.Template(worker_template("htcondor-worker.sh")).safe_substitute(variables))
        ud.chmod(0o700)
        for cmd in (
            ["ip", "netns", "add", ns],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            ["ip", "link", "add", veth, "netns", NS, "type", "veth", "peer", "name", "eth0", "netns", ns],
            ["ip", "-n", NS, "link", "set", veth, "master", "br0", "up"],
            ["ip", "-n", ns, "addr", "add", f"{SUBNET}.{host}/24", "dev", "eth0"],
            ["ip", "-n", ns, "link", "set", "eth0", "up"],
        ):
            subprocess.run(cmd, check=True, capture_output=True)
        with open(vm_dir / "console.log", "ab") as console:
            subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{ns}", "/bin/sh", "-c", '"$1"; exec sleep infinity', "boot", str(ud)],
                cwd=vm_dir, env={"PATH": os.environ["PATH"], "MAREA_VM_DIR": str(vm_dir)}, stdout=console,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self.vms[name] = vm_dir
        return vm_dir

    def power_off(self, name: str) -> None:
        """SIGKILL every process of the VM (found by network namespace membership), delete its namespace."""
        ns = f"{NS}-{name}"
        if not Path(f"/run/netns/{ns}").exists():
            return
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        time.sleep(0.2)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.vms.pop(name, None)


@pytest.fixture(scope="session")
def condor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CondorTestbed]:
    if os.geteuid() != 0:
        pytest.fail("the HTCondor tests need root (network namespaces, chroot)")
    probe = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True)
    env = dict(line.split("=", 1) for line in probe.stdout.split())
    if not Path(env["MAREA_CONDOR_ROOTFS"], "usr/sbin/condor_master").exists():
        pytest.fail("the HTCondor testbed is not installed: run `bash testbeds/htcondor.sh install` (make testbeds)")
    env["VM_ROOT"] = str(tmp_path_factory.mktemp("condor-vms"))
    script("stop", check=False)
    script("start")
    tb = CondorTestbed(env)
    try:
        yield tb
    finally:
        for name in list(tb.vms):
            tb.power_off(name)
        tb.runner.close()
        script("stop", check=False)
