"""`marea demo`: the whole elastic flow on one machine, with real Slurm and no cloud.

It starts the Slurm testbed (a real slurmctld), runs `marea run` as a separate process with the local cloud
driver (each worker "VM" is a slurmd in its own network namespace, contextualised by the same user-data a cloud
VM would get), submits a burst of jobs, shows progress live, waits until every job has completed and the
cluster is back at its minimum, stops everything it started and prints a summary. The same function drives the
tests, so what the README promises is what CI checks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from marea.clouds.local import LocalCloud
from marea.config import load_config
from marea.engine.store import Store


class DemoError(Exception):
    pass


@dataclass
class DemoResult:
    jobs_submitted: int = 0
    jobs_completed: int = 0
    jobs_killed: int = 0
    workers_started: int = 0
    workers_peak: int = 0
    workers_at_end: int = 0
    failed_boots: int = 0
    leaked_vms: int = 0
    seconds: float = 0.0
    ok: bool = False


def repo_root() -> Path:
    """The checkout marea runs from (the testbeds live there, not in the wheel)."""
    env = os.environ.get("MAREA_REPO")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "testbeds" / "slurm.sh").exists():
            return parent
    raise DemoError("cannot find testbeds/slurm.sh: run from a marea checkout or set MAREA_REPO")


@dataclass(frozen=True)
class SlurmTestbed:
    """The testbed script and the namespace it runs in (tests run their own instances side by side)."""

    script: Path
    base: str = "/tmp/marea-slurm"
    ns: str = "marea-slurm"
    subnet: str = "10.231.0"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MAREA_SLURM_BASE": self.base,
            "MAREA_SLURM_NS": self.ns,
            "MAREA_SLURM_SUBNET": self.subnet,
        }

    @property
    def slurm_conf(self) -> str:
        return f"{self.base}/etc/slurm.conf"

    def run(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(["bash", str(self.script), *args], capture_output=True, text=True, env=self.env)
        if check and proc.returncode != 0:
            raise DemoError(f"testbeds/slurm.sh {args[0]} failed: {proc.stderr.strip()[-400:]}")
        return proc.stdout

    def client(self, *args: str) -> str:
        proc = subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.ns}", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "SLURM_CONF": self.slurm_conf},
            timeout=60,
        )
        if proc.returncode != 0:
            raise DemoError(f"{args[0]} failed: {proc.stderr.strip()[:300]}")
        return proc.stdout

    def jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = json.loads(self.client("squeue", "--json", "--states=all"))["jobs"]
        return jobs


def local_cloud_config(
    *,
    cluster: str,
    bridge_netns: str,
    subnet: str,
    max_workers: int,
    min_workers: int,
    cores: int,
    memory_mb: int,
    idle_threshold_s: float,
    join_timeout_s: float,
    interval_s: float,
    absent_grace_s: float = 120.0,
    extra_policy: str = "",
    first_host: int | None = None,
    web_listen: str = "",
    boot_patience_s: float = 0.0,
) -> str:
    """The marea.toml sections every testbed demo shares: one flavour, the local cloud driver with its VMs
    on the testbed's bridge, the user-data in worker.sh. The caller adds its [batch] section. The web endpoint
    is off unless `web_listen` is given (engines of tests run side by side would share the default port).
    Like the idle threshold, the boot patience is scaled down to the demos' jobs of seconds (0: boot at once;
    the product's default of 300 s suits jobs of minutes to hours)."""
    first = f"first_host = {first_host}\n" if first_host is not None else ""
    return f"""[cluster]
name = "{cluster}"
state = "state.db"

[engine]
interval_s = {interval_s}
absent_grace_s = {absent_grace_s}
log_file = "engine.log"

[web]
listen = {json.dumps(web_listen)}

[policy]
min_workers = {min_workers}
max_workers = {max_workers}
max_parallel_boots = {max_workers}
idle_threshold_s = {idle_threshold_s}
boot_patience_s = {boot_patience_s}
join_timeout_s = {join_timeout_s}
backoff_base_s = 20
{extra_policy}

[[flavours]]
name = "local.{cores}c"
cores = {cores}
memory_mb = {memory_mb}

[cloud]
driver = "local"

[cloud.local]
base_dir = "vms"
netns = true
bridge_netns = "{bridge_netns}"
bridge = "br0"
subnet = "{subnet}.0/24"
{first}
[worker]
user_data_file = "worker.sh"
"""


def write_demo_config(
    workdir: Path,
    testbed: SlurmTestbed,
    *,
    cluster: str = "demo",
    max_workers: int = 4,
    min_workers: int = 0,
    cores: int = 2,
    memory_mb: int = 2000,
    idle_threshold_s: float = 10.0,
    join_timeout_s: float = 90.0,
    interval_s: float = 2.0,
    user_data: str | None = None,
    extra_policy: str = "",
    absent_grace_s: float = 120.0,
    web_listen: str = "",
    boot_patience_s: float = 0.0,
) -> Path:
    """A marea.toml for the local driver + Slurm testbed; tests reuse it with other knobs."""
    from marea.templates import worker_template

    (workdir / "worker.sh").write_text(user_data if user_data is not None else worker_template("slurm-worker.sh"))
    cfg = workdir / "marea.toml"
    prefix = json.dumps(["nsenter", f"--net=/run/netns/{testbed.ns}"])
    common = local_cloud_config(
        cluster=cluster, bridge_netns=testbed.ns, subnet=testbed.subnet, max_workers=max_workers,
        min_workers=min_workers, cores=cores, memory_mb=memory_mb, idle_threshold_s=idle_threshold_s,
        join_timeout_s=join_timeout_s, interval_s=interval_s, absent_grace_s=absent_grace_s,
        extra_policy=extra_policy, web_listen=web_listen, boot_patience_s=boot_patience_s,
    )  # fmt: skip
    cfg.write_text(
        f"""# written by marea demo
{common}
[batch]
system = "slurm"

[batch.slurm]
partition = "marea"
feature = "marea"
command_prefix = {prefix}
slurm_conf = "{testbed.slurm_conf}"
"""
    )
    return cfg


class EngineProcess:
    """`marea run` as a child process, as an admin would run it."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = open(self.config.parent / "engine.stdout", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "marea", "run", "-c", str(self.config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9


def submit_jobs(testbed: SlurmTestbed, n: int, seconds: float, cores: int = 1, mem_mb: int = 200) -> list[str]:
    ids = []
    for _ in range(n):
        out = testbed.client(
            "sbatch", "--parsable", "-p", "marea", "-c", str(cores), f"--mem={mem_mb}", "-o", "/dev/null",
            "--wrap", f"sleep {seconds}",
        )  # fmt: skip
        ids.append(out.strip().split(";")[0])
    return ids


def job_summary(testbed: SlurmTestbed, ids: list[str]) -> dict[str, str]:
    wanted = set(ids)
    return {str(j["job_id"]): str(j["job_state"]) for j in testbed.jobs() if str(j["job_id"]) in wanted}


def _table(states: dict[str, str], workers: list[tuple[str, str]], elapsed: float) -> Table:
    t = Table(title=f"marea demo - {elapsed:.0f} s")
    t.add_column("jobs")
    t.add_column("workers")
    counts: dict[str, int] = {}
    for s in states.values():
        counts[s] = counts.get(s, 0) + 1
    t.add_row(
        "\n".join(f"{k.lower()}: {v}" for k, v in sorted(counts.items())) or "-",
        "\n".join(f"{w} {s}" for w, s in workers) or "(none)",
    )
    return t


def run_demo(
    *,
    jobs: int = 12,
    job_seconds: float = 20.0,
    max_workers: int = 4,
    timeout_s: float = 600.0,
    console: Console | None = None,
    keep_dir: bool = False,
    testbed: SlurmTestbed | None = None,
    web_listen: str = "",
) -> DemoResult:
    if os.geteuid() != 0:
        raise DemoError("the demo needs root (network namespaces for the Slurm testbed and the worker VMs)")
    console = console or Console(stderr=True)
    testbed = testbed or SlurmTestbed(repo_root() / "testbeds" / "slurm.sh")
    workdir = Path(tempfile.mkdtemp(prefix="marea-demo-"))
    result = DemoResult()
    t0 = time.monotonic()
    engine: EngineProcess | None = None
    cloud: LocalCloud | None = None
    cluster = "demo"
    testbed.run("install")
    testbed.run("start")
    try:
        config = write_demo_config(workdir, testbed, cluster=cluster, max_workers=max_workers, web_listen=web_listen)
        cfg = load_config(config)
        store = Store(cfg.state_url(), cfg.cluster.name)
        cloud = LocalCloud(cfg.path(cfg.cloud.local.base_dir), netns=True, bridge_netns=testbed.ns)
        engine = EngineProcess(config)
        engine.start()
        if web_listen:
            from marea.web.server import parse_listen

            console.print(f"live page: {parse_listen(web_listen).url} (served by the demo's engine while it runs)")
        ids = submit_jobs(testbed, jobs, job_seconds)
        result.jobs_submitted = len(ids)
        deadline = time.monotonic() + timeout_s
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while True:
                states = job_summary(testbed, ids)
                alive = [(r.id, r.state.value) for r in store.live_instances()]
                result.workers_peak = max(result.workers_peak, len(alive))
                live.update(_table(states, alive, time.monotonic() - t0))
                finished = [s for s in states.values() if s not in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING")]
                if len(finished) == len(ids) and len(alive) <= cfg.policy.min_workers:
                    break
                if time.monotonic() > deadline:
                    raise DemoError(f"timed out after {timeout_s:.0f} s: jobs {states}, workers {alive}")
                if engine.proc is not None and engine.proc.poll() is not None:
                    raise DemoError(f"the engine exited with code {engine.proc.returncode}; see {workdir}/engine.log")
                time.sleep(1.0)
        final = job_summary(testbed, ids)
        result.jobs_completed = sum(1 for s in final.values() if s == "COMPLETED")
        result.jobs_killed = sum(1 for s in final.values() if s in ("NODE_FAIL", "CANCELLED", "FAILED", "PREEMPTED"))
        engine.stop()
        engine = None
        account_workers(result, store, cloud, cfg.cluster.name, max_workers)
    finally:
        if engine is not None:
            engine.stop()
        if cloud is not None:  # after a failure too: the demo leaves no VM behind
            for vm in cloud.list_owned(cluster):
                cloud.delete(vm)
        testbed.run("stop", check=False)
        result.seconds = round(time.monotonic() - t0, 1)
        if not keep_dir and result.ok:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
        else:
            console.print(f"demo files kept in {workdir}")
    return result


def account_workers(result: DemoResult, store: Store, cloud: LocalCloud, cluster: str, max_workers: int) -> None:
    """The worker half of a demo's summary, once the engine has stopped; then power off what is left.

    A VM the cloud still runs but the store does not count as alive is a leak. Workers kept for a non-zero
    minimum are not leaks, but the demo stops everything it started, so they are deleted too.
    """
    result.workers_started = sum(d.count for d in store.recent_decisions(10_000) if d.kind == "boot")
    result.failed_boots = int(store.get_json("failed_boots_total", 0))
    alive_ids = {r.id for r in store.live_instances()}
    owned = cloud.list_owned(cluster)
    result.workers_at_end = len(alive_ids)
    result.leaked_vms = sum(1 for vm in owned if vm.instance_id not in alive_ids)
    for vm in owned:
        cloud.delete(vm)
    store.close()
    result.ok = (
        result.jobs_completed == result.jobs_submitted
        and result.workers_peak <= max_workers
        and result.leaked_vms == 0
        and result.jobs_killed == 0
    )


def result_json(result: DemoResult) -> str:
    return json.dumps(asdict(result))
