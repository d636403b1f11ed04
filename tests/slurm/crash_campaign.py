"""The crash campaign: `marea run` killed with SIGKILL at random points of scale-up and scale-down, restarted,
run to completion; on the real Slurm testbed with the local cloud driver (each worker a real slurmd).

Shared by tests/slurm/test_chaos_crash.py (the short form, in CI) and benchmarks/chaos_crash.py (the long form).
It runs its own Slurm testbed instance (namespace marea-slurm-cx, subnet 10.239.7.0/24, base
/tmp/marea-slurm-chaos), so it collides with no other suite.

One trial: a fresh cluster, 3 two-core jobs of 3 s on two-core workers (exactly 3 workers are needed, and
max_workers is 3); the engine is killed once, at a random delay either after the jobs were submitted (scale-up:
creates, boots, joins) or after the first drain decision (scale-down: drains, removals, deletes), and restarted
at once. The trial ends when every job is done and no VM is left. Counted, all of which must be 0:

- leaked VMs: owned VMs still in the cloud at the end (and VMs the store no longer tracks);
- killed or requeued jobs: a job not COMPLETED, or with a restart count;
- boots over the maximum: samples (every 0.1 s) with more owned VMs than max_workers;
- duplicate joins: an instance that joined twice, or more joins than VMs booted.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marea.clouds.local import LocalCloud
from marea.config import load_config
from marea.demo import EngineProcess, SlurmTestbed, repo_root, submit_jobs, write_demo_config
from marea.engine.store import Store

DONE = {"COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL"}
MAX_WORKERS = 3


def chaos_testbed() -> SlurmTestbed:
    return SlurmTestbed(
        repo_root() / "testbeds" / "slurm.sh", base="/tmp/marea-slurm-chaos", ns="marea-slurm-cx", subnet="10.239.7"
    )


@dataclass
class TrialResult:
    trial: int
    phase: str
    kill_after_s: float
    seconds: float = 0.0
    leaked_vms: int = 0
    jobs_killed: int = 0
    jobs_requeued: int = 0
    boots_over_max: int = 0
    duplicate_joins: int = 0
    failed_boots: int = 0
    adopted: int = 0
    completed: bool = False
    error: str = ""
    #: the lifecycle states of the cluster's instances right after the kill (where the kill landed)
    states_at_kill: list[str] = field(default_factory=list)


@dataclass
class CampaignResult:
    trials: list[TrialResult] = field(default_factory=list)

    def totals(self) -> dict[str, Any]:
        t = self.trials
        secs = sorted(x.seconds for x in t)
        return {
            "trials": len(t),
            "kills_scale_up": sum(x.phase == "up" for x in t),
            "kills_scale_down": sum(x.phase == "down" for x in t),
            "completed": sum(x.completed for x in t),
            "leaked_vms": sum(x.leaked_vms for x in t),
            "jobs_killed_or_requeued": sum(x.jobs_killed + x.jobs_requeued for x in t),
            "boots_over_max": sum(x.boots_over_max for x in t),
            "duplicate_joins": sum(x.duplicate_joins for x in t),
            "failed_boots_after_kill": sum(x.failed_boots for x in t),
            "adoptions": sum(x.adopted for x in t),
            "kills_with_workers_in": dict(sorted(Counter(st for x in t for st in set(x.states_at_kill)).items())),
            "kills_with_no_worker_yet": sum(not x.states_at_kill for x in t),
            "seconds_median": secs[len(secs) // 2] if secs else 0.0,
            "seconds_max": secs[-1] if secs else 0.0,
            "errors": [f"trial {x.trial}: {x.error}" for x in t if x.error],
        }

    @property
    def ok(self) -> bool:
        tot = self.totals()
        return (
            tot["completed"] == tot["trials"]
            and tot["leaked_vms"] == tot["jobs_killed_or_requeued"] == tot["boots_over_max"] == 0
            and tot["duplicate_joins"] == 0
        )


def _wait(cond: Any, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False


def run_trial(tb: SlurmTestbed, workdir: Path, trial: int, rng: random.Random, timeout_s: float = 150) -> TrialResult:
    cluster = f"cx{trial}"
    phase = rng.choice(["up", "down"])
    delay = round(rng.uniform(0.0, 1.5 if phase == "up" else 0.8), 2)
    res = TrialResult(trial, phase, delay)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = write_demo_config(workdir, tb, cluster=cluster, max_workers=MAX_WORKERS, idle_threshold_s=1,
                                 interval_s=0.5, join_timeout_s=60)  # fmt: skip
    cfg_path.write_text(cfg_path.read_text().replace("backoff_base_s = 20", "backoff_base_s = 2"))
    cfg = load_config(cfg_path)
    cloud = LocalCloud(cfg.path("vms"))
    store = Store(cfg.state_url(), cluster)
    over = [0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            if len(cloud.list_owned(cluster)) > MAX_WORKERS:
                over[0] += 1
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.monotonic()
    engine = EngineProcess(cfg_path)
    ids: list[str] = []
    try:
        engine.start()
        sampler.start()
        ids = submit_jobs(tb, MAX_WORKERS, 3, cores=2)
        if phase == "down":
            drained = _wait(lambda: any(d.kind == "drain" for d in store.recent_decisions(200)), 90)
            if not drained:
                res.error = "no drain within 90 s before the kill"
        time.sleep(delay)
        engine.kill9()
        res.states_at_kill = sorted(r.state.value for r in store.live_instances())
        engine = EngineProcess(cfg_path)
        engine.start()

        def finished() -> bool:
            jobs = {str(j["job_id"]): j for j in tb.jobs() if str(j["job_id"]) in set(ids)}
            done = len(jobs) == len(ids) and all(str(j["job_state"]) in DONE for j in jobs.values())
            return done and not store.live_instances() and not cloud.list_owned(cluster)

        res.completed = _wait(finished, timeout_s, 0.5)
        if not res.completed and not res.error:
            res.error = f"not back to 0 within {timeout_s:.0f} s"
    finally:
        engine.stop()
        sampling.set()
        if sampler.is_alive():
            sampler.join(5)
        res.seconds = round(time.monotonic() - t0, 1)
        jobs = {str(j["job_id"]): j for j in tb.jobs() if str(j["job_id"]) in set(ids)}
        res.jobs_killed = sum(1 for j in jobs.values() if str(j["job_state"]) != "COMPLETED")
        res.jobs_requeued = sum(1 for j in jobs.values() if int(j.get("restart_cnt") or 0) > 0)
        owned = cloud.list_owned(cluster)
        # the trial ends at 0 workers: any owned VM left is a leak (tracked or not, nothing would delete it now)
        res.leaked_vms = len(owned)
        res.boots_over_max = over[0]
        decisions = store.recent_decisions(100_000)
        joins = [d.instance_id for d in decisions if d.kind == "joined"]
        booted = sum(d.count for d in decisions if d.kind == "boot") + sum(d.kind == "adopt" for d in decisions)
        res.duplicate_joins = (len(joins) - len(set(joins))) + max(0, len(set(joins)) - booted)
        res.failed_boots = int(store.get_json("failed_boots_total", 0))
        res.adopted = sum(d.kind == "adopt" for d in decisions)
        store.close()
        for vm in owned:  # cleanup after a failed trial (the leak is counted above)
            cloud.delete(vm)
        if ids and res.jobs_killed:
            with contextlib.suppress(Exception):
                tb.client("scancel", *ids)
    return res


def run_campaign(trials: int, seed: int = 1, workdir: Path | None = None, log: Any = None) -> CampaignResult:
    """`trials` trials on a fresh chaos testbed instance, stopped at the end."""
    import tempfile

    tb = chaos_testbed()
    base = workdir or Path(tempfile.mkdtemp(prefix="marea-chaos-crash-"))
    rng = random.Random(seed)
    result = CampaignResult()
    tb.run("stop", check=False)
    tb.run("start")
    try:
        for i in range(trials):
            r = run_trial(tb, base / f"t{i}", i, rng)
            result.trials.append(r)
            if log:
                at_kill = ",".join(r.states_at_kill) or "-"
                log(f"trial {i + 1}/{trials}: kill in scale-{r.phase} after {r.kill_after_s} s -> "
                    f"{'ok' if r.completed else r.error} in {r.seconds} s (at the kill: {at_kill}; "
                    f"leaked {r.leaked_vms}, killed jobs "
                    f"{r.jobs_killed}, requeued {r.jobs_requeued}, over max {r.boots_over_max}, duplicate joins "
                    f"{r.duplicate_joins}, failed boots {r.failed_boots}, adopted {r.adopted})")  # fmt: skip
    finally:
        tb.run("stop", check=False)
    return result
