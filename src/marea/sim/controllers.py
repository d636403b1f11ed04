"""Controllers: who scales the simulated cluster. marea's (the engine's policy code), elastiq's, a static one.

A controller says when it next wants to look (`next_wakeup`), is told when the cluster changed (`notify`),
and acts on the cluster when woken. The simulator owns time; controllers never read a clock.
"""

from __future__ import annotations

import math
from typing import Protocol

from marea.model import (
    STARTING_STATES,
    ActionKind,
    ArrivalRate,
    BootFailures,
    BootRamp,
    ClusterView,
    DemandGroup,
    Flavour,
    InstanceState,
    InstanceView,
    PolicySettings,
    Quota,
    Resources,
)
from marea.policy import arrivals, backoff_until, decide, next_ramp
from marea.sim.cluster import SimCluster, SimWorker, move

INF = math.inf


class Controller(Protocol):
    name: str
    #: how many times the controller made a decision (a policy call, an elastiq check)
    calls: int
    #: the size it shrinks back to with no work (its minimum): the simulation ends there
    resting_size: int

    def start(self, cluster: SimCluster) -> None: ...

    def notify(self, now: float) -> None: ...

    def next_wakeup(self) -> float: ...

    def wakeup(self, cluster: SimCluster) -> None: ...


def initial_workers(cluster: SimCluster, flavour: Flavour, n: int) -> None:
    """Every policy starts from the same cluster: `n` workers already joined at the start of the trace."""
    for _ in range(n):
        cluster.boot(flavour, joined=True)


class MareaController:
    """Drives `marea.policy.decide`, exactly as the engine does, at the engine's reconcile interval.

    The engine calls the policy every `interval` seconds. Calling it at every tick of a 239-day trace would
    be millions of calls that nearly all return the same empty plan, so the simulator calls it only at the
    ticks where the answer may differ from the previous call's:
    - the first tick at or after any change of the cluster (a job submitted, started or ended, a VM joined);
    - the tick after a call that changed the cluster (booted, drained or deleted);
    - the first tick at which a timer of the policy expires: a worker's idle threshold, a starting VM's join
      timeout, the end of a boot backoff, and (headroom on) the tick after arrivals leave the rate's window.
    Between those ticks the policy's input differs only in `now`, and the policy uses `now` only through those
    timers, so its decision would be the same empty plan: skipping these calls changes nothing.
    `every_tick=True` calls it at every tick instead (tests compare the two).
    """

    def __init__(self, settings: PolicySettings, interval_s: float, every_tick: bool = False) -> None:
        self.name = "marea"
        self.settings = settings
        self.resting_size = settings.min_workers
        self.interval = interval_s
        self.every_tick = every_tick
        self.calls = 0
        self.failures = BootFailures()
        self.ramp = BootRamp()
        self._flavours = {f.name: f for f in settings.flavours}
        self._next = INF
        self._t0 = 0.0
        self._joins_seen = 0
        #: the engine's arrival log (marea.policy.arrivals), fed the same demand at the same ticks
        self.arrivals = arrivals.ArrivalLog()

    def _tick_at_or_after(self, t: float) -> float:
        k = math.ceil((t - self._t0) / self.interval - 1e-9)
        return self._t0 + k * self.interval

    def _tick_after(self, t: float) -> float:
        k = math.floor((t - self._t0) / self.interval + 1e-9) + 1
        return self._t0 + k * self.interval

    def start(self, cluster: SimCluster) -> None:
        self._t0 = cluster.now
        name = self.settings.min_flavour or self.settings.flavours[0].name
        initial_workers(cluster, self._flavours[name], self.settings.min_workers)
        self._next = cluster.now

    def notify(self, now: float) -> None:
        self._next = min(self._next, self._tick_at_or_after(now))

    def next_wakeup(self) -> float:
        return self._next

    def view(self, cluster: SimCluster) -> ClusterView:
        now = cluster.now
        instances = tuple(self._instance_view(w) for w in cluster.workers.values())
        demand = tuple(
            DemandGroup(Resources(shape[0], shape[1], shape[2]), len(q), "", q[0].trace.submit)
            for shape, q in cluster.queues.items()
            if q
        )
        c = cluster.cloud
        quota = Quota(
            None if c.quota_instances is None else max(0, c.quota_instances - cluster.alive_workers()),
            None if c.quota_cores is None else max(0, c.quota_cores - cluster.alive_cores()),
        )
        return ClusterView(now, instances, demand, quota, self.failures, self.ramp, self._arrivals(now, demand))

    def _arrivals(self, now: float, demand: tuple[DemandGroup, ...]) -> ArrivalRate:
        """What the engine measures: the growth of the queued demand between two policy calls."""
        s = self.settings
        if not s.headroom:
            return ArrivalRate()
        self.arrivals = arrivals.record(self.arrivals, demand, now, s.headroom_window_s)
        return arrivals.rate(self.arrivals, now, s.headroom_window_s)

    def _seen_idle_since(self, w: SimWorker) -> float | None:
        """The engine records idle_since when a poll first sees the worker idle: the tick at or after the
        moment its last job ended (a worker that joins idle is likewise seen at the next tick)."""
        if w.state is not InstanceState.IDLE or w.idle_since is None:
            return None
        return self._tick_at_or_after(w.idle_since)

    def _instance_view(self, w: SimWorker) -> InstanceView:
        joined = w.joined
        return InstanceView(
            id=w.id,
            flavour=w.flavour.name,
            state=w.state,
            state_since=w.state_since,
            created_at=w.created_at,
            group=w.group,
            free=w.free if joined else None,  # a draining worker's too: new work may resume it
            idle_since=self._seen_idle_since(w),
            drained=w.state is InstanceState.DRAINING and w.jobs == 0,
        )

    def wakeup(self, cluster: SimCluster) -> None:
        now = cluster.now
        self.calls += 1
        self._note_joins(cluster)
        confirmed, booting = self._boot_outcomes(cluster)  # observed before acting, as the engine does
        in_flight = cluster.n_booting
        plan = decide(self.view(cluster), self.settings)
        acted = False
        accepted: list[str] = []
        failed = 0
        for action in plan.actions:
            if action.kind is ActionKind.BOOT:
                flavour = self._flavours[action.flavour or self.settings.flavours[0].name]
                for _ in range(action.count):
                    w = cluster.boot(flavour, action.group)
                    if w is None:
                        failed += 1  # the cloud refused it (quota): the ramp halves, as in the engine
                    else:
                        accepted.append(w.id)
                acted = acted or action.count > 0
            elif action.kind is ActionKind.RESUME:
                w = cluster.workers.get(action.instance_id or "")
                if w is not None and w.state is InstanceState.DRAINING:
                    self._resume(cluster, w)
                    acted = True
            elif action.kind in (ActionKind.DRAIN, ActionKind.DELETE):
                w = cluster.workers.get(action.instance_id or "")
                if w is None:
                    continue
                acted = True
                if action.kind is ActionKind.DRAIN:
                    cluster.drain(w)
                else:
                    cluster.delete(w, failed_boot=action.failed_boot)
                    if action.failed_boot:
                        failed += 1
                        self.failures = BootFailures(self.failures.consecutive + 1, now, action.reason)
        self.ramp = next_ramp(self.ramp, self.settings, accepted=accepted, confirmed=confirmed, failed=failed,
                              booting=booting, in_flight=in_flight)  # fmt: skip
        cluster.changed = False
        if self.every_tick or acted:
            self._next = self._tick_after(now)
        else:
            self._next = self._next_timer(cluster)

    @staticmethod
    def _resume(cluster: SimCluster, w: SimWorker) -> None:
        """The engine's resume: the worker takes new work again, as the batch system's RESUME / cancelled drain
        does; the queued jobs that fit start on it now."""
        now = cluster.now
        if w.jobs:
            move(w, InstanceState.BUSY)
        else:
            move(w, InstanceState.IDLE)
            w.idle_since = now
        w.state_since = now
        cluster.changed = True
        cluster.schedule(only=w)

    def _boot_outcomes(self, cluster: SimCluster) -> tuple[set[str], set[str]]:
        """The ramp's rounds' VMs that joined (confirmed: the simulated cloud has no ACTIVE before the join, so
        its confirmation is the join) and those still booting, as the engine observes them. Only the rounds'
        VMs are looked at: the others do not matter to the ramp, and a trace has thousands."""
        confirmed: set[str] = set()
        booting: set[str] = set()
        for r in self.ramp.rounds:
            for iid in r.waiting:
                w = cluster.workers.get(iid)
                if w is None or w.deleted_at is not None:
                    continue
                if w.joined:
                    confirmed.add(iid)
                elif w.state in STARTING_STATES:
                    booting.add(iid)
        return confirmed, booting

    def _note_joins(self, cluster: SimCluster) -> None:
        """A VM that joined resets the consecutive-failure count, as the engine does on a successful boot."""
        if cluster.acct.joins != self._joins_seen:
            self._joins_seen = cluster.acct.joins
            self.failures = BootFailures()

    def _next_timer(self, cluster: SimCluster) -> float:
        """The first tick after `now` at which a timer of the policy expires (INF: none pending).

        Timers that expired at or before `now` were already seen by this call (a worker idle for long but
        kept for the minimum); they can matter again only after a change of the cluster, which notifies.
        """
        now = cluster.now
        s = self.settings
        ticks: list[float] = []
        for w in cluster.workers.values():
            seen = self._seen_idle_since(w)
            if seen is not None:
                # the reaper compares `now - idle_since > threshold`: the first tick strictly after expiry
                ticks.append(self._tick_after(seen + s.idle_threshold_s))
            elif w.state in (InstanceState.BOOTING, InstanceState.REQUESTED):
                ticks.append(self._tick_after(w.created_at + s.join_timeout_s))
        if s.boot_patience_s > 0:
            for q in cluster.queues.values():
                if q:  # the planner boots for a shape once its oldest job has waited boot_patience_s
                    ticks.append(self._tick_at_or_after(q[0].trace.submit + s.boot_patience_s))
        until = backoff_until(ClusterView(now, (), failures=self.failures), s)
        drop = arrivals.next_change(self.arrivals, now, s.headroom_window_s) if s.headroom else None
        if drop is not None:
            # the arrival rate falls when a bucket leaves the window: the warm capacity may shrink then
            ticks.append(self._tick_after(drop))
        if until is not None:
            # the planner compares `now < until`: boots resume at the first tick at or after `until`
            ticks.append(self._tick_at_or_after(until))
        future = [t for t in ticks if t > now]
        return min(future) if future else INF


class ElastiqController:
    """A faithful re-implementation of elastiq's algorithm (dberzano/elastiq, pylib/elastiq/__init__.py and
    plugins/htcondor.py), with every time condition evaluated only at its checks, as elastiq does:

    - every `check_queue_every_s`: n = idle jobs - n_jobs_per_vm x (VMs launched less than
      `estimated_vm_deploy_time_s` ago). If n > `waiting_jobs_threshold`: the first time, remember the check
      time; when it has been so for longer than `waiting_jobs_time_s`, launch ceil(n / n_jobs_per_vm) VMs,
      capped at max_vms - VMs alive (elastiq counts every VM the cloud runs, booting ones included), and forget
      the remembered time. Otherwise forget it.
    - every `check_vms_every_s`: a worker's running-job count is compared with the previous check's; when it
      changed (or the worker is new) its "unchanged since" time is this check. A worker with 0 jobs unchanged
      for longer than `idle_for_time_s` is terminated at once (no drain), while more than min_vms joined
      workers remain (elastiq shuffles the candidates; here the oldest go first, deterministically); its timer
      restarts. Then VMs are launched up to min_vms, counting those still booting.
    - `estimated_vm_deploy_time_s` after a launch: a VM that has not joined is terminated (a failed boot).
    """

    def __init__(
        self,
        flavour: Flavour,
        min_vms: int,
        max_vms: int,
        check_queue_every_s: float = 240.0,
        check_vms_every_s: float = 300.0,
        waiting_jobs_threshold: int = 0,
        waiting_jobs_time_s: float = 600.0,
        n_jobs_per_vm: int = 4,
        idle_for_time_s: float = 600.0,
        estimated_vm_deploy_time_s: float = 420.0,
    ) -> None:
        self.name = "elastiq"
        self.resting_size = min_vms
        self.flavour = flavour
        self.min_vms = min_vms
        self.max_vms = max_vms
        self.check_queue_every_s = check_queue_every_s
        self.check_vms_every_s = check_vms_every_s
        self.waiting_jobs_threshold = waiting_jobs_threshold
        self.waiting_jobs_time_s = waiting_jobs_time_s
        self.n_jobs_per_vm = n_jobs_per_vm
        self.idle_for_time_s = idle_for_time_s
        self.deploy_s = estimated_vm_deploy_time_s
        self.calls = 0
        self.first_seen_above: float | None = None
        self.launched: list[tuple[float, SimWorker]] = []  # (launch time, VM), pending the deploy check
        self.status: dict[str, tuple[int, float]] = {}  # worker id -> (jobs at last check, unchanged since)
        self._next_queue = INF
        self._next_vms = INF

    def start(self, cluster: SimCluster) -> None:
        initial_workers(cluster, self.flavour, self.min_vms)
        self._next_queue = cluster.now
        self._next_vms = cluster.now

    def notify(self, now: float) -> None:
        pass  # elastiq polls on its own schedule; it is never woken by events

    def next_wakeup(self) -> float:
        deploy = self.launched[0][0] + self.deploy_s if self.launched else INF
        return min(self._next_queue, self._next_vms, deploy)

    def wakeup(self, cluster: SimCluster) -> None:
        now = cluster.now
        # deploy checks first: they were scheduled when the VMs launched
        while self.launched and self.launched[0][0] + self.deploy_s <= now:
            _, vm = self.launched.pop(0)
            if vm.deleted_at is None and not vm.joined:
                cluster.delete(vm, failed_boot=True)
        if self._next_vms <= now:
            self.calls += 1
            self._check_vms(cluster, now)
            self._next_vms = now + self.check_vms_every_s
        if self._next_queue <= now:
            self.calls += 1
            self._check_queue(cluster, now)
            self._next_queue = now + self.check_queue_every_s
        cluster.changed = False

    def _recent(self, now: float) -> int:
        return sum(1 for t, vm in self.launched if now - t < self.deploy_s and vm.deleted_at is None)

    def _launch(self, cluster: SimCluster, now: float, n: int) -> None:
        n = min(n, self.max_vms - cluster.alive_workers())
        for _ in range(max(0, n)):
            vm = cluster.boot(self.flavour)
            if vm is not None:  # None: the cloud refused it (quota), as EC2 would
                self.launched.append((now, vm))

    def _check_queue(self, cluster: SimCluster, now: float) -> None:
        n = cluster.queued - self.n_jobs_per_vm * self._recent(now)
        if n > self.waiting_jobs_threshold:
            if self.first_seen_above is None:
                self.first_seen_above = now
            elif now - self.first_seen_above > self.waiting_jobs_time_s:
                self._launch(cluster, now, math.ceil(n / self.n_jobs_per_vm))
                self.first_seen_above = None
        else:
            self.first_seen_above = None

    def _check_vms(self, cluster: SimCluster, now: float) -> None:
        joined = [w for w in cluster.workers.values() if w.joined]
        status: dict[str, tuple[int, float]] = {}
        for w in joined:
            previous = self.status.get(w.id)
            status[w.id] = previous if previous is not None and previous[0] == w.jobs else (w.jobs, now)
        shutdown = [w for w in joined if w.jobs == 0 and now - status[w.id][1] > self.idle_for_time_s]
        for w in shutdown:
            status[w.id] = (0, now)  # elastiq resets the timer of every host it asks to shut down
        allowed = len(joined) - self.min_vms
        for w in shutdown[: max(0, allowed)]:
            cluster.delete(w)
            del status[w.id]
        self.status = status
        if self.min_vms >= 1:
            missing = self.min_vms - cluster.alive_workers()  # joined + still booting ("allegedly running")
            if missing > 0:
                self._launch(cluster, now, missing)


class StaticController:
    """A fixed cluster of `workers` VMs, all there from the start and never changed: the no-elasticity cost."""

    def __init__(self, flavour: Flavour, workers: int) -> None:
        self.name = "static"
        self.flavour = flavour
        self.workers = workers
        self.resting_size = workers
        self.calls = 0

    def start(self, cluster: SimCluster) -> None:
        initial_workers(cluster, self.flavour, self.workers)

    def notify(self, now: float) -> None:
        pass

    def next_wakeup(self) -> float:
        return INF

    def wakeup(self, cluster: SimCluster) -> None:
        cluster.changed = False
