"""Boots that would only idle (issue #15): a VM still booting that no queued work needs any more is cancelled
(`cancel_surplus_boots`), and queued work waits `boot_patience_s` for room on busy workers before a VM boots.

Pure, hand-computed cases and one property over random clusters; the engine's side is in
tests/slurm/test_cancel_boot.py (real Slurm), the effect on idle VM-hours in benchmarks/policy_goals.py.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from marea.model import (
    ActionKind,
    ClusterView,
    DemandGroup,
    Flavour,
    InstanceState,
    InstanceView,
    PolicySettings,
    Resources,
)
from marea.policy import decide

W4 = Flavour("w4", 4, 8000)
S = InstanceState


def _settings(**kw: object) -> PolicySettings:
    base: dict[str, object] = dict(flavours=(W4,), min_workers=0, max_workers=50, cancel_surplus_boots=True)
    base.update(kw)
    return PolicySettings(**base)  # type: ignore[arg-type]


def _w(iid: str, state: InstanceState, used: float = 0.0, *, created: float = 0.0, group: str = "") -> InstanceView:
    joined = state in (S.IDLE, S.BUSY, S.DRAINING)
    free = Resources(4 - used, 8000 - 1000 * used, 0) if joined else None
    return InstanceView(iid, "w4", state, created, created, group=group, free=free,
                        idle_since=created if state is S.IDLE else None)  # fmt: skip


def _jobs(n: int, cores: float = 1, submitted: float | None = None, group: str = "") -> tuple[DemandGroup, ...]:
    return (DemandGroup(Resources(cores, 1000 * cores, 0), n, group, submitted),)


def _cancelled(plan_actions: object) -> list[str]:
    return [a.instance_id or "" for a in plan_actions.of_kind(ActionKind.DELETE)]  # type: ignore[attr-defined]


# -- cancelling surplus boots ------------------------------------------------------------------------------------
def test_a_booting_vm_no_queued_work_needs_is_cancelled_youngest_first_and_not_as_a_failed_boot() -> None:
    booting = (_w("old", S.BOOTING, created=10.0), _w("young", S.BOOTING, created=50.0))
    plan = decide(ClusterView(100.0, booting, _jobs(3)), _settings())  # 3 cores fit one VM: one is surplus
    deletes = plan.of_kind(ActionKind.DELETE)
    assert [a.instance_id for a in deletes] == ["young"]
    assert not deletes[0].failed_boot and "no queued work needs it" in deletes[0].reason
    assert plan.boots == 0
    # with nothing queued both go, youngest first
    assert _cancelled(decide(ClusterView(100.0, booting), _settings())) == ["young", "old"]


def test_cancelling_keeps_the_minimum_spares_requested_vms_and_can_be_switched_off() -> None:
    booting = (_w("a", S.BOOTING), _w("b", S.BOOTING), _w("c", S.BOOTING))
    assert len(_cancelled(decide(ClusterView(100.0, booting), _settings(min_workers=2)))) == 1
    assert _cancelled(decide(ClusterView(100.0, booting), _settings(cancel_surplus_boots=False))) == []
    # REQUESTED: the create is not confirmed yet; the engine's own recovery handles it, the policy does not
    requested = (_w("r", S.REQUESTED),)
    assert _cancelled(decide(ClusterView(100.0, requested), _settings())) == []


def test_work_that_fits_the_running_workers_frees_the_booting_vm_booted_for_it() -> None:
    """The job a VM was booted for started on a slot that freed meanwhile: the queue no longer needs the VM."""
    cluster = (_w("run", S.BUSY, used=2), _w("boot", S.BOOTING, created=90.0))
    assert _cancelled(decide(ClusterView(100.0, cluster, _jobs(2)), _settings())) == ["boot"]
    assert _cancelled(decide(ClusterView(100.0, cluster, _jobs(3)), _settings())) == []


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([S.BOOTING, S.IDLE, S.BUSY]), max_size=8),
    st.lists(st.integers(0, 4), min_size=8, max_size=8),
    st.integers(0, 30),
    st.integers(1, 4),
    st.integers(0, 3),
)
def test_never_cancels_a_boot_and_boots_another_in_one_decision(
    states: list[InstanceState], used: list[int], queued: int, cores: int, min_workers: int
) -> None:
    """One flavour, one group: a job that fits a new VM fits an empty booting one, so the planner fills booting
    VMs before booting new ones, and a cycle that boots has no booting VM to spare. Nor does cancelling ever
    take the cluster below its minimum or touch a worker that joined."""
    inst = tuple(_w(f"i{k}", s, used=(used[k] if s is S.BUSY else 0), created=float(k)) for k, s in enumerate(states))
    view = ClusterView(100.0, inst, _jobs(queued, cores) if queued else ())
    plan = decide(view, _settings(min_workers=min_workers))
    cancelled = set(_cancelled(plan))
    assert not (cancelled and plan.boots), plan
    assert all(i.state is S.BOOTING for i in inst if i.id in cancelled)
    drains = len(plan.of_kind(ActionKind.DRAIN))
    active = sum(1 for i in inst if i.state in (S.BOOTING, S.IDLE, S.BUSY))
    if cancelled or drains:
        assert active - len(cancelled) - drains + plan.boots >= min_workers


# -- boot patience ---------------------------------------------------------------------------------------------
def test_young_queued_work_waits_for_room_on_busy_workers_then_boots() -> None:
    s = _settings(boot_patience_s=120.0)
    busy = (_w("b", S.BUSY, used=4),)
    young = decide(ClusterView(100.0, busy, _jobs(4, submitted=30.0)), s)  # waited 70 s of 120
    assert young.boots == 0
    assert any("boot_patience_s" in a.reason for a in young.of_kind(ActionKind.WAIT))
    assert decide(ClusterView(150.0, busy, _jobs(4, submitted=30.0)), s).boots == 1  # waited 120 s
    assert decide(ClusterView(100.0, busy, _jobs(4, submitted=30.0)), _settings()).boots == 1  # patience 0


def test_patience_only_while_a_busy_worker_could_ever_hold_the_job() -> None:
    s = _settings(boot_patience_s=120.0)
    young = _jobs(4, submitted=90.0)
    assert decide(ClusterView(100.0, (), young), s).boots == 1  # nothing runs: nothing will free
    assert decide(ClusterView(100.0, (_w("i", S.IDLE),), _jobs(8, submitted=90.0)), s).boots == 1
    other_group = (_w("b", S.BUSY, used=4, group="gpu"),)
    assert decide(ClusterView(100.0, other_group, young), s).boots == 1
    # a job of unknown submit time is not held back
    assert decide(ClusterView(100.0, (_w("b", S.BUSY, used=4),), _jobs(4)), s).boots == 1


def test_patient_work_still_counts_on_booting_vms_so_they_are_not_cancelled() -> None:
    s = _settings(boot_patience_s=120.0)
    cluster = (_w("b", S.BUSY, used=4), _w("boot", S.BOOTING, created=60.0))
    plan = decide(ClusterView(100.0, cluster, _jobs(4, submitted=90.0)), s)
    assert _cancelled(plan) == [] and plan.boots == 0


def test_headroom_keeps_its_warm_booting_vm_from_being_cancelled() -> None:
    """With headroom on, a spare booting VM is warm capacity: cancelling spares as many as headroom's target
    (less the idle ones), the oldest, so headroom's own boots are not cancelled the cycle after."""
    from marea.model import ArrivalRate

    s = _settings(headroom=True, headroom_max_workers=1, headroom_boot_s=420.0)
    arrivals = ArrivalRate(cores_per_s=4 / 420, memory_mb_per_s=0.0, window_s=1800.0)  # one VM's worth per boot
    booting = (_w("old", S.BOOTING, created=10.0), _w("young", S.BOOTING, created=50.0))
    plan = decide(ClusterView(100.0, booting, arrivals=arrivals), s)
    assert _cancelled(plan) == ["young"]
    assert sorted(_cancelled(decide(ClusterView(100.0, booting), s))) == ["old", "young"]  # no arrivals: no target


# -- the ramp when a burst trickles in -----------------------------------------------------------------------------
def test_a_burst_trickling_in_that_fills_the_limit_doubles_it_once_confirmed() -> None:
    """Two VMs per cycle, never half of a limit of 10, but five cycles fill it: the round that filled it counts
    as half the limit and doubles it when confirmed. A trickle that never fills the limit never raises it."""
    from marea.model import BootRamp
    from marea.policy import next_ramp, parallel_limit

    s = _settings(initial_parallel_boots=10, max_parallel_boots=200)
    ramp, booting = BootRamp(), set[str]()
    for cycle in range(5):
        new = {f"c{cycle}a", f"c{cycle}b"}
        ramp = next_ramp(ramp, s, accepted=new, booting=set(booting), in_flight=len(booting))
        booting |= new
    assert parallel_limit(ramp, s) == 10 and len(ramp.rounds) == 1  # only the round that filled it is kept
    ramp = next_ramp(ramp, s, confirmed=booting, booting=set())
    assert parallel_limit(ramp, s) == 20

    quiet = BootRamp()
    for cycle in range(30):  # one VM a cycle, each confirmed the next: never more than 2 in flight
        quiet = next_ramp(quiet, s, accepted={f"q{cycle}"}, confirmed={f"q{cycle - 1}"}, in_flight=1)
    assert parallel_limit(quiet, s) == 10
