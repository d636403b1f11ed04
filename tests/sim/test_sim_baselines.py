"""Hand-computed tiny scenarios for every policy the simulator runs: marea (the engine's real policy code),
elastiq (re-implemented), static and the oracle. Every expected number is worked out in the comments."""

from __future__ import annotations

import pytest

from marea.config import MareaConfig
from marea.model import Flavour
from marea.sim.cluster import CloudModel
from marea.sim.controllers import ElastiqController, MareaController, StaticController
from marea.sim.oracle import instant
from marea.sim.run import run_policy
from marea.sim.simulator import simulate
from tests.sim.simhelpers import FOUR_CORES, make_trace, settings

CLOUD = CloudModel(boot_time_s=420.0)


def elastiq(min_vms: int = 0, max_vms: int = 100) -> ElastiqController:
    """elastiq with the values of the seed's elastiq.conf."""
    return ElastiqController(FOUR_CORES, min_vms, max_vms)


def test_elastiq_eight_jobs_at_a_check_launch_two_vms_at_720_s() -> None:
    # 8 one-core jobs queued at t=0, just at a queue check (checks every 240 s from t=0).
    # t=0: n = 8 > 0, first seen; t=240, 480: not yet > 600 s; t=720: 720 > 600 -> ceil(8/4) = 2 VMs.
    # They join at 720 + 420 = 1140 and the 8 jobs start then: every wait is 1140 s.
    # The jobs run 100 s (end 1240). VM checks every 300 s: at 1200 both run 4 jobs (new: unchanged since
    # 1200); at 1500 both run 0 (changed: since 1500); 1800, 2100: 300, 600 s, not > 600; at 2400: 900 s ->
    # terminated. VM-hours = 2 x (2400 - 720) s; busy 2 x 100 s.
    r = simulate(make_trace(*[(0.0, 100.0)] * 8), elastiq(), CLOUD)
    assert r.boots == 2
    assert r.wait_p50_s == r.wait_max_s == 1140.0
    assert r.vm_hours == pytest.approx(2 * 1680 / 3600)
    assert r.idle_vm_hours == pytest.approx(2 * 1580 / 3600)
    assert r.failed_boots == 0 and r.jobs_never_started == 0


def test_elastiq_counts_recently_launched_vms_and_restarts_its_timer() -> None:
    # 8 jobs at t=0 and 8 more at t=721 (after the launch at 720). At 960: n = 16 - 4 x 2 recent = 8 > 0:
    # first seen (the timer was forgotten at the launch). At 1200, 1440: the two VMs launched at 720 are
    # no longer recent (> 420 s ago) and both joined at 1140, running 8 jobs: 8 idle jobs remain; 1440 is
    # only 480 s after 960; at 1680: 720 > 600 -> ceil(8/4) = 2 more VMs, joining at 2100.
    r = simulate(make_trace(*[(0.0, 5000.0)] * 8, *[(721.0, 5000.0)] * 8), elastiq(), CLOUD)
    assert r.boots == 4
    waits = sorted(r.waits)
    assert waits[:8] == [1140.0] * 8
    assert waits[8:] == [2100.0 - 721.0] * 8


def test_elastiq_terminates_a_vm_that_did_not_join_in_its_deploy_time() -> None:
    # Boots take 500 s > estimated_vm_deploy_time_s = 420: the 2 VMs launched at 720 are terminated at 1140
    # (failed boots). The timer was forgotten at 720, so 960 is "first seen" again; at 1200 the launched VMs
    # are gone (not recent): n = 8; 1440: 480 s; 1680: 720 > 600 -> launch 2 again, and so on: no job ever
    # starts, and every boot fails. Cut the run at 1 h after the submission.
    r = simulate(make_trace(*[(0.0, 100.0)] * 8), elastiq(), CloudModel(boot_time_s=500.0), horizon_s=3600.0)
    assert r.failed_boots == r.boots >= 4
    assert r.jobs_never_started == 8


def test_elastiq_caps_launches_at_max_vms() -> None:
    r = simulate(make_trace(*[(0.0, 1000.0)] * 100), elastiq(max_vms=5), CLOUD)
    assert r.max_workers_seen == 5
    assert r.boots == 5  # at 720: min(25, 5 - 0); later checks: 5 - 5 = 0 more


def test_elastiq_keeps_min_vms_even_when_idle() -> None:
    r = simulate(make_trace((0.0, 10.0), (50000.0, 10.0)), elastiq(min_vms=2), CLOUD)
    assert r.boots == 0
    assert r.vm_hours == pytest.approx(2 * 50010 / 3600)


def test_marea_eight_jobs_boot_at_once_and_drain_after_the_idle_threshold() -> None:
    # t=0: the policy packs 8 one-core jobs into new 4-core VMs -> boots 2 at once (interval 5 s).
    # They join at 420; the jobs start at 420 (wait 420) and end at 520: idle since 520; the reaper wants
    # now - 520 > 300: first tick 825 -> drain both (min 0); drained -> deleted at the next tick, 830.
    ctl = MareaController(settings(), interval_s=5.0)
    r = simulate(make_trace(*[(0.0, 100.0)] * 8), ctl, CLOUD)
    assert r.boots == 2
    assert r.wait_p50_s == r.wait_max_s == 420.0
    assert r.vm_hours == pytest.approx(2 * 830 / 3600)
    assert r.idle_vm_hours == pytest.approx(2 * 730 / 3600)
    assert r.jobs_killed == 0


def test_marea_backs_off_and_deletes_vms_that_never_join() -> None:
    # Every boot fails (the VM never joins). t=0: boot 2; join timeout 600: deleted at the first tick after
    # 600 s (605), counted as failed boots; consecutive = 2 -> backoff base 30 x 2^(2-1) = 60 s: the next boots
    # at 665 (the first tick at or after 605 + 60).
    ctl = MareaController(settings(), interval_s=5.0)
    cloud = CloudModel(boot_time_s=420.0, boot_failure_rate=0.999999, seed=1)
    r = simulate(make_trace(*[(0.0, 100.0)] * 8), ctl, cloud, horizon_s=700.0)
    assert r.failed_boots == 2
    assert r.boots == 4  # 2 at t=0, 2 at t=665, still booting at the end (t=700)
    assert r.vm_hours == pytest.approx((2 * 605 + 2 * 35) / 3600)


def test_static_cluster_runs_fifo_and_never_scales() -> None:
    # 2 workers x 4 cores, 12 one-core jobs at t=0 for 100 s: 8 start at 0, 4 at 100 (wait 100).
    r = simulate(make_trace(*[(0.0, 100.0)] * 12), StaticController(FOUR_CORES, 2), CLOUD)
    assert r.boots == 0
    assert sorted(r.waits) == [0.0] * 8 + [100.0] * 4
    assert r.vm_hours == pytest.approx(2 * 200 / 3600)
    # first fit in creation order: the 4 late jobs run on the first worker; the second is empty 100 -> 200
    assert r.idle_vm_hours == pytest.approx(100 / 3600)


def test_static_batch_system_backfills_what_fits() -> None:
    # One 4-core worker. A: 3 cores at 0 for 100 s; B: 4 cores at 1 (does not fit until A ends, starts 100);
    # C: 1 core at 2 fits beside A: starts at 2 (backfill, no reservation), ends at 52.
    r = simulate(
        make_trace((0.0, 100.0, 3.0), (1.0, 10.0, 4.0), (2.0, 50.0, 1.0)), StaticController(FOUR_CORES, 1), CLOUD
    )
    assert sorted(r.waits) == [0.0, 0.0, 99.0]


def test_instant_levels_with_boot_times() -> None:
    # 4 one-core jobs [0, 100) and one [50, 1000), 4-core VMs, min 0: n = 1 on [0, 50), 2 on [50, 100),
    # 1 on [100, 1000). Level 1: 1000 s + one boot 420; level 2: 50 s + one boot. Total 1890 s.
    trace = make_trace(*[(0.0, 100.0)] * 4, (50.0, 950.0))
    r = instant(trace, FOUR_CORES, 0, 100, 420.0)
    assert r.vm_hours == pytest.approx(1890 / 3600)
    assert r.idle_vm_hours == pytest.approx(840 / 3600)
    assert r.boots == 2
    assert r.booting_vm_hours == pytest.approx(2 * 420 / 3600)


def test_instant_keeps_a_vm_through_a_gap_shorter_than_a_boot() -> None:
    # 8 jobs [0, 100) and 8 jobs [300, 400): levels 1 and 2 are needed twice with a 200 s gap < 420 s boot:
    # each keeps its VM: 200 s needed + 420 s boot + 200 s gap = 820 s per level.
    trace = make_trace(*[(0.0, 100.0)] * 8, *[(300.0, 100.0)] * 8)
    r = instant(trace, FOUR_CORES, 0, 100, 420.0)
    assert r.vm_hours == pytest.approx(2 * 820 / 3600)
    assert r.boots == 2
    # with a 100 s boot the gap is longer than a boot: reboot (2 x (200 + 2 x 100))
    assert instant(trace, FOUR_CORES, 0, 100, 100.0).vm_hours == pytest.approx(2 * 400 / 3600)


def test_instant_minimum_workers_are_there_from_the_start() -> None:
    # min 2, one 1-core job [0, 1000): both minimum levels for 1000 s, no boot; the second has no load.
    r = instant(make_trace((0.0, 1000.0)), Flavour("w", 4, 8000), 2, 100, 420.0)
    assert r.vm_hours == pytest.approx(2000 / 3600)
    assert r.idle_vm_hours == pytest.approx(1000 / 3600)
    assert r.min_idle_vm_hours == pytest.approx(1000 / 3600)  # the idle one is the minimum's
    assert r.boots == 0


@pytest.mark.parametrize("policy", ["marea", "elastiq", "static", "oracle", "instant"])
def test_a_job_bigger_than_a_worker_never_starts_and_does_not_stall_the_run(policy: str) -> None:
    # The 8-core job fits no 4-core worker: taken out before the replay and counted as never started; the
    # two 1-core jobs run normally (the minimum's 2 workers start them at once).
    cfg = MareaConfig.model_validate(
        {
            "policy": {"min_workers": 2, "max_workers": 5},
            "flavours": [{"name": "w4", "cores": 4, "memory_mb": 8000}],
            "simulate": {"static_workers": 2},
        }
    )
    r = run_policy(policy, make_trace((0.0, 100.0), (10.0, 100.0, 8.0), (20.0, 100.0)), cfg)
    assert r.jobs == 3
    assert r.jobs_never_started == 1
    assert r.wait_max_s == 0.0


def test_quota_bounds_every_policy() -> None:
    # A project quota of 3 instances (or 12 cores): 40 one-core jobs want 10 VMs. marea reads the quota and
    # boots 3; elastiq asks for 10 and the cloud refuses 7 (as EC2 would); nobody ever runs more than 3.
    jobs = make_trace(*[(0.0, 3000.0)] * 40)
    for cloud in (CloudModel(quota_instances=3), CloudModel(quota_cores=12)):
        m = simulate(jobs, MareaController(settings(), 5.0), cloud)
        e = simulate(jobs, elastiq(), cloud)
        assert m.max_workers_seen == e.max_workers_seen == 3
        assert m.boots == 3
        assert m.jobs_never_started == e.jobs_never_started == 0
