"""Policy v2 (issue #15), pure: the adaptive parallel-boot ramp, consolidation, resume before boot, drain timeout.

Hand-computed cases; the properties over random clusters are in tests/test_policy.py.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from marea.model import (
    ActionKind,
    BootRamp,
    ClusterView,
    DemandGroup,
    Flavour,
    InstanceState,
    InstanceView,
    PolicySettings,
    Resources,
)
from marea.policy import decide, next_ramp, parallel_limit

W4 = Flavour("w4", 4, 8000)
S = InstanceState


def _settings(**kw: object) -> PolicySettings:
    base: dict[str, object] = dict(
        flavours=(W4,), min_workers=0, max_workers=500, max_parallel_boots=200, consolidate=True
    )
    base.update(kw)
    return PolicySettings(**base)  # type: ignore[arg-type]


def _w(iid: str, state: InstanceState, used_cores: float = 0.0, *, since: float = 0.0) -> InstanceView:
    free = Resources(4 - used_cores, 8000 - 1000 * used_cores, 0)
    idle = since if state is S.IDLE else None
    return InstanceView(iid, "w4", state, since, 0.0, free=free, idle_since=idle, drained=state is S.DRAINING
                        and used_cores == 0)  # fmt: skip


def _jobs(n: int, cores: float = 1) -> tuple[DemandGroup, ...]:
    return (DemandGroup(Resources(cores, 1000 * cores, 0), n),)


# -- the ramp ------------------------------------------------------------------------------------------------
def _ids(tag: str, n: int) -> list[str]:
    return [f"{tag}{i}" for i in range(n)]


def test_ramp_starts_low_doubles_on_confirmed_rounds_and_stops_at_the_bound() -> None:
    s = _settings(initial_parallel_boots=10, max_parallel_boots=100)
    ramp = BootRamp()
    limits = [parallel_limit(ramp, s)]
    for k in range(5):
        asked = _ids(f"r{k}-", limits[-1])
        ramp = next_ramp(ramp, s, accepted=asked, booting=())
        assert parallel_limit(ramp, s) == limits[-1]  # accepted is not confirmed: no growth yet
        ramp = next_ramp(ramp, s, confirmed=asked, booting=())
        limits.append(parallel_limit(ramp, s))
    assert limits == [10, 20, 40, 80, 100, 100]
    # a cycle that tried nothing learns nothing; a trickle (less than half the limit) does not raise it
    assert next_ramp(ramp, s) == ramp
    trickle = next_ramp(BootRamp(), s, accepted=_ids("t", 4), booting=())
    assert trickle == BootRamp() and next_ramp(trickle, s, confirmed=_ids("t", 4), booting=()) == BootRamp()
    half = next_ramp(BootRamp(), s, accepted=_ids("h", 5), booting=())
    assert next_ramp(half, s, confirmed=_ids("h", 5), booting=()) == BootRamp(20)


def test_a_round_counts_once_all_of_it_is_confirmed_in_whichever_later_cycles() -> None:
    s = _settings(initial_parallel_boots=8, max_parallel_boots=64)
    ramp = next_ramp(BootRamp(), s, accepted=_ids("a", 8), booting=())
    ramp = next_ramp(ramp, s, confirmed=_ids("a", 5), booting=["a5", "a6", "a7"])
    assert parallel_limit(ramp, s) == 8 and ramp.rounds[0].waiting == {"a5", "a6", "a7"}
    ramp = next_ramp(ramp, s, booting=None)  # the cloud could not be listed: nothing is dropped
    assert ramp.rounds[0].waiting == {"a5", "a6", "a7"}
    # confirmations seen again (every cycle lists the ACTIVE VMs) count once: the round is gone after growth
    ramp = next_ramp(ramp, s, confirmed=_ids("a", 8), booting=())
    assert ramp == BootRamp(16)
    assert next_ramp(ramp, s, confirmed=_ids("a", 8), booting=()) == ramp


def test_an_accepted_then_error_create_never_makes_the_limit_grow() -> None:
    """Nova's conductor puts creates its API accepted in ERROR (quota): the round never counts, the limit halves."""
    s = _settings(initial_parallel_boots=8, max_parallel_boots=64)
    ramp = next_ramp(BootRamp(), s, accepted=_ids("a", 8), booting=())
    assert parallel_limit(ramp, s) == 8
    # two became ACTIVE, six went to ERROR (the engine counts those as failed boots): halved, rounds forgotten
    after = next_ramp(ramp, s, confirmed=["a0", "a1"], failed=6, booting=())
    assert after == BootRamp(4)
    # even the ERROR seen after the others were confirmed: no growth before, a halving when it is seen
    ramp = next_ramp(ramp, s, confirmed=_ids("a", 7), booting=["a7"])
    assert parallel_limit(ramp, s) == 8
    assert next_ramp(ramp, s, failed=1, booting=()) == BootRamp(4)
    # a VM of the round that went without a failure (deleted, forgotten) leaves the round unproven: dropped
    dropped = next_ramp(ramp, s, booting=())
    assert dropped == BootRamp(None) and next_ramp(dropped, s, confirmed=["a7"], booting=()) == BootRamp(None)


def test_a_change_of_the_limit_forgets_the_rounds_asked_at_the_old_one() -> None:
    s = _settings(initial_parallel_boots=8, max_parallel_boots=64)
    ramp = next_ramp(BootRamp(), s, accepted=_ids("a", 4), booting=())
    ramp = next_ramp(ramp, s, accepted=_ids("b", 4), booting=_ids("a", 4))
    assert len(ramp.rounds) == 2
    ramp = next_ramp(ramp, s, confirmed=_ids("a", 4), booting=_ids("b", 4))
    assert ramp == BootRamp(16)  # round a doubled it; round b, asked at 8, cannot double 16 when confirmed
    assert next_ramp(ramp, s, confirmed=_ids("b", 4), booting=()) == BootRamp(16)


def test_ramp_halves_on_any_failed_boot_down_to_one() -> None:
    s = _settings(initial_parallel_boots=10, max_parallel_boots=200)
    ramp = BootRamp(160)
    seen = []
    for k in range(9):
        # some creates were accepted, one was refused: still halves
        ramp = next_ramp(ramp, s, accepted=_ids(f"c{k}-", 100), failed=1, booting=())
        seen.append(ramp.limit)
        assert ramp.rounds == ()
    assert seen == [80, 40, 20, 10, 5, 2, 1, 1, 1]


def test_the_boot_budget_follows_the_ramp_and_names_it() -> None:
    view = ClusterView(0.0, (), _jobs(400))
    first = decide(view, _settings())
    assert first.boots == 10
    assert any("parallel boot limit (10, ramping up to 200)" in a.reason for a in first.of_kind(ActionKind.WAIT))
    later = decide(ClusterView(0.0, (), _jobs(400), ramp=BootRamp(80)), _settings())
    assert later.boots == 80
    # the admin's bound wins over a stored limit above it (the bound was lowered since)
    assert decide(ClusterView(0.0, (), _jobs(400), ramp=BootRamp(80)), _settings(max_parallel_boots=30)).boots == 30


def test_a_burst_of_hundreds_reaches_the_maximum_in_a_few_confirmations() -> None:
    """400 four-core jobs, 100 VMs needed, none joins meanwhile, each listed ACTIVE by the cloud one cycle after
    its create: the limit counts VMs booting at once (10, 20, 40, 80, 160) and doubles when a round is confirmed,
    so the cycles boot 10, -, 10, -, 20, -, 40, -, 20: four confirmations (the fixed cap of 10 needed ten boot
    times)."""
    s = _settings(max_workers=100)
    ramp, booting, cycles, per_cycle = BootRamp(), 0, 0, []
    asked: list[str] = []
    while booting < 100 and cycles < 20:
        plan = decide(ClusterView(0.0, tuple(_w(f"b{i}", S.BOOTING) for i in range(booting)), _jobs(400, 4),
                                  ramp=ramp), s)  # fmt: skip
        confirmed, asked = asked, [f"b{i}" for i in range(booting, booting + plan.boots)]
        booting += plan.boots
        per_cycle.append(plan.boots)
        ramp = next_ramp(ramp, s, accepted=asked, confirmed=confirmed, booting=[f"b{i}" for i in range(booting)])
        cycles += 1
    assert per_cycle == [10, 0, 10, 0, 20, 0, 40, 0, 20]


# -- consolidation -------------------------------------------------------------------------------------------
def test_with_nothing_queued_the_least_loaded_busy_worker_is_drained_into_a_busier_ones_room() -> None:
    # a runs 3 of 4 cores, b 1, c 2: b's load fits in a's free core (best fit, and a is busier) -> b drained;
    # c's 2 cores then fit nowhere (a is full now, b is going) -> c stays
    view = ClusterView(100.0, (_w("a", S.BUSY, 3), _w("b", S.BUSY, 1), _w("c", S.BUSY, 2)))
    drains = decide(view, _settings()).of_kind(ActionKind.DRAIN)
    assert [d.instance_id for d in drains] == ["b"]
    assert "consolidated" in drains[0].reason and "b" in drains[0].reason


def test_least_loaded_first_a_host_is_never_drained_and_idle_or_full_workers_are_left_alone() -> None:
    # four workers at 1 core each (ids break the tie: a later id counts as busier): a's load goes to the best
    # fit, b, which becomes a host (never drained) and busier; c's and then d's loads follow into b's room
    view = ClusterView(100.0, tuple(_w(i, S.BUSY, 1) for i in "abcd"))
    drained = [d.instance_id for d in decide(view, _settings()).of_kind(ActionKind.DRAIN)]
    assert drained == ["a", "c", "d"]
    # a busy worker is never drained to keep an idle one; a full one takes no new work and is left alone
    idle_host = ClusterView(100.0, (_w("busy", S.BUSY, 1), _w("idle", S.IDLE, 0, since=90.0)))
    assert decide(idle_host, _settings()).of_kind(ActionKind.DRAIN) == []
    full = ClusterView(100.0, (_w("full", S.BUSY, 4), _w("half", S.BUSY, 2)))
    assert decide(full, _settings()).of_kind(ActionKind.DRAIN) == []


def test_no_consolidation_while_work_is_queued_below_the_minimum_or_when_switched_off() -> None:
    workers = (_w("a", S.BUSY, 3), _w("b", S.BUSY, 1))
    assert decide(ClusterView(100.0, workers, _jobs(1)), _settings()).of_kind(ActionKind.DRAIN) == []
    assert decide(ClusterView(100.0, workers), _settings(min_workers=2)).of_kind(ActionKind.DRAIN) == []
    assert decide(ClusterView(100.0, workers), _settings(consolidate=False)).of_kind(ActionKind.DRAIN) == []
    assert [d.instance_id for d in decide(ClusterView(100.0, workers), _settings()).of_kind(ActionKind.DRAIN)] == ["b"]


# -- resume before boot --------------------------------------------------------------------------------------
def test_new_work_resumes_a_draining_worker_before_booting() -> None:
    view = ClusterView(100.0, (_w("a", S.BUSY, 4), _w("d", S.DRAINING, 1)), _jobs(3))
    plan = decide(view, _settings())
    assert [a.instance_id for a in plan.of_kind(ActionKind.RESUME)] == ["d"]
    assert plan.boots == 0
    # more work than the draining worker holds: resume it AND boot for the rest
    plan = decide(ClusterView(100.0, view.instances, _jobs(7)), _settings())
    assert [a.instance_id for a in plan.of_kind(ActionKind.RESUME)] == ["d"] and plan.boots == 1
    assert [a.kind for a in plan.actions][:2] == [ActionKind.RESUME, ActionKind.BOOT]


def test_a_drained_worker_is_resumed_instead_of_deleted_when_work_arrives() -> None:
    drained = _w("d", S.DRAINING, 0)
    assert [a.kind for a in decide(ClusterView(100.0, (drained,)), _settings()).actions] == [ActionKind.DELETE]
    plan = decide(ClusterView(100.0, (drained,), _jobs(2)), _settings())
    assert [a.kind for a in plan.actions] == [ActionKind.RESUME]


def test_running_workers_come_before_draining_ones_and_work_that_fits_nowhere_resumes_nothing() -> None:
    view = ClusterView(100.0, (_w("a", S.BUSY, 2), _w("d", S.DRAINING, 1)), _jobs(2))
    plan = decide(view, _settings())
    assert plan.of_kind(ActionKind.RESUME) == [] and plan.boots == 0
    big = ClusterView(100.0, (_w("d", S.DRAINING, 1),), (DemandGroup(Resources(4, 4000, 0), 1),))
    plan = decide(big, _settings())
    assert plan.of_kind(ActionKind.RESUME) == [] and plan.boots == 1


def test_a_drain_past_its_timeout_is_reported_and_nothing_is_killed() -> None:
    slow = _w("d", S.DRAINING, 2, since=0.0)
    plan = decide(ClusterView(5000.0, (slow,)), _settings(drain_timeout_s=3600))
    (wait,) = plan.of_kind(ActionKind.WAIT)
    assert wait.instance_id == "d" and "draining for 5000 s" in wait.reason and "not killed" in wait.reason
    assert plan.of_kind(ActionKind.DELETE) == []
    assert decide(ClusterView(3000.0, (slow,)), _settings(drain_timeout_s=3600)).actions == ()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([S.IDLE, S.BUSY, S.DRAINING, S.BOOTING]), st.integers(0, 4)), max_size=10),
    st.integers(0, 30),
)
def test_never_boots_while_queued_work_fits_a_draining_worker(workers: list[tuple[S, int]], n: int) -> None:
    insts = tuple(_w(f"i{k}", state, used) for k, (state, used) in enumerate(workers))
    plan = decide(ClusterView(100.0, insts, _jobs(n)), _settings())
    resumed = {a.instance_id for a in plan.of_kind(ActionKind.RESUME)}
    if plan.boots:
        untouched = [i for i in insts if i.state is S.DRAINING and i.id not in resumed and i.free and i.free.cores]
        assert untouched == [], "a VM boots while a draining worker with room stays draining"
