"""One reconcile cycle: observe the cloud and the batch system, update the store, decide, act.

Crash safety comes from the order of writes: intent is stored before every external call (`requested` before a
create, `draining` before a drain, `deleting` before a delete) and the outcome after it. A restarted engine
finds each instance in the state of its last intent and finishes or undoes it: a `requested` instance whose VM
exists is adopted, one whose VM does not is forgotten; a drain whose call may not have happened is sent again;
a delete is carried on. VMs that carry this cluster's ownership tag but have no record (the store was lost or
the create returned after a crash) are adopted. Nothing without the tag is ever touched.
"""

from __future__ import annotations

import logging
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from marea.batch.base import BatchError, BatchSnapshot, BatchSystem, Worker
from marea.clouds.base import (
    TAG_CLUSTER,
    TAG_FLAVOUR,
    TAG_GROUP,
    TAG_INSTANCE,
    CloudDriver,
    CloudError,
    CloudVM,
    VMSpec,
    VMStatus,
)
from marea.clouds.retry import TRANSIENT
from marea.clouds.retry import summary as retry_summary
from marea.engine.metrics import NullRecorder, Recorder
from marea.engine.store import DecisionRecord, InstanceRecord, Store
from marea.lifecycle import Batch, Cloud, Rule, Transition, observe
from marea.model import (
    STARTING_STATES,
    Action,
    ActionKind,
    ArrivalRate,
    BootFailures,
    BootRamp,
    ClusterView,
    Flavour,
    InstanceState,
    InstanceView,
    Plan,
    PolicySettings,
    Quota,
    Resources,
)
from marea.policy import arrivals, decide, next_ramp

log = logging.getLogger("marea.engine")

#: default of how long a joined worker may be missing from the batch system before it is declared failed
ABSENT_GRACE_S = 120.0
#: the store's key for the absent-since timers
ABSENT_SINCE_KEY = "absent_since"
#: the store's key for the arrival log headroom sizes on (marea.policy.arrivals)
ARRIVALS_KEY = "arrivals"
NO_ROOM = Resources(0.0, 0.0, 0)


def cloud_seen(vm: CloudVM | None) -> Cloud:
    """The cloud's listing of a worker's VM, in the lifecycle table's terms."""
    if vm is None or vm.status is VMStatus.DELETED:
        return Cloud.MISSING
    return Cloud.ERROR if vm.status is VMStatus.ERROR else Cloud.UP


def batch_seen(worker: Worker | None) -> Batch:
    """The batch system's view of a worker, in the lifecycle table's terms."""
    if worker is None:
        return Batch.ABSENT
    if worker.lost:
        return Batch.LOST_BUSY if worker.busy else Batch.LOST
    return Batch.BUSY if worker.busy else Batch.IDLE


@dataclass
class CycleReport:
    """What one cycle saw and did; the CLI and tests read it."""

    at: float
    plan: Plan = field(default_factory=Plan)
    errors: list[str] = field(default_factory=list)


def render_user_data(template: str, variables: dict[str, str]) -> str:
    """Fill `${MAREA_*}` placeholders; anything else (shell variables) is left as it is."""
    return string.Template(template).safe_substitute(variables)


class Reconciler:
    def __init__(
        self,
        *,
        cluster: str,
        store: Store,
        cloud: CloudDriver,
        batch: BatchSystem,
        settings: PolicySettings,
        user_data_template: str,
        variables: dict[str, str] | None = None,
        clock: Callable[[], float],
        absent_grace_s: float = ABSENT_GRACE_S,
        recorder: Recorder | None = None,
    ) -> None:
        self.cluster = cluster
        self.store = store
        self.cloud = cloud
        self.batch = batch
        self.settings = settings
        self.flavours = {f.name: f for f in settings.flavours}
        self.user_data_template = user_data_template
        self.variables = variables or {}
        self.clock = clock
        #: joined workers missing from the batch system (or lost by it), since when: in the store, so that a
        #: restart does not give a lost worker a fresh grace period
        self._absent_since: dict[str, float] = {
            str(k): float(v) for k, v in dict(store.get_json(ABSENT_SINCE_KEY, {}) or {}).items()
        }
        self.absent_grace_s = absent_grace_s
        self._redrain_checked = False
        #: what the ramp learns from this cycle (marea.policy.ramp): the creates the cloud accepted, the
        #: instances it saw confirmed (ACTIVE in the cloud, or joined) and still booting (None: nothing was
        #: observed), and the failed boots
        self._accepted: list[str] = []
        self._confirmed: set[str] = set()
        self._booting: set[str] | None = None
        #: the VMs on their way when the cycle looked, before its creates (what the parallel-boot limit counts)
        self._in_flight = 0
        self._failed = 0
        #: observer of the events below (metrics); it does no I/O of the cycle's and never decides
        self.recorder: Recorder = recorder or NullRecorder()

    # -- observe ---------------------------------------------------------------------------------------------
    def _adopt_unknown(self, vms: list[CloudVM], known: set[str], now: float) -> bool:
        """Record owned VMs the store does not know; True when any was adopted."""
        adopted = False
        for vm in vms:
            iid = vm.instance_id
            if iid is None or iid in known or vm.status is VMStatus.DELETED:
                continue
            closed = self.store.get(iid)
            if closed is not None:
                if vm.status is VMStatus.DELETING:
                    continue  # deleted by this engine, still on its way out
                # Its record was closed (a create whose answer was lost, and a listing that did not show the VM
                # yet): the VM is the truth, the record is reopened; if it never joins, the join timeout ends it.
                self.store.update_instance(closed, state=InstanceState.BOOTING, state_since=now, cloud_id=vm.cloud_id,
                                           address=vm.address, failure=None)  # fmt: skip
                self._decision(now, "adopt", f"adopted {iid} again: owned VM {vm.cloud_id} appeared after its "
                               "record was closed", iid)  # fmt: skip
                adopted = True
                continue
            flavour = vm.tags.get(TAG_FLAVOUR, self.settings.flavours[0].name)
            rec = InstanceRecord(
                id=iid,
                cluster=self.cluster,
                flavour=flavour,
                group=vm.tags.get(TAG_GROUP, ""),
                state=InstanceState.BOOTING,
                state_since=now,
                created_at=vm.created_at or now,
                cloud_id=vm.cloud_id,
                address=vm.address,
            )
            self.store.add_instance(rec)
            self._decision(now, "adopt", f"adopted {iid}: owned VM {vm.cloud_id} found in the cloud", iid)
            adopted = True
        return adopted

    def _observe_one(
        self, rec: InstanceRecord, vm: CloudVM | None, worker: Worker | None, now: float
    ) -> InstanceRecord:
        """Move one record on what the cloud and the batch system say, through the lifecycle table
        (`lifecycle.observe`, the pure function the simulator shares); this method only reads and writes."""
        cloud = cloud_seen(vm)
        batch = batch_seen(worker)
        for _ in range(2):  # a record whose create was in flight is adopted, then observed as booting
            t = observe(
                rec.state, cloud, batch, now=now, idle_since=rec.idle_since,
                absent_since=self._absent_since.get(rec.id), ever_joined=rec.joined_at is not None,
                absent_grace_s=self.absent_grace_s, fault=vm.fault or "" if vm is not None else "",
            )  # fmt: skip
            if t.rule is not Rule.ADOPT:
                break
            assert vm is not None
            rec = self.store.set_state(rec, InstanceState.BOOTING, now, cloud_id=vm.cloud_id, address=vm.address)
        return self._apply(rec, vm, t, now)

    def _apply(self, rec: InstanceRecord, vm: CloudVM | None, t: Transition, now: float) -> InstanceRecord:
        """Write a transition: the timers, the counters, the decision log, then the record."""
        store = self.store
        if rec.state in (InstanceState.DELETING, InstanceState.GONE):
            return rec
        if t.failed_boot == "vanished":
            self._count_failed_boot(now, f"{rec.id} vanished from the cloud before joining", "vanished")
        if t.state is InstanceState.GONE:
            return store.set_state(rec, InstanceState.GONE, now, failure=t.failure)
        if t.jobs_despite_error:
            assert vm is not None
            log.warning("%s: cloud reports %s, but jobs still run on it", rec.id, vm.fault or "error")
        if t.rule is Rule.CLOUD_ERROR:
            if t.failed_boot:
                # Counted now, before the policy decides, so the backoff holds back the replacement.
                self._count_failed_boot(now, f"{rec.id} {t.failure}", t.failed_boot)
            return store.set_state(rec, InstanceState.FAILED, now, failure=t.failure)
        if vm is not None and vm.address and rec.address != vm.address:
            rec = store.update_instance(rec, address=vm.address)
        if t.absent_since != self._absent_since.get(rec.id):
            if t.absent_since is None:
                del self._absent_since[rec.id]
            else:
                self._absent_since[rec.id] = t.absent_since
            store.put_json(ABSENT_SINCE_KEY, self._absent_since)
        if t.joined:
            self._boot_succeeded(rec, now)
            rec = store.set_state(rec, t.state, now, joined_at=now, idle_since=t.idle_since)
            self._decision(now, "joined", f"{rec.id} joined the batch system after {now - rec.created_at:.0f} s",
                           rec.id)  # fmt: skip
            return rec
        if t.state is not rec.state:
            extra = {"failure": t.failure} if t.failure else {"idle_since": t.idle_since}
            return store.set_state(rec, t.state, now, **extra)
        if t.idle_since != rec.idle_since:
            return store.update_instance(rec, idle_since=t.idle_since)
        return rec

    # -- act -------------------------------------------------------------------------------------------------
    def _decision(self, now: float, kind: str, reason: str, iid: str | None = None, **kw: Any) -> None:
        log.info("%s: %s", kind, reason)
        self.store.record_decision(DecisionRecord(now, kind, reason, iid, kw.get("flavour"), kw.get("count", 0)))
        self.recorder.decision(kind)

    def _count_failed_boot(self, now: float, reason: str, kind: str) -> None:
        """`kind` is one of metrics.FAILED_BOOT_KINDS (a label: a small fixed set, unlike `reason`)."""
        self.recorder.failed_boot(kind)
        self._failed += 1
        f = self.store.boot_failures()
        self.store.put_boot_failures(BootFailures(f.consecutive + 1, now, reason))
        total = int(self.store.get_json("failed_boots_total", 0)) + 1
        self.store.put_json("failed_boots_total", total)

    def _boot_succeeded(self, rec: InstanceRecord, now: float) -> None:
        if self.store.boot_failures().consecutive:
            self.store.put_boot_failures(BootFailures(0, None, ""))

    def _delete(self, rec: InstanceRecord, vm: CloudVM | None, now: float) -> InstanceRecord:
        """Carry a delete as far as it can go now; a worker with work still on it is never deleted."""
        # removal of a name the batch system never saw is a no-op, so always ask
        try:
            if not self.batch.remove(rec.id):
                log.warning("%s: batch system refuses removal (work still runs): retrying later", rec.id)
                return self._drain_before_removal(rec)
        except BatchError as exc:
            log.warning("%s: removal from the batch system failed: %s", rec.id, exc)
            return rec
        if vm is not None:
            try:
                self.cloud.delete(vm)
            except CloudError as exc:
                log.warning("%s: cloud delete failed: %s (retrying next cycle)", rec.id, exc.reason)
                self.recorder.cloud_error(exc.kind)
                return rec
            self.recorder.deleted()
        return self.store.set_state(rec, InstanceState.GONE, now)

    def _drain_before_removal(self, rec: InstanceRecord) -> InstanceRecord:
        """A worker being deleted that was never drained (a boot cancelled or timed out that joined meanwhile and
        took work) is drained once, so that it takes no more: it is removed when its jobs end, never killed,
        instead of refusing removal for as long as new jobs keep landing on it."""
        if rec.drain_sent:
            return rec
        try:
            self.batch.drain(rec.id, "marea: deleting this worker (it joined after the decision to delete it)")
        except BatchError as exc:
            log.warning("%s: drain before removal failed: %s (retrying next cycle)", rec.id, exc)
            return rec
        return self.store.update_instance(rec, drain_sent=True)

    def _boot(self, action: Action, now: float) -> list[str]:
        flavour = self.flavours[action.flavour or self.settings.flavours[0].name]
        specs: list[VMSpec] = []
        for _ in range(action.count):
            iid = f"{self.cluster}-{secrets.token_hex(3)}"
            rec = InstanceRecord(iid, self.cluster, flavour.name, action.group, InstanceState.REQUESTED, now, now)
            self.store.add_instance(rec)  # intent first
            specs.append(self._spec(iid, flavour, action.group))
        errors: list[str] = []
        for result in self.cloud.create_many(specs):
            rec_or_none = self.store.get(result.spec.instance_id)
            assert rec_or_none is not None
            if result.vm is not None:
                self.recorder.booted(1)
                self._accepted.append(result.spec.instance_id)  # accepted, not confirmed: Nova may ERROR it
                self.store.set_state(
                    rec_or_none,
                    InstanceState.BOOTING,
                    now,
                    cloud_id=result.vm.cloud_id,
                    address=result.vm.address,
                )
            elif result.error is not None and result.error.kind in TRANSIENT:
                # The answer was lost (5xx, timeout, dropped connection): the server may exist. The record stays
                # `requested`; the next listing adopts the server or closes the record, as after a crash.
                reason = (
                    f"create of {result.spec.instance_id} failed: {result.error.reason} "
                    "(outcome unknown: the next listing of owned VMs decides)"
                )
                self._count_failed_boot(now, result.error.reason, "create_failed")
                self._decision(now, "failed", reason, result.spec.instance_id)
                errors.append(reason)
            else:
                assert result.error is not None
                reason = f"create of {result.spec.instance_id} failed: {result.error.reason}"
                self.store.set_state(rec_or_none, InstanceState.GONE, now, failure=result.error.reason)
                self.recorder.cloud_error(result.error.kind)
                self._count_failed_boot(now, result.error.reason, "create_failed")
                self._decision(now, "failed", reason, result.spec.instance_id)
                errors.append(reason)
        return errors

    def _spec(self, iid: str, flavour: Flavour, group: str) -> VMSpec:
        variables = {
            "MAREA_INSTANCE_ID": iid,
            "MAREA_NAME": iid,
            "MAREA_CLUSTER": self.cluster,
            "MAREA_FLAVOUR": flavour.name,
            "MAREA_CORES": str(flavour.cores),
            "MAREA_MEMORY_MB": str(flavour.memory_mb),
            "MAREA_GPUS": str(flavour.gpus),
            "MAREA_GROUP": group,
            **self.batch.join_variables(iid),
            **self.variables,
        }
        tags = {TAG_CLUSTER: self.cluster, TAG_INSTANCE: iid, TAG_FLAVOUR: flavour.name}
        if group:
            tags[TAG_GROUP] = group
        return VMSpec(iid, iid, flavour, render_user_data(self.user_data_template, variables), tags)

    # -- the cycle -------------------------------------------------------------------------------------------
    def cycle(self) -> CycleReport:
        now = self.clock()
        report = CycleReport(now)
        self._accepted, self._confirmed, self._booting, self._in_flight, self._failed = [], set(), None, 0, 0
        try:
            return self._cycle(now, report)
        finally:
            self._note_retries(now)
            self._update_ramp(now)

    def ramp(self) -> BootRamp:
        return self.store.boot_ramp()

    def _update_ramp(self, now: float) -> None:
        """The policy's ramp rule applied to this cycle's outcomes; kept in the store (the limit and its rounds
        in one write), a halving is a decision."""
        old = self.ramp()
        new = next_ramp(old, self.settings, accepted=self._accepted, confirmed=self._confirmed,
                        failed=self._failed, booting=self._booting, in_flight=self._in_flight)  # fmt: skip
        if new == old:
            return
        self.store.put_boot_ramp(new)
        if self._failed and new.limit != old.limit:
            self._decision(now, "ramp", f"parallel-boot limit halved to {new.limit} after {self._failed} failed "
                           "boot(s)")  # fmt: skip

    def _note_confirmed(self, observed: list[InstanceRecord], vms: dict[str, CloudVM]) -> None:
        """Which instances the cloud confirmed (listed ACTIVE) or the batch system shows joined, and which are
        still on their way: the ramp grows only on confirmed boots, never on a create the cloud merely accepted."""
        self._booting = set()
        self._in_flight = sum(1 for rec in observed if rec.state in STARTING_STATES)
        for rec in observed:
            if rec.state in (InstanceState.FAILED, InstanceState.GONE):
                continue
            vm = vms.get(rec.id)
            if rec.joined_at is not None or (vm is not None and vm.status is VMStatus.ACTIVE):
                self._confirmed.add(rec.id)
            elif rec.state in STARTING_STATES:
                self._booting.add(rec.id)

    def _note_retries(self, now: float) -> None:
        """The driver's retries of this cycle, as one decision and a running total."""
        events = self.cloud.take_retries()
        if events:
            self._decision(now, "retry", retry_summary(events))
            self.recorder.cloud_retries(len(events))
            total = int(self.store.get_json("cloud_retries_total", 0)) + len(events)
            self.store.put_json("cloud_retries_total", total)

    def _cycle(self, now: float, report: CycleReport) -> CycleReport:
        try:
            vms = self.cloud.list_owned(self.cluster)
        except CloudError as exc:
            report.errors.append(f"cloud: {exc.reason}")
            self.recorder.cloud_error(exc.kind)
            log.warning("cannot list the cloud's VMs, not acting this cycle: %s", exc.reason)
            return report
        try:
            snap = self.batch.snapshot(self.settings.flavours)
        except BatchError as exc:
            report.errors.append(str(exc))
            log.warning("cannot read the batch system, not acting this cycle: %s", exc)
            return report

        records = self.store.live_instances()
        if self._adopt_unknown(vms, {r.id for r in records}, now):
            records = self.store.live_instances()
        vm_by_iid = {vm.instance_id: vm for vm in vms if vm.instance_id}
        observed = [self._observe_one(r, vm_by_iid.get(r.id), snap.workers.get(r.id), now) for r in records]
        live = {r.id: r for r in observed if r.state is not InstanceState.GONE}
        self._note_confirmed(observed, vm_by_iid)

        # Finish what an earlier life of the engine started: deletes in progress, drains maybe never sent.
        for rec in list(live.values()):
            if rec.state is InstanceState.DELETING:
                live[rec.id] = self._delete(rec, vm_by_iid.get(rec.id), now)
            elif rec.state is InstanceState.DRAINING and not rec.drain_sent:
                live[rec.id] = self._send_drain(rec, "drain resumed after restart", now, report)
            elif rec.state.joined and rec.drain_sent:
                live[rec.id] = self._send_resume(rec, report)  # a resume owed since the last cycle (or life)
        live = {k: r for k, r in live.items() if r.state is not InstanceState.GONE}

        view = self._view(now, list(live.values()), snap, report)
        plan = decide(view, self.settings)
        report.plan = plan
        self._execute(plan, live, vm_by_iid, snap, now, report)
        # the workers as this cycle left them (the view is from before the boots and drains it made)
        self.recorder.cycle_seen(view, self.store.live_instances(), snap.queued_jobs)
        for unsat in snap.unsatisfiable:
            self.store.record_wait(now, f"not demand: {unsat.reason}")
        self._publish(now, snap, plan, report)
        return report

    def _send_drain(self, rec: InstanceRecord, reason: str, now: float, report: CycleReport) -> InstanceRecord:
        try:
            self.batch.drain(rec.id, reason)
        except BatchError as exc:
            report.errors.append(str(exc))
            log.warning("%s: drain failed: %s (retrying next cycle)", rec.id, exc)
            return rec
        return self.store.update_instance(rec, drain_sent=True)

    def _send_resume(self, rec: InstanceRecord, report: CycleReport) -> InstanceRecord:
        """Undo the drain of a worker already stored as idle/busy with `drain_sent` (a resume owed): the intent
        is in the store before the call, so a crash or a failed call is retried by the next cycle."""
        try:
            self.batch.resume(rec.id)
        except BatchError as exc:
            report.errors.append(str(exc))
            log.warning("%s: resume failed: %s (retrying next cycle)", rec.id, exc)
            return rec
        return self.store.update_instance(rec, drain_sent=False)

    def _quota(self, report: CycleReport) -> Quota:
        try:
            return self.cloud.quota()
        except CloudError as exc:
            report.errors.append(f"quota: {exc.reason}")
            self.recorder.cloud_error(exc.kind)
            return Quota()

    def _view(self, now: float, live: list[InstanceRecord], snap: BatchSnapshot, report: CycleReport) -> ClusterView:
        views = []
        for rec in live:
            worker = snap.workers.get(rec.id)
            free = worker.free if worker is not None else None
            if rec.state.joined and (worker is None or worker.lost):
                free = NO_ROOM  # a lost or vanished worker runs nothing new: no free capacity, whatever it says
            views.append(
                InstanceView(
                    id=rec.id,
                    flavour=rec.flavour,
                    state=rec.state,
                    state_since=rec.state_since,
                    created_at=rec.created_at,
                    group=rec.group,
                    free=free,
                    idle_since=rec.idle_since,
                    drained=bool(worker is not None and worker.drained)
                    or (rec.state is InstanceState.DRAINING and worker is None and rec.joined_at is not None),
                    failure=rec.failure,
                )
            )
        return ClusterView(now, tuple(views), snap.demand, self._quota(report), self.store.boot_failures(), self.ramp(),
                           self._arrivals(now, snap))  # fmt: skip

    def _arrivals(self, now: float, snap: BatchSnapshot) -> ArrivalRate:
        """The arrival rate of queued work headroom sizes on; measured only with headroom on. Its log (a count
        per demand shape and at most 31 time buckets) is kept in the store, so a restart keeps the rate."""
        s = self.settings
        if not s.headroom:
            return ArrivalRate()
        old = arrivals.from_json(self.store.get_json(ARRIVALS_KEY, None))
        new = arrivals.record(old, snap.demand, now, s.headroom_window_s)
        if new != old:
            self.store.put_json(ARRIVALS_KEY, arrivals.to_json(new))
        return arrivals.rate(new, now, s.headroom_window_s)

    def _execute(
        self,
        plan: Plan,
        live: dict[str, InstanceRecord],
        vms: dict[str, CloudVM],
        snap: BatchSnapshot,
        now: float,
        report: CycleReport,
    ) -> None:
        for action in plan.actions:
            if action.kind is ActionKind.DELETE and action.instance_id in live:
                rec = live[action.instance_id]
                self._decision(now, "delete", action.reason, rec.id)
                if action.failed_boot and rec.state is not InstanceState.FAILED:
                    self._count_failed_boot(now, action.reason, "join_timeout")  # a FAILED one was counted when seen
                rec = self.store.set_state(rec, InstanceState.DELETING, now)  # intent first
                live[rec.id] = self._delete(rec, vms.get(rec.id), now)
            elif action.kind is ActionKind.DRAIN and action.instance_id in live:
                rec = live[action.instance_id]
                self._decision(now, "drain", action.reason, rec.id)
                rec = self.store.set_state(rec, InstanceState.DRAINING, now, drain_sent=False)  # intent first
                live[rec.id] = self._send_drain(rec, action.reason, now, report)
            elif action.kind is ActionKind.RESUME and action.instance_id in live:
                rec = live[action.instance_id]
                worker = snap.workers.get(rec.id)
                busy = worker is not None and worker.busy
                self._decision(now, "resume", action.reason, rec.id)
                # intent first: the record leaves draining with a resume owed (drain_sent), then the call
                rec = self.store.set_state(rec, InstanceState.BUSY if busy else InstanceState.IDLE, now,
                                           idle_since=None if busy else now, drain_sent=True)  # fmt: skip
                live[rec.id] = self._send_resume(rec, report)
            elif action.kind is ActionKind.BOOT:
                self._decision(now, "boot", action.reason, flavour=action.flavour, count=action.count)
                report.errors.extend(self._boot(action, now))
            elif action.kind is ActionKind.WAIT:
                self.recorder.decision("wait")
                if self.store.record_wait(now, action.reason):
                    log.info("wait: %s", action.reason)

    def _publish(self, now: float, snap: BatchSnapshot, plan: Plan, report: CycleReport) -> None:
        """The latest picture, for `marea status` (which may run while the engine does)."""
        self.store.put_json(
            "last_cycle",
            {
                "at": now,
                "queued_jobs": snap.queued_jobs,
                "demand": [
                    {
                        "count": d.count,
                        "cores": d.request.cores,
                        "memory_mb": d.request.memory_mb,
                        "gpus": d.request.gpus,
                        "group": d.group,
                    }
                    for d in snap.demand
                ],
                "unsatisfiable": [{"jobs": list(u.job_ids), "reason": u.reason} for u in snap.unsatisfiable],
                "waiting": [a.reason for a in plan.of_kind(ActionKind.WAIT)],
                "errors": report.errors,
            },
        )
