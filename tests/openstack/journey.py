"""The tenant's journey on the booting testbed cloud: shared by the journey tests and the journey benchmark.

Everything goes the way a tenant goes: the `marea` command line on the host (`cluster create`, `cluster ssh`,
`cluster status --json`, `cluster destroy`), jobs submitted on the master through `cluster ssh`, the master's
own marea booting workers through the real Nova, Neutron and Keystone of testbeds/openstack.sh. Servers of the
images debian-13-batch / debian-13-base are real systemd-nspawn guests running their cloud-init.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("MAREA_OS_STATE", "/tmp/marea-openstack"))
API_IP = os.environ.get("MAREA_OS_API_IP", "10.10.0.1")
WHEELHOUSE_URL = f"http://{API_IP}:8780/"
BATCH_IMAGE = "debian-13-batch"
BASE_IMAGE = "debian-13-base"
#: the testbed's guests are containers on a host with hybrid cgroups: jobs get no cgroups there
CONTAINER_SLURM_CONF = [
    "ProctrackType=proctrack/linuxproc",
    "TaskPlugin=task/none",
    "JobAcctGatherType=jobacct_gather/none",
]


def build_wheelhouse() -> str:
    """marea's wheel from this checkout and its dependencies, where the testbed serves them to guests."""
    subprocess.run(
        ["bash", str(REPO / "testbeds" / "guests.sh"), "wheelhouse", str(STATE / "wheelhouse"), sys.executable],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return WHEELHOUSE_URL


def cluster_toml(
    name: str,
    system: str,
    key_file: Path,
    *,
    max_workers: int = 3,
    worker_image: str = BATCH_IMAGE,
    join_timeout_s: float = 180,
    idle_threshold_s: float = 20,
) -> str:
    """A cluster file as a tenant writes it, plus the testbed's settings (pip_find_links, slurm_conf)."""
    public_key = Path(f"{key_file}.pub").read_text().strip()
    slurm_conf = ", ".join(json.dumps(line) for line in CONTAINER_SLURM_CONF)
    return f"""
[cluster]
name = "{name}"

[engine]
interval_s = 2

[policy]
min_workers = 0
max_workers = {max_workers}
idle_threshold_s = {idle_threshold_s}
join_timeout_s = {join_timeout_s}
backoff_base_s = 10

[[flavours]]
name = "m1.small"
cores = 1
memory_mb = 2048

[cloud]
driver = "openstack"

[cloud.openstack]
cloud = "demo"
image = "{worker_image}"
network = "private"

[batch]
system = "{system}"

[master]
flavour = "m1.medium"
image = "{BATCH_IMAGE}"
floating_network = "public"
ssh_public_key = "{public_key}"
ssh_key_file = "{key_file}"
pip_find_links = "{WHEELHOUSE_URL}"
slurm_conf = [{slurm_conf}]
"""


def marea(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "marea", *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


@dataclass
class Journey:
    """One cluster file and the steps of the journey on it, with the time each milestone was reached."""

    config: Path
    t0: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, what: str) -> None:
        self.marks[what] = round(time.monotonic() - self.t0, 1)

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return marea(*args[:2], "-c", str(self.config), *args[2:], timeout=timeout)

    def on_master(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a shell command line on the master through `marea cluster ssh`."""
        return self.cli("cluster", "ssh", "--", command, timeout=timeout)

    def ok_on_master(self, command: str, timeout: float = 120) -> str:
        r = self.on_master(command, timeout)
        assert r.returncode == 0, f"{command!r} on the master: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def status(self) -> dict[str, Any]:
        r = self.cli("cluster", "status", "--json", timeout=120)
        assert r.returncode == 0, r.stderr
        return dict(json.loads(r.stdout))

    def engine(self) -> dict[str, Any]:
        """`marea status --json` of the master's engine."""
        return dict(json.loads(self.ok_on_master("sudo marea status -c /etc/marea/marea.toml --json --explain")))

    def create(self) -> None:
        r = self.cli("cluster", "create", timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr
        self.mark("master active")

    def wait_master_ready(self, timeout: float = 600) -> None:
        """cloud-init finished on the master without error, and its marea.service runs."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.on_master("cloud-init status --wait >/dev/null; cloud-init status; systemctl is-active marea")
            if last.returncode == 0 and "status: done" in last.stdout and "active" in last.stdout.split():
                self.mark("master ready")
                return
            if "status: error" in last.stdout:
                log = self.on_master("sudo tail -40 /var/log/cloud-init-output.log").stdout
                raise AssertionError(f"cloud-init failed on the master:\n{log}")
            time.sleep(3)
        raise AssertionError(f"master not ready after {timeout} s: {last.stdout if last else ''}")

    def wait(self, what: str, check: Callable[[], Any], timeout: float, step: float = 3) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                self.mark(what)
                return value
            time.sleep(step)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def destroy(self) -> str:
        r = self.cli("cluster", "destroy", "--yes", timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        self.mark("destroyed")
        return " ".join(r.stdout.split())


def submit_slurm(journey: Journey, jobs: int, seconds: int) -> None:
    wrap = shlex.quote(f"sleep {seconds}")
    journey.ok_on_master(f"sbatch --array=1-{jobs} -n1 --mem=100 -o /tmp/job-%a.out --wrap {wrap}")


def slurm_done(journey: Journey, jobs: int) -> bool:
    """Every array task left the queue and Slurm recorded it COMPLETED (none failed, none requeued)."""
    out = journey.ok_on_master(
        "squeue -h -o %i; echo ---; scontrol show job -o 2>/dev/null | grep -o 'JobState=[A-Z_]*'"
    )
    queued, states = out.split("---")
    if queued.strip():
        return False
    found = states.split()
    assert all(s == "JobState=COMPLETED" for s in found), f"a job did not complete: {found}"
    return len(found) == jobs


def submit_htcondor(journey: Journey, jobs: int, seconds: int) -> None:
    submit = (
        f"executable = /bin/sleep\\narguments = {seconds}\\nrequest_cpus = 1\\nrequest_memory = 100\\n"
        f"should_transfer_files = YES\\nqueue {jobs}\\n"
    )
    journey.ok_on_master(f"cd /tmp && printf '{submit}' | condor_submit -")


def htcondor_done(journey: Journey, jobs: int) -> bool:
    """No job left in the queue, and the history holds `jobs` completed jobs (JobStatus 4) with exit code 0."""
    queued = journey.ok_on_master("condor_q -allusers -af ClusterId ProcId").strip()
    if queued:
        return False
    done = journey.ok_on_master("condor_history -af JobStatus ExitCode").split("\n")
    rows = [line.split() for line in done if line.strip()]
    assert all(r == ["4", "0"] for r in rows), f"a job did not complete cleanly: {rows}"
    return len(rows) == jobs


#: what a job (or a user logged in on the master) must not read: the join secrets on disk, cloud-init's copies of
#: the user-data, and the user-data from the metadata service (OpenStack's and EC2's paths). Prints what it could
#: read and fails if anything; refuses to run as root, where reading them proves nothing.
SECRETS_PROBE = r"""#!/bin/sh
[ "$(id -u)" = 0 ] && { echo "probe ran as root"; exit 99; }
found=""
for f in /etc/munge/munge.key /etc/condor/tokens.d/marea-worker /etc/condor/passwords.d/POOL \
         /etc/marea/marea.toml /etc/marea/clouds.yaml /etc/marea/worker.token \
         /var/lib/cloud/instance/user-data.txt /var/lib/cloud/instance/user-data.txt.i \
         /var/lib/cloud/seed/config_drive/openstack/latest/user_data /run/cloud-init/instance-data-sensitive.json; do
  cat "$f" >/dev/null 2>&1 && found="$found $f"
done
for url in http://169.254.169.254/openstack/latest/user_data http://169.254.169.254/latest/user-data; do
  curl -sf -m 5 -o /dev/null "$url" && found="$found $url"
done
# for a non-root user cloud-init answers "<REDACTED FOR NON-ROOT>": only the document itself counts
cloud-init query userdata 2>/dev/null | grep -q cloud-config && found="$found cloud-init-query-userdata"
echo "probe as $(id -un) on $(hostname): readable:$found"
[ -z "$found" ]
"""
PROBE_PATH = "/tmp/marea-secrets-probe.sh"


def install_probe(journey: Journey) -> None:
    """The probe, as the unprivileged login user on the master (who submits the jobs)."""
    journey.ok_on_master(f"printf %s {shlex.quote(SECRETS_PROBE)} > {PROBE_PATH} && chmod 755 {PROBE_PATH}")


def probe_slurm(journey: Journey) -> None:
    journey.ok_on_master(f"cd /tmp && sbatch --job-name=secrets-probe -n1 --mem=100 -o /tmp/probe-%j.out {PROBE_PATH}")


def probe_slurm_result(journey: Journey) -> str | None:
    """None while the probe job has not finished; else its state and exit code (COMPLETED 0:0 when it read
    nothing). The output stays on the worker: the exit code is what comes back."""
    out = journey.ok_on_master("scontrol show job -o 2>/dev/null | grep JobName=secrets-probe || true")
    state = re.search(r"JobState=(\S+)", out)
    if state is None or state.group(1) in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
        return None
    code = re.search(r"ExitCode=(\S+)", out)
    return f"{state.group(1)} {code.group(1) if code else '?'}"


def probe_htcondor(journey: Journey) -> None:
    submit = (
        f"executable = {PROBE_PATH}\\noutput = /tmp/probe.out\\nrequest_cpus = 1\\nrequest_memory = 100\\n"
        "should_transfer_files = YES\\n+MareaProbe = true\\nqueue 1\\n"
    )
    journey.ok_on_master(f"cd /tmp && printf '{submit}' | condor_submit -")


def probe_htcondor_result(journey: Journey) -> str | None:
    """None while the probe job has not left the queue; else its exit code and what it printed (the output
    comes back to the master)."""
    code = journey.ok_on_master("condor_history -constraint 'MareaProbe =?= true' -af ExitCode").strip()
    if not code:
        return None
    return f"exit {code}: {journey.ok_on_master('cat /tmp/probe.out').strip()}"
