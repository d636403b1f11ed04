"""The discrete-event loop: replay a trace against one controller in simulated time, and measure the result.

Time jumps from one event to the next (a submission, a job end, a VM join, a controller wake-up); nothing
sleeps and nothing is polled. At one instant the order is: job ends and VM joins, then submissions (and the
batch system starts what fits), then the controller looks. The run ends when every job has finished and the
controller has scaled the cluster back to its resting size (its minimum; a scale-down after the last job is a
cost of the policy), or at `horizon_s` after the last submission (jobs still queued then never started).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from marea.sim.cluster import CloudModel, SimCluster, SimJob
from marea.sim.controllers import Controller
from marea.sim.trace import Trace


@dataclass(slots=True)
class Timeline:
    """Samples every `period` s: VMs alive, VMs joined, cores running jobs, cores queued."""

    period: float
    t: list[float] = field(default_factory=list)
    alive: list[int] = field(default_factory=list)
    joined: list[int] = field(default_factory=list)
    running_cores: list[float] = field(default_factory=list)
    queued_cores: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """The figures of one run. Idle VM-hours: VM time with no job on the VM (booting and draining count)."""

    name: str
    vm_hours: float
    idle_vm_hours: float
    wait_p50_s: float
    wait_p95_s: float
    wait_max_s: float
    jobs: int
    jobs_never_started: int
    boots: int
    failed_boots: int
    jobs_killed: int = 0
    #: parts of the idle VM-hours: VMs booting (and the price of every boot); idle VMs the minimum size keeps (no
    #: policy may remove them)
    booting_vm_hours: float = 0.0
    min_idle_vm_hours: float = 0.0
    policy_calls: int = 0
    wall_s: float = 0.0
    max_workers_seen: int = 0
    waits: tuple[float, ...] = ()
    timeline: Timeline | None = None

    def as_dict(self) -> dict[str, float | int]:
        """The JSON fields of `marea simulate --json` (the first nine are the issue's contract)."""
        return {
            "vm_hours": round(self.vm_hours, 3),
            "idle_vm_hours": round(self.idle_vm_hours, 3),
            "wait_p50_s": round(self.wait_p50_s, 1),
            "wait_p95_s": round(self.wait_p95_s, 1),
            "wait_max_s": round(self.wait_max_s, 1),
            "jobs": self.jobs,
            "jobs_never_started": self.jobs_never_started,
            "boots": self.boots,
            "failed_boots": self.failed_boots,
            "jobs_killed": self.jobs_killed,
            "booting_vm_hours": round(self.booting_vm_hours, 3),
            "min_idle_vm_hours": round(self.min_idle_vm_hours, 3),
            "policy_calls": self.policy_calls,
            "max_workers_seen": self.max_workers_seen,
            "wall_s": round(self.wall_s, 2),
        }


def _integrate(
    cluster: SimCluster, resting: int, t: float, booting_s: float, min_idle_s: float, last_t: float
) -> tuple[float, float, float]:
    """Add the booting and minimum-forced idle VM time of the interval [last_t, t) (state is constant in it)."""
    dt = t - last_t
    if dt <= 0:
        return booting_s, min_idle_s, last_t
    joined = len(cluster.workers) - cluster.n_booting
    booting_s += cluster.n_booting * dt
    min_idle_s += max(0, min(resting, joined) - cluster.n_busy) * dt
    return booting_s, min_idle_s, t


def wait_stats(waits: np.ndarray) -> tuple[float, float, float]:
    if waits.size == 0:
        return 0.0, 0.0, 0.0
    p50, p95 = np.percentile(waits, [50, 95])
    return float(p50), float(p95), float(waits.max())


def simulate(
    trace: Trace,
    controller: Controller,
    cloud: CloudModel,
    horizon_s: float = 7 * 86400.0,
    sample_every_s: float = 600.0,
    progress: Callable[[int], None] | None = None,
    placement: str = "pack",
) -> PolicyResult:
    """Replay `trace` with `controller` deciding the cluster's size; return the measured figures.

    `progress`, when given, is called with the number of jobs submitted so far, about 200 times in a run (a
    replay of a year-long trace takes minutes: `marea simulate` shows a progress bar with it). `placement`: how
    the batch system places jobs on workers (`marea.sim.cluster.PLACEMENTS`)."""
    wall0 = time.perf_counter()
    jobs = trace.jobs
    t0 = trace.start
    cluster = SimCluster(cloud, t0, placement)
    controller.start(cluster)
    cluster.changed = False
    timeline = Timeline(sample_every_s)
    next_sample = t0
    stop_at = trace.end + horizon_s
    sim_jobs: list[SimJob] = []
    max_seen = cluster.alive_workers()
    resting = controller.resting_size
    booting_s = 0.0  # VM time spent booting
    min_idle_s = 0.0  # idle VM time the minimum size forces: max(0, min(resting, joined) - busy VMs)
    last_t = t0
    i, n = 0, len(jobs)
    report_every = max(1, n // 200)
    next_report = report_every
    while True:
        if (
            i >= n
            and cluster.queued == 0
            and cluster.running == 0
            and cluster.alive_workers() <= controller.resting_size
        ):
            break
        next_event = cluster.next_event_time()
        t = min(
            jobs[i].submit if i < n else math.inf,
            math.inf if next_event is None else next_event,
            controller.next_wakeup(),
        )
        if t > stop_at:
            if t != math.inf:
                booting_s, min_idle_s, last_t = _integrate(cluster, resting, stop_at, booting_s, min_idle_s, last_t)
                cluster.process_events_until(stop_at)
            break
        while next_sample <= t:
            timeline.t.append(next_sample)
            timeline.alive.append(len(cluster.workers))
            timeline.joined.append(sum(1 for w in cluster.workers.values() if w.joined))
            timeline.running_cores.append(cluster.running_cores)
            timeline.queued_cores.append(cluster.queued_cores)
            next_sample += sample_every_s
        booting_s, min_idle_s, last_t = _integrate(cluster, resting, t, booting_s, min_idle_s, last_t)
        cluster.process_events_until(t)
        submitted = False
        while i < n and jobs[i].submit <= t:
            sim_jobs.append(cluster.submit(jobs[i]))
            i += 1
            submitted = True
        if submitted:
            cluster.schedule()
            if progress is not None and i >= next_report:
                progress(i)
                next_report = i + report_every
        if cluster.changed:
            controller.notify(t)
            cluster.changed = False
        if controller.next_wakeup() <= t:
            killed = cluster.acct.jobs_killed
            controller.wakeup(cluster)
            if cluster.acct.jobs_killed != killed:
                cluster.schedule()  # jobs of a deleted busy VM are back in the queue: start them where they fit
            cluster.changed = False
            max_seen = max(max_seen, cluster.alive_workers())
    cluster.finish()
    if progress is not None:
        progress(n)
    acct = cluster.acct
    started = np.fromiter((j.start - j.trace.submit for j in sim_jobs if j.start >= 0), dtype=float)
    p50, p95, pmax = wait_stats(started)
    never = n - int(started.size)
    return PolicyResult(
        name=controller.name,
        vm_hours=acct.vm_seconds / 3600.0,
        idle_vm_hours=(acct.vm_seconds - acct.busy_seconds) / 3600.0,
        wait_p50_s=p50,
        wait_p95_s=p95,
        wait_max_s=pmax,
        jobs=n,
        jobs_never_started=never,
        boots=acct.boots,
        failed_boots=acct.failed_boots,
        jobs_killed=acct.jobs_killed,
        booting_vm_hours=(booting_s + acct.boot_price_seconds) / 3600.0,
        min_idle_vm_hours=min_idle_s / 3600.0,
        policy_calls=controller.calls,
        wall_s=time.perf_counter() - wall0,
        max_workers_seen=max_seen,
        waits=tuple(started.tolist()),
        timeline=timeline,
    )
