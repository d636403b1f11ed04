"""Headroom (issue #15 item 3), pure: the arrival log, the warm target, the boots and the idle workers it keeps.

Hand-computed cases, then properties over random queues (hypothesis). The engine's side (the log in a real store,
across a restart): tests/test_engine_headroom.py. What it costs and saves: benchmarks/policy_goals.py.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from marea.model import (
    ActionKind,
    ArrivalRate,
    ClusterView,
    DemandGroup,
    Flavour,
    InstanceState,
    InstanceView,
    PolicySettings,
    Resources,
)
from marea.policy import arrivals, decide, headroom

W4 = Flavour("w4", 4, 8000)
S = InstanceState
WINDOW = 600.0


def _settings(**kw: object) -> PolicySettings:
    base: dict[str, object] = dict(flavours=(W4,), max_workers=20, headroom=True, headroom_max_workers=3,
                                   headroom_window_s=WINDOW, headroom_boot_s=300.0, idle_threshold_s=60.0)  # fmt: skip
    base.update(kw)
    return PolicySettings(**base)  # type: ignore[arg-type]


def _rate(cores_per_boot: float) -> ArrivalRate:
    """The rate at which `cores_per_boot` cores arrive during one 300 s boot."""
    return ArrivalRate(cores_per_boot / 300.0, 0.0, WINDOW)


def _idle(iid: str, since: float) -> InstanceView:
    return InstanceView(iid, "w4", S.IDLE, since, 0.0, free=W4.resources, idle_since=since)


def _booting(iid: str) -> InstanceView:
    return InstanceView(iid, "w4", S.BOOTING, 900.0, 900.0)


def _jobs(n: int) -> tuple[DemandGroup, ...]:
    return (DemandGroup(Resources(1, 1000, 0), n),)


# -- the target ----------------------------------------------------------------------------------------------
def test_target_is_the_work_of_one_boot_in_whole_vms_capped_and_zero_when_off() -> None:
    def target(cores: float, **kw: object) -> int:
        return headroom.target_workers(ClusterView(1000.0, (), arrivals=_rate(cores)), _settings(**kw))

    assert [target(c) for c in (0, 1.9, 2, 6, 8, 10, 100)] == [0, 0, 1, 2, 2, 3, 3]  # nearest, capped at 3
    assert target(100, headroom_max_workers=5, max_workers=4) == 4
    assert target(100, headroom=False) == 0
    # memory counts too: 20000 MiB per boot of 8000 MiB workers is 2.5 -> 3 VMs, whatever the cores say
    view = ClusterView(1000.0, (), arrivals=ArrivalRate(0.0, 20000 / 300.0, WINDOW))
    assert headroom.target_workers(view, _settings()) == 3


# -- the planner ---------------------------------------------------------------------------------------------
def test_boots_up_to_the_target_counting_idle_and_spare_booting_workers() -> None:
    s = _settings()
    assert decide(ClusterView(1000.0, (), arrivals=_rate(8)), s).boots == 2
    boot = decide(ClusterView(1000.0, (), arrivals=_rate(8)), s).of_kind(ActionKind.BOOT)[0]
    assert "headroom" in boot.reason and boot.flavour == "w4"
    assert decide(ClusterView(1000.0, (_idle("a", 990.0),), arrivals=_rate(8)), s).boots == 1
    assert decide(ClusterView(1000.0, (_idle("a", 990.0), _booting("b")), arrivals=_rate(8)), s).boots == 0
    assert decide(ClusterView(1000.0, (), arrivals=_rate(8)), _settings(headroom=False)).boots == 0


def test_workers_the_queue_needs_are_not_warm() -> None:
    # 4 queued 1-core jobs fill the booting worker: it is needed, so 2 more boot for the warm capacity
    view = ClusterView(1000.0, (_booting("b"),), _jobs(4), arrivals=_rate(8))
    plan = decide(view, _settings())
    assert plan.boots == 2
    # 6 jobs: the booting worker plus one new for the queue, plus 2 warm
    assert decide(ClusterView(1000.0, (_booting("b"),), _jobs(6), arrivals=_rate(8)), _settings()).boots == 3


def test_max_workers_bounds_the_warm_boots() -> None:
    view = ClusterView(1000.0, (_booting("b"),), _jobs(4), arrivals=_rate(8))
    assert decide(view, _settings(max_workers=2)).boots == 1


# -- the reaper ----------------------------------------------------------------------------------------------
def test_the_youngest_idle_workers_are_kept_the_longest_idle_drained_first() -> None:
    idle = tuple(_idle(f"w{k}", since) for k, since in enumerate((100.0, 400.0, 700.0, 800.0)))
    drained = {a.instance_id for a in decide(ClusterView(1000.0, idle, arrivals=_rate(8)), _settings())
               .of_kind(ActionKind.DRAIN)}  # fmt: skip
    assert drained == {"w0", "w1"}  # target 2: w2 and w3, the youngest, stay warm
    without = decide(ClusterView(1000.0, idle), _settings()).of_kind(ActionKind.DRAIN)
    assert {a.instance_id for a in without} == {"w0", "w1", "w2", "w3"}
    # a spare worker still booting is warm capacity too: one idle fewer is kept
    plan = decide(ClusterView(1000.0, (*idle, _booting("b")), arrivals=_rate(8)), _settings())
    assert {a.instance_id for a in plan.of_kind(ActionKind.DRAIN)} == {"w0", "w1", "w2"}
    assert plan.boots == 0


# -- the arrival log -----------------------------------------------------------------------------------------
def test_arrivals_are_the_growth_of_the_queue_and_leave_the_window() -> None:
    log = arrivals.record(arrivals.ArrivalLog(), _jobs(10), 0.0, WINDOW)  # a fresh log: the whole queue arrived
    log = arrivals.record(log, _jobs(4), 100.0, WINDOW)  # 6 started: not arrivals
    log = arrivals.record(log, _jobs(9), 200.0, WINDOW)  # 5 more
    r = arrivals.rate(log, 200.0, WINDOW)
    assert r.cores_per_s * WINDOW == 15 and r.memory_mb_per_s * WINDOW == 15000
    assert arrivals.next_change(log, 200.0, WINDOW) == 600.0
    assert arrivals.rate(log, 600.0, WINDOW).cores_per_s * WINDOW == 15
    assert arrivals.rate(log, 601.0, WINDOW).cores_per_s * WINDOW == 5  # the first 10 left the window
    assert arrivals.rate(log, 900.0, WINDOW).cores_per_s == 0
    assert arrivals.from_json(arrivals.to_json(log)) == log
    assert arrivals.from_json(None) == arrivals.ArrivalLog() == arrivals.from_json({"queued": [["x"]]})


def test_a_long_steady_trickle_keeps_the_log_small() -> None:
    log = arrivals.ArrivalLog()
    for k in range(1, 1000):  # one more job every 25 s for ~7 hours
        log = arrivals.record(log, _jobs(k), 25.0 * k, WINDOW)
    assert len(log.buckets) <= arrivals.BUCKETS + 1
    assert arrivals.rate(log, 25.0 * 999, WINDOW).cores_per_s * WINDOW == 24  # one bucket left the window early


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 400), st.lists(st.tuples(st.sampled_from([1, 2, 4]), st.integers(0, 30)), max_size=3)),
        max_size=60,
    )
)
def test_the_log_stays_bounded_and_counts_every_growth_once(steps: list[tuple[float, list[tuple[int, int]]]]) -> None:
    log, windowed, now, prev, grown = arrivals.ArrivalLog(), arrivals.ArrivalLog(), 0.0, dict[int, int](), 0.0
    for dt, queue in steps:
        now += dt
        counts: dict[int, int] = {}
        for cores, n in queue:
            counts[cores] = counts.get(cores, 0) + n
        demand = tuple(DemandGroup(Resources(c, 100 * c, 0), n) for c, n in counts.items())
        log = arrivals.record(log, demand, now, 1e12)  # an endless window: every growth stays in
        windowed = arrivals.record(windowed, demand, now, WINDOW)
        assert len(windowed.buckets) <= arrivals.BUCKETS + 1
        assert windowed.queued == log.queued
        grown += sum(c * max(0, n - prev.get(c, 0)) for c, n in counts.items())
        prev = counts
        assert abs(arrivals.rate(log, now, 1e12).cores_per_s * 1e12 - grown) <= 1e-6 * max(1.0, grown)
    assert arrivals.from_json(arrivals.to_json(windowed)) == windowed
