"""The pure policy: hand-computed cases, then properties checked by hypothesis over random clusters."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from marea.model import (
    ActionKind,
    ArrivalRate,
    BootFailures,
    ClusterView,
    DemandGroup,
    Flavour,
    InstanceState,
    InstanceView,
    PolicySettings,
    Quota,
    Resources,
)
from marea.policy import decide

SMALL = Flavour("small", 2, 4000)
LARGE = Flavour("large", 8, 16000)


def _settings(**kw: object) -> PolicySettings:
    base: dict[str, object] = dict(flavours=(SMALL, LARGE), min_workers=0, max_workers=10, max_parallel_boots=10)
    base.update(kw)
    return PolicySettings(**base)  # type: ignore[arg-type]


def _jobs(n: int, cores: float = 1, mem: float = 1000, gpus: int = 0) -> DemandGroup:
    return DemandGroup(Resources(cores, mem, gpus), n)


def _inst(
    iid: str,
    state: InstanceState,
    *,
    flavour: str = "small",
    created: float = 0.0,
    idle_since: float | None = None,
    free: Resources | None = None,
    drained: bool = False,
) -> InstanceView:
    return InstanceView(iid, flavour, state, created, created, free=free, idle_since=idle_since, drained=drained)


def test_one_core_jobs_are_packed_by_cores_and_memory() -> None:
    # 5 one-core 1000 MiB jobs on 2-core 4000 MiB workers: cores bind, 3 VMs (2 + 2 + 1).
    plan = decide(ClusterView(0.0, (), (_jobs(5),)), _settings())
    boots = plan.of_kind(ActionKind.BOOT)
    assert [(a.flavour, a.count) for a in boots] == [("small", 3)]


def test_memory_bound_jobs_need_more_vms_than_their_cores_suggest() -> None:
    # 4 one-core jobs of 3000 MiB: only one fits per 4000 MiB small worker -> 4 VMs, not 2.
    plan = decide(ClusterView(0.0, (), (_jobs(4, 1, 3000),)), _settings())
    assert plan.boots == 4


def test_big_jobs_get_a_flavour_that_fits_and_small_jobs_fill_it() -> None:
    # One 4-core 6000 MiB job does not fit "small": it gets a "large" (8 cores, 16000 MiB); the four one-core
    # jobs then go into the 4 cores left on that large VM: one VM in all.
    plan = decide(ClusterView(0.0, (), (_jobs(4), _jobs(1, 4, 6000))), _settings())
    assert [(a.flavour, a.count) for a in plan.of_kind(ActionKind.BOOT)] == [("large", 1)]


def test_capacity_already_booting_is_counted() -> None:
    booting = _inst("a", InstanceState.BOOTING)
    plan = decide(ClusterView(10.0, (booting,), (_jobs(3),)), _settings())
    assert plan.boots == 1  # 2 of the 3 jobs fit on the VM on its way


def test_free_room_on_running_workers_is_used_and_they_are_not_drained() -> None:
    idle = _inst("a", InstanceState.IDLE, idle_since=0.0, free=Resources(2, 4000))
    plan = decide(ClusterView(1000.0, (idle,), (_jobs(2),)), _settings(idle_threshold_s=60))
    assert plan.boots == 0
    assert plan.of_kind(ActionKind.DRAIN) == []


def test_job_that_fits_no_flavour_boots_nothing_and_says_why() -> None:
    plan = decide(ClusterView(0.0, (), (_jobs(1, 16, 1000),)), _settings())
    assert plan.boots == 0
    (wait,) = plan.of_kind(ActionKind.WAIT)
    assert "fit no configured flavour" in wait.reason


def test_max_workers_and_parallel_cap_limit_boots_with_a_reason() -> None:
    plan = decide(ClusterView(0.0, (), (_jobs(100),)), _settings(max_workers=6, max_parallel_boots=4))
    assert plan.boots == 4
    assert any("parallel boot limit" in a.reason for a in plan.of_kind(ActionKind.WAIT))
    plan = decide(ClusterView(0.0, (), (_jobs(100),)), _settings(max_workers=3, max_parallel_boots=4))
    assert plan.boots == 3
    assert any("max workers" in a.reason for a in plan.of_kind(ActionKind.WAIT))


def test_quota_limits_boots_and_is_named() -> None:
    view = ClusterView(0.0, (), (_jobs(20),), quota=Quota(cores=5))
    plan = decide(view, _settings())
    assert plan.boots == 2  # 5 cores of quota: two 2-core VMs
    assert any("quota (cores)" in a.reason for a in plan.of_kind(ActionKind.WAIT))


def test_backoff_after_failed_boots_is_exponential() -> None:
    s = _settings(backoff_base_s=30, backoff_max_s=1000)
    f3 = BootFailures(consecutive=3, last_at=100.0, last_reason="boom")
    # 3 failures: 30 * 2^2 = 120 s of backoff, until t = 220
    assert decide(ClusterView(219.0, (), (_jobs(1),), failures=f3), s).boots == 0
    assert decide(ClusterView(221.0, (), (_jobs(1),), failures=f3), s).boots == 1
    waits = decide(ClusterView(150.0, (), (_jobs(1),), failures=f3), s).of_kind(ActionKind.WAIT)
    assert any("backoff after 3 failed boot(s)" in w.reason for w in waits)


def test_minimum_is_kept_and_idle_workers_above_it_are_drained_longest_idle_first() -> None:
    insts = (
        _inst("a", InstanceState.IDLE, idle_since=100.0),
        _inst("b", InstanceState.IDLE, idle_since=50.0),
        _inst("c", InstanceState.IDLE, idle_since=900.0),
    )
    plan = decide(ClusterView(1000.0, insts, ()), _settings(min_workers=1, idle_threshold_s=300))
    assert [a.instance_id for a in plan.of_kind(ActionKind.DRAIN)] == ["b", "a"]
    plan = decide(ClusterView(0.0, (), ()), _settings(min_workers=2))
    assert plan.boots == 2


def test_busy_workers_are_never_drained_and_drained_ones_are_deleted() -> None:
    insts = (
        _inst("busy", InstanceState.BUSY, idle_since=None),
        _inst("d", InstanceState.DRAINING, drained=True),
        _inst("d2", InstanceState.DRAINING, drained=False),
    )
    plan = decide(ClusterView(1e6, insts, ()), _settings(idle_threshold_s=1))
    assert [a.instance_id for a in plan.of_kind(ActionKind.DELETE)] == ["d"]
    assert plan.of_kind(ActionKind.DRAIN) == []


def test_vm_that_never_joins_is_deleted_as_a_failed_boot() -> None:
    booting = _inst("slow", InstanceState.BOOTING, created=0.0)
    plan = decide(ClusterView(601.0, (booting,), ()), _settings(join_timeout_s=600))
    (delete,) = plan.of_kind(ActionKind.DELETE)
    assert delete.failed_boot and "did not join" in delete.reason
    assert decide(ClusterView(599.0, (booting,), ()), _settings(join_timeout_s=600)).of_kind(ActionKind.DELETE) == []


# -- properties ----------------------------------------------------------------------------------------------
STATES = [s for s in InstanceState if s is not InstanceState.GONE]


@st.composite
def clusters(draw: st.DrawFn) -> tuple[ClusterView, PolicySettings]:
    max_workers = draw(st.integers(0, 12))
    min_workers = draw(st.integers(0, max_workers))
    s = _settings(
        min_workers=min_workers,
        max_workers=max_workers,
        max_parallel_boots=draw(st.integers(1, 6)),
        idle_threshold_s=draw(st.floats(0, 500)),
        join_timeout_s=draw(st.floats(1, 500)),
        consolidate=draw(st.booleans()),
        headroom=draw(st.booleans()),
        headroom_max_workers=draw(st.integers(0, 4)),
    )
    now = 1000.0
    insts = []
    for i in range(draw(st.integers(0, 14))):
        state = draw(st.sampled_from(STATES))
        idle = draw(st.one_of(st.none(), st.floats(0, now))) if state is InstanceState.IDLE else None
        free = draw(st.one_of(st.none(), st.builds(Resources, st.integers(0, 2), st.integers(0, 4000))))
        drained = state is InstanceState.DRAINING and draw(st.booleans())
        insts.append(
            InstanceView(
                f"i{i}",
                draw(st.sampled_from(["small", "large"])),
                state,
                draw(st.floats(0, now)),
                draw(st.floats(0, now)),
                free=free,
                idle_since=idle,
                drained=drained,
            )
        )
    demand = draw(
        st.lists(
            st.builds(
                DemandGroup,
                st.builds(Resources, st.integers(1, 10), st.integers(0, 20000), st.integers(0, 1)),
                st.integers(1, 50),
            ),
            max_size=4,
        )
    )
    arrivals = ArrivalRate(draw(st.floats(0, 0.1)), draw(st.floats(0, 100)), 1800.0)
    return ClusterView(now, tuple(insts), tuple(demand), arrivals=arrivals), s


@settings(max_examples=400, deadline=None)
@given(clusters())
def test_never_above_max_or_the_parallel_boot_cap(case: tuple[ClusterView, PolicySettings]) -> None:
    view, s = case
    plan = decide(view, s)
    alive = sum(1 for i in view.instances if i.state.alive)
    starting = sum(1 for i in view.instances if i.state in (InstanceState.REQUESTED, InstanceState.BOOTING))
    assert plan.boots == 0 or alive + plan.boots <= s.max_workers
    assert plan.boots == 0 or starting + plan.boots <= s.max_parallel_boots


@settings(max_examples=400, deadline=None)
@given(clusters())
def test_never_deletes_a_busy_or_undrained_worker(case: tuple[ClusterView, PolicySettings]) -> None:
    view, s = case
    by_id = {i.id: i for i in view.instances}
    for a in decide(view, s).of_kind(ActionKind.DELETE):
        inst = by_id[a.instance_id or ""]
        assert inst.state is not InstanceState.BUSY and inst.state is not InstanceState.IDLE
        if inst.state is InstanceState.DRAINING:
            assert inst.drained
    plan = decide(view, s)
    for a in plan.of_kind(ActionKind.DRAIN):
        # idle workers; busy ones only by consolidation, when nothing is queued (their jobs run to their end)
        state = by_id[a.instance_id or ""].state
        assert state is InstanceState.IDLE or (state is InstanceState.BUSY and not view.demand)
    resumed = {a.instance_id for a in plan.of_kind(ActionKind.RESUME)}
    assert all(by_id[i or ""].state is InstanceState.DRAINING for i in resumed)
    assert not resumed & {a.instance_id for a in plan.actions if a.kind in (ActionKind.DRAIN, ActionKind.DELETE)}


@settings(max_examples=400, deadline=None)
@given(clusters())
def test_never_plans_below_min(case: tuple[ClusterView, PolicySettings]) -> None:
    view, s = case
    plan = decide(view, s)
    active = sum(
        1
        for i in view.instances
        if i.state in (InstanceState.REQUESTED, InstanceState.BOOTING, InstanceState.IDLE, InstanceState.BUSY)
    )
    removed = {a.instance_id for a in plan.actions if a.kind in (ActionKind.DRAIN, ActionKind.DELETE)}
    removed_active = sum(
        1
        for i in view.instances
        if i.id in removed and i.state in (InstanceState.IDLE, InstanceState.BUSY)  # drains of active workers
    )
    drains = len(plan.of_kind(ActionKind.DRAIN))
    assert drains == 0 or active - removed_active >= s.min_workers
