"""`marea demo --batch htcondor`: the elastic flow on a real HTCondor 23.9 pool, with the local cloud.

Like the Slurm demo (marea.demo): it starts the HTCondor testbed (testbeds/htcondor.sh: central manager and
schedd in network namespace marea-condor), runs `marea run` as a separate process with the local cloud driver
(each worker "VM" is a startd-only condor_master in its own namespace, started by the htcondor-worker
user-data and joining with the pool's IDTOKEN), submits a burst of jobs through the PyPI bindings, shows
progress, waits until every job has completed and the cluster is back at its minimum, and summarises.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.live import Live

from marea.clouds.local import LocalCloud
from marea.config import load_config
from marea.demo import DemoError, DemoResult, EngineProcess, _table, account_workers, local_cloud_config, repo_root
from marea.engine.store import Store

T = TypeVar("T")

#: JobStatus -> the names the demo table shows
JOB_STATES = {1: "IDLE", 2: "RUNNING", 3: "REMOVED", 4: "COMPLETED", 5: "HELD", 6: "TRANSFERRING", 7: "SUSPENDED"}


@dataclass(frozen=True)
class HTCondorTestbed:
    script: Path

    def run(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(["bash", str(self.script), *args], capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            raise DemoError(f"testbeds/htcondor.sh {args[0]} failed: {proc.stderr.strip()[-400:]}")
        return proc.stdout

    def env(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.run("env").split())

    def running(self) -> bool:
        return subprocess.run(["bash", str(self.script), "status"], capture_output=True).returncode == 0


class CondorClient:
    """Submit and follow jobs through the PyPI bindings, from inside the pool's network namespace, as the
    testbed's unprivileged submit user (its client config claims that user). The tests use it too."""

    #: what `jobs` reads of each job by default
    JOB_STATE = ("ClusterId", "ProcId", "JobStatus", "NumJobStarts")

    def __init__(self, env: dict[str, str]) -> None:
        from marea.batch.htcondor_netns import NamespaceRunner

        os.environ["CONDOR_CONFIG"] = env["CONDOR_CONFIG"]
        import htcondor2

        htcondor2.reload_config()
        self.h = htcondor2
        self.collector = env["MAREA_CONDOR_COLLECTOR"]
        self.runner = NamespaceRunner(env["MAREA_CONDOR_NS"])

    def call(self, fn: Callable[[Any], T]) -> T:
        """fn(htcondor2) in the pool's network namespace."""
        return self.runner.run(lambda: fn(self.h))

    def schedd(self, h: Any) -> Any:
        return h.Schedd(h.Collector(self.collector).query(h.AdType.Schedd)[0])

    def submit(self, n: int, seconds: float, *, cpus: int = 1, memory: int = 200, batch: str = "demo",
               requirements: str | None = None) -> list[str]:  # fmt: skip
        """`n` jobs sleeping `seconds`, asking `cpus` and `memory` MB, in batch `batch`; their ids."""
        desc = {
            "executable": "/bin/sleep",
            "arguments": str(seconds),
            "request_cpus": str(cpus),
            "request_memory": str(memory),
            "request_disk": "1000",
            "should_transfer_files": "NO",
            "initialdir": "/tmp",
            "batch_name": batch,
        }
        if requirements:
            desc["requirements"] = requirements

        def go(h: Any) -> list[str]:
            result = self.schedd(h).submit(h.Submit(desc), count=n)
            return [f"{result.cluster()}.{i}" for i in range(n)]

        return self.call(go)

    def jobs(self, ids: list[str], projection: tuple[str, ...] = JOB_STATE) -> dict[str, dict[str, Any]]:
        """`projection` of these jobs, from the queue and the history (history wins: it is final)."""
        clusters = sorted({i.split(".")[0] for i in ids})
        constraint = " || ".join(f"ClusterId == {c}" for c in clusters) or "false"
        proj = list(projection)

        def go(h: Any) -> dict[str, dict[str, Any]]:
            s = self.schedd(h)
            out = {}
            for ad in list(s.query(constraint=constraint, projection=proj)) + list(
                s.history(constraint=constraint, projection=proj)
            ):
                out[f"{ad['ClusterId']}.{ad['ProcId']}"] = {k: ad.get(k) for k in proj}
            return out

        found = self.call(go)
        return {i: found[i] for i in ids if i in found}

    def close(self) -> None:
        self.runner.close()


def write_htcondor_config(
    workdir: Path,
    env: dict[str, str],
    *,
    cluster: str = "demo",
    max_workers: int = 4,
    min_workers: int = 0,
    cores: int = 2,
    memory_mb: int = 2000,
    idle_threshold_s: float = 10.0,
    join_timeout_s: float = 90.0,
    interval_s: float = 2.0,
    job_constraint: str = "",
) -> Path:
    """A marea.toml for the local driver + the HTCondor testbed; the demand is the jobs of batch `cluster`
    unless `job_constraint` says otherwise."""
    from marea.templates import worker_template

    (workdir / "worker.sh").write_text(worker_template("htcondor-worker.sh"))
    subnet = env["MAREA_CONDOR_COLLECTOR"].rsplit(".", 1)[0]
    constraint = job_constraint or f'JobBatchName == "{cluster}"'
    cfg = workdir / "marea.toml"
    common = local_cloud_config(
        cluster=cluster, bridge_netns=env["MAREA_CONDOR_NS"], subnet=subnet, max_workers=max_workers,
        min_workers=min_workers, cores=cores, memory_mb=memory_mb, idle_threshold_s=idle_threshold_s,
        join_timeout_s=join_timeout_s, interval_s=interval_s, first_host=100,
    )  # fmt: skip
    cfg.write_text(
        f"""# written by marea demo --batch htcondor
{common}
[worker.variables]
condor_rootfs = "{env["MAREA_CONDOR_ROOTFS"]}"
condor_include = "/etc/marea-condor/common.conf"

[batch]
system = "htcondor"

[batch.htcondor]
collector = "{env["MAREA_CONDOR_COLLECTOR"].split(":")[0]}"
netns = "{env["MAREA_CONDOR_NS"]}"
condor_config = "{env["CONDOR_CONFIG"]}"
token_file = "{env["MAREA_CONDOR_TOKEN_FILE"]}"
job_constraint = '{constraint}'
lost_after_s = 60

[batch.htcondor.machine_attributes]
FileSystemDomain = '"condor.test"'
UidDomain = '"condor.test"'
"""
    )
    return cfg


def run_htcondor_demo(
    *,
    jobs: int = 12,
    job_seconds: float = 20.0,
    max_workers: int = 4,
    timeout_s: float = 600.0,
    console: Console | None = None,
    keep_dir: bool = False,
    cluster: str = "demo",
) -> DemoResult:
    if os.geteuid() != 0:
        raise DemoError("the demo needs root (network namespaces and a chroot for the HTCondor testbed)")
    console = console or Console(stderr=True)
    testbed = HTCondorTestbed(repo_root() / "testbeds" / "htcondor.sh")
    workdir = Path(tempfile.mkdtemp(prefix="marea-demo-htcondor-"))
    result = DemoResult()
    t0 = time.monotonic()
    engine: EngineProcess | None = None
    testbed.run("install")
    was_running = testbed.running()  # a pool someone else started is left running
    testbed.run("start")
    client: CondorClient | None = None
    cloud: LocalCloud | None = None
    try:
        env = testbed.env()
        client = CondorClient(env)
        config = write_htcondor_config(workdir, env, cluster=cluster, max_workers=max_workers)
        cfg = load_config(config)
        store = Store(cfg.state_url(), cfg.cluster.name)
        cloud = LocalCloud(cfg.path(cfg.cloud.local.base_dir), netns=True, bridge_netns=env["MAREA_CONDOR_NS"])
        engine = EngineProcess(config)
        engine.start()
        ids = client.submit(jobs, job_seconds, batch=cfg.cluster.name)
        result.jobs_submitted = len(ids)
        deadline = time.monotonic() + timeout_s
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while True:
                info = client.jobs(ids)
                states = {j: JOB_STATES.get(int(v["JobStatus"]), "?") for j, v in info.items()}
                alive = [(r.id, r.state.value) for r in store.live_instances()]
                result.workers_peak = max(result.workers_peak, len(alive))
                live.update(_table(states, alive, time.monotonic() - t0))
                finished = [s for s in states.values() if s in ("COMPLETED", "REMOVED", "HELD")]
                if len(finished) == len(ids) and len(alive) <= cfg.policy.min_workers:
                    break
                if time.monotonic() > deadline:
                    raise DemoError(f"timed out after {timeout_s:.0f} s: jobs {states}, workers {alive}")
                if engine.proc is not None and engine.proc.poll() is not None:
                    raise DemoError(f"the engine exited with code {engine.proc.returncode}; see {workdir}/engine.log")
                time.sleep(1.0)
        final = client.jobs(ids)
        once = [v for v in final.values() if v["JobStatus"] == 4 and v.get("NumJobStarts") == 1]
        result.jobs_completed = len(once)
        # a job removed, held or started more than once was hurt by a scale-down
        result.jobs_killed = len(final) - len(once)
        engine.stop()
        engine = None
        account_workers(result, store, cloud, cfg.cluster.name, max_workers)
    finally:
        if engine is not None:
            engine.stop()
        if client is not None:
            client.close()
        if cloud is not None:  # after a failure too: the demo leaves no VM behind
            for vm in cloud.list_owned(cluster):
                cloud.delete(vm)
        if not was_running:
            testbed.run("stop", check=False)
        result.seconds = round(time.monotonic() - t0, 1)
        if not keep_dir and result.ok:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
        else:
            console.print(f"demo files kept in {workdir}")
    return result
