"""Scale up: how many VMs of which flavour the queued work needs, beyond the capacity already there.

First-fit decreasing bin packing over cores, memory and GPUs. The bins are, in order: the free part of the
workers that already run, the free part of draining workers (a draining worker the work lands in is RESUMED:
taking back a VM that is there costs nothing and runs the job now, a new VM costs a boot), the whole of the
workers still booting (capacity on its way counts), then new VMs.
A new VM gets the first flavour, in the admin's order of preference, that the job fits in. Bins carry a
multiplicity, so a thousand identical new VMs cost one bin, and packing stops as soon as the caps (max workers,
parallel boots, quota) are used up: the cost of a cycle grows with the number of job shapes and workers, not
with the number of queued jobs.
"""

from __future__ import annotations

from dataclasses import dataclass

from marea.model import (
    ACTIVE_STATES,
    STARTING_STATES,
    Action,
    ActionKind,
    ClusterView,
    DemandGroup,
    Flavour,
    InstanceState,
    InstanceView,
    PolicySettings,
    Quota,
    Resources,
)
from marea.policy import headroom
from marea.policy.ramp import parallel_limit


@dataclass(slots=True)
class _Bin:
    """`count` identical places with `free` room each; `instance_id` is None for a VM still to boot."""

    group: str
    free: Resources
    count: int
    instance_id: str | None = None
    used: bool = False
    draining: bool = False


@dataclass(slots=True)
class _Budget:
    """How many more VMs (and how much quota) this cycle may start, and which limit bites first."""

    slots: int
    limit_reason: str
    quota_left: Quota

    def take(self, flavour: Flavour, wanted: int) -> tuple[int, str | None]:
        """Grant up to `wanted` VMs of `flavour`; return the grant and the reason when it is short."""
        grant, reason = wanted, None
        if self.slots < grant:
            grant, reason = self.slots, self.limit_reason
        q = self.quota_left
        for left, per_vm, what in (
            (q.instances, 1, "instances"),
            (q.cores, flavour.cores, "cores"),
            (q.memory_mb, flavour.memory_mb, "RAM"),
            (q.gpus, flavour.gpus, "GPUs"),
        ):
            if left is not None and per_vm > 0 and left // per_vm < grant:
                grant, reason = max(0, left // per_vm), f"quota ({what})"
        grant = max(0, grant)
        self.slots -= grant
        self.quota_left = Quota(
            None if q.instances is None else q.instances - grant,
            None if q.cores is None else q.cores - grant * flavour.cores,
            None if q.memory_mb is None else q.memory_mb - grant * flavour.memory_mb,
            None if q.gpus is None else q.gpus - grant * flavour.gpus,
        )
        return grant, reason


@dataclass(frozen=True, slots=True)
class ScaleUpResult:
    actions: tuple[Action, ...]
    #: ids of existing instances whose free room the queued work was packed into: they are needed
    needed_instances: frozenset[str]


def _existing_bins(instances: tuple[InstanceView, ...], flavours: dict[str, Flavour]) -> list[_Bin]:
    """Running workers' free room, then draining workers' (longest draining first), then booting workers."""
    running: list[_Bin] = []
    draining: list[tuple[float, _Bin]] = []
    starting: list[_Bin] = []
    for inst in instances:
        flavour = flavours.get(inst.flavour)
        if inst.state is InstanceState.DRAINING:
            free = inst.free if inst.free is not None else (flavour.resources if inst.drained and flavour else None)
            if free is not None and (free.cores > 0 or free.gpus > 0):
                draining.append((inst.state_since, _Bin(inst.group, free, 1, inst.id, draining=True)))
            continue
        if inst.state not in ACTIVE_STATES:
            continue
        if inst.state in STARTING_STATES or inst.free is None:
            if flavour is None:
                continue
            free = flavour.resources
        else:
            free = inst.free
        if free.cores > 0 or free.gpus > 0:
            (starting if inst.state in STARTING_STATES else running).append(_Bin(inst.group, free, 1, inst.id))
    draining.sort(key=lambda sb: (sb[0], sb[1].instance_id or ""))
    return running + [b for _, b in draining] + starting


def backoff_until(view: ClusterView, settings: PolicySettings) -> float | None:
    """When boots may resume after consecutive failed boots (None: no backoff): base x 2^(n-1), capped."""
    f = view.failures
    if f.consecutive <= 0 or f.last_at is None:
        return None
    delay = min(settings.backoff_max_s, settings.backoff_base_s * 2.0 ** min(f.consecutive - 1, 60))
    return f.last_at + delay


def _budget(view: ClusterView, settings: PolicySettings) -> _Budget:
    until = backoff_until(view, settings)
    if until is not None and view.now < until:
        f = view.failures
        reason = (
            f"backoff after {f.consecutive} failed boot(s) (last: {f.last_reason or 'unknown'}); "
            f"next boot allowed in {until - view.now:.0f} s"
        )
        return _Budget(0, reason, view.quota)
    alive = sum(1 for i in view.instances if i.state.alive)
    starting = sum(1 for i in view.instances if i.state in STARTING_STATES)
    limit = parallel_limit(view.ramp, settings)
    by_max = settings.max_workers - alive
    by_parallel = limit - starting
    if by_max <= by_parallel:
        return _Budget(max(0, by_max), f"max workers ({settings.max_workers})", view.quota)
    return _Budget(
        max(0, by_parallel), f"parallel boot limit ({limit}, ramping up to {settings.max_parallel_boots})", view.quota
    )


def _pack_into(bins: list[_Bin], req: Resources, group: str, remaining: int) -> int:
    """First fit of `remaining` copies of `req` into `bins` (splitting multi-count bins); returns what is left."""
    i = 0
    while i < len(bins) and remaining > 0:
        b = bins[i]
        if b.group != group:
            i += 1
            continue
        per_place = b.free.copies_that_fit(req)
        if per_place == 0:
            i += 1
            continue
        capacity = per_place * b.count
        if remaining >= capacity:
            b.free = b.free - req.scaled(per_place)
            b.used = True
            remaining -= capacity
            i += 1
            continue
        # Fill `full` places completely and one place partially; the rest of the bin stays as it was.
        full, partial = divmod(remaining, per_place)
        pieces: list[_Bin] = []
        if full:
            pieces.append(_Bin(group, b.free - req.scaled(per_place), full, b.instance_id, True, b.draining))
        if partial:
            pieces.append(_Bin(group, b.free - req.scaled(partial), 1, b.instance_id, True, b.draining))
        rest = b.count - full - (1 if partial else 0)
        if rest:
            pieces.append(_Bin(group, b.free, rest, b.instance_id, b.used, b.draining))
        bins[i : i + 1] = pieces
        remaining = 0
    return remaining


def _patient(view: ClusterView, settings: PolicySettings, demand: DemandGroup, flavours: dict[str, Flavour]) -> bool:
    """Whether `demand` still waits for room to free on the busy workers instead of booting a VM.

    Why: on a busy cluster most queued jobs start on a slot a finishing job frees, often well within a boot;
    a VM booted for each of them arrives to find its job gone, and idles for the boot and the idle threshold.
    Waiting `boot_patience_s` (from the oldest job of the shape) before booting lets the cluster absorb that
    churn. Only while some busy worker of the demand's group could hold the job once free: with nothing
    running, nothing will free and the VM boots at once.
    """
    if settings.boot_patience_s <= 0 or demand.oldest_submit_time is None:
        return False
    if view.now - demand.oldest_submit_time >= settings.boot_patience_s:
        return False
    return any(
        i.state is InstanceState.BUSY
        and i.group == demand.group
        and (f := flavours.get(i.flavour)) is not None
        and demand.request.fits_in(f.resources)
        for i in view.instances
    )


def _shape_key(d: DemandGroup) -> tuple[int, float, float]:
    r = d.request
    return (r.gpus, r.cores, r.memory_mb)


def plan_scale_up(view: ClusterView, settings: PolicySettings) -> ScaleUpResult:
    """Boots needed for the queued demand and for the minimum size; WAIT actions say what held boots back."""
    flavours = {f.name: f for f in settings.flavours}
    bins = _existing_bins(view.instances, flavours)
    budget = _budget(view, settings)
    new_vms: dict[tuple[str, str], int] = {}  # (flavour, group) -> count
    waits: list[Action] = []
    held_back: dict[str, int] = {}  # limit reason -> jobs left queued because of it
    patient: dict[str, int] = {}  # group -> jobs waiting for room on busy workers (boot_patience_s)

    for demand in sorted(view.demand, key=_shape_key, reverse=True):
        req = demand.request
        remaining = _pack_into(bins, req, demand.group, demand.count)
        if remaining == 0:
            continue
        if _patient(view, settings, demand, flavours):
            patient[demand.group] = patient.get(demand.group, 0) + remaining
            continue
        allowed = [f for f in settings.flavours if not demand.flavours or f.name in demand.flavours]
        flavour = next((f for f in allowed if req.fits_in(f.resources)), None)
        if flavour is None:
            biggest = max(allowed or settings.flavours, key=lambda f: (f.gpus, f.cores, f.memory_mb))
            waits.append(
                Action(
                    ActionKind.WAIT,
                    f"{demand.count} queued job(s) asking {req} fit no configured flavour "
                    f"(largest: {biggest.name}, {biggest.resources}): not booting for them",
                    group=demand.group,
                )
            )
            continue
        per_vm = flavour.resources.copies_that_fit(req)
        wanted = -(-remaining // per_vm)
        grant, limit = budget.take(flavour, wanted)
        if grant:
            key = (flavour.name, demand.group)
            new_vms[key] = new_vms.get(key, 0) + grant
            full, partial = divmod(min(remaining, grant * per_vm), per_vm)
            if full:
                bins.append(_Bin(demand.group, flavour.resources - req.scaled(per_vm), full))
            if partial:
                bins.append(_Bin(demand.group, flavour.resources - req.scaled(partial), 1))
            remaining -= grant * per_vm
        if remaining > 0 and limit is not None:
            held_back[limit] = held_back.get(limit, 0) + remaining

    for group, jobs in patient.items():
        waits.append(
            Action(
                ActionKind.WAIT,
                f"{jobs} queued job(s) wait up to {settings.boot_patience_s:g} s for room on busy workers "
                "before a VM boots for them (boot_patience_s)",
                group=group,
            )
        )
    for limit, jobs in held_back.items():
        waits.append(Action(ActionKind.WAIT, f"{jobs} queued job(s) left waiting: limited by {limit}"))

    resumed = sorted({b.instance_id for b in bins if b.used and b.draining and b.instance_id is not None})
    actions = [
        Action(
            ActionKind.RESUME,
            f"{iid} taken back from draining: queued work fits it (instead of booting a VM)",
            instance_id=iid,
        )
        for iid in resumed
    ]
    actions += [
        Action(
            ActionKind.BOOT,
            f"{n} x {name} for queued work" + (f" in group {group!r}" if group else ""),
            flavour=name,
            count=n,
            group=group,
        )
        for (name, group), n in new_vms.items()
    ]

    active = sum(1 for i in view.instances if i.state in ACTIVE_STATES) + sum(new_vms.values()) + len(resumed)
    if active < settings.min_workers:
        name = settings.min_flavour or settings.flavours[0].name
        grant, limit = budget.take(flavours[name], settings.min_workers - active)
        if grant:
            actions.append(
                Action(
                    ActionKind.BOOT,
                    f"{grant} x {name} to reach the minimum of {settings.min_workers} workers",
                    flavour=name,
                    count=grant,
                )
            )
        if limit is not None and grant < settings.min_workers - active:
            waits.append(Action(ActionKind.WAIT, f"below the minimum of {settings.min_workers}: limited by {limit}"))

    needed = frozenset(b.instance_id for b in bins if b.used and b.instance_id is not None)
    spare_boots = sum(a.count for a in actions if a.kind is ActionKind.BOOT) - sum(new_vms.values())
    warm = headroom.shortfall(view, settings, needed, spare_boots)
    if warm and (grant := budget.take(settings.flavours[0], warm)[0]):
        actions.append(Action(ActionKind.BOOT, headroom.reason(view, settings, grant),
                              flavour=settings.flavours[0].name, count=grant))  # fmt: skip
    return ScaleUpResult(tuple(actions + waits), needed)
