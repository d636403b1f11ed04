"""The elastic engine end to end on a real Slurm 22.05 controller, with the local cloud driver.

Each worker "VM" is a real slurmd (dynamic node) in its own network namespace, started by the user-data the
engine renders; the engine runs as `marea run` in a child process, exactly as an admin runs it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from marea.clouds.local import LocalCloud
from marea.config import load_config
from marea.demo import EngineProcess, SlurmTestbed, run_demo, submit_jobs, write_demo_config
from marea.engine.store import Store
from marea.model import InstanceState
from tests.conftest import run_cli, wait_until
from tests.slurm.conftest import cleanup_vms, leftover_vm_namespaces

DONE = {"COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT", "PREEMPTED", "OUT_OF_MEMORY"}


def _jobs(tb: SlurmTestbed, ids: list[str]) -> dict[str, dict[str, object]]:
    return {str(j["job_id"]): j for j in tb.jobs() if str(j["job_id"]) in set(ids)}


def _all_done(tb: SlurmTestbed, ids: list[str]) -> bool:
    jobs = _jobs(tb, ids)
    return len(jobs) == len(ids) and all(str(j["job_state"]) in DONE for j in jobs.values())


def _no_job_ran_on_a_deleted_worker(tb: SlurmTestbed, ids: list[str], store: Store) -> None:
    """For every delete decision of worker W at time t, no job ran on W at t, and no job was restarted."""
    jobs = _jobs(tb, ids).values()
    for d in store.recent_decisions(10_000):
        if d.kind != "delete":
            continue
        for j in jobs:
            if j["nodes"] == d.instance_id:
                start, end = float(str(j["start_time"])), float(str(j["end_time"]))
                assert not (start <= d.at < end), f"job {j['job_id']} was running on {d.instance_id} when deleted"
    for j in jobs:
        assert j["job_state"] == "COMPLETED", j
        assert j["restart_cnt"] == 0, f"job {j['job_id']} was requeued"


def test_demo_flow_grows_completes_every_job_and_shrinks_to_min(slurm: SlurmTestbed) -> None:
    result = run_demo(jobs=8, job_seconds=8, max_workers=3, timeout_s=300, testbed=slurm)
    assert result.ok, result
    assert result.jobs_completed == result.jobs_submitted == 8
    assert 1 <= result.workers_peak <= 3
    assert result.workers_at_end == 0 and result.leaked_vms == 0 and result.jobs_killed == 0
    assert result.failed_boots == 0
    assert leftover_vm_namespaces("demo") == []


def test_drain_first_no_job_runs_on_a_deleted_worker(slurm: SlurmTestbed, tmp_path: Path) -> None:
    """Long and short jobs, a 2 s idle threshold: workers freed early are drained and deleted while others
    still run jobs, and a second wave arrives while workers drain. No job may be killed or requeued."""
    cfg_path = write_demo_config(tmp_path, slurm, cluster="drn", max_workers=3, idle_threshold_s=2, interval_s=1)
    cfg = load_config(cfg_path)
    engine = EngineProcess(cfg_path)
    engine.start()
    store = Store(cfg.state_url(), cfg.cluster.name)
    try:
        ids = submit_jobs(slurm, 2, 25) + submit_jobs(slurm, 4, 3)
        wait_until("a drain", lambda: any(d.kind == "drain" for d in store.recent_decisions(1000)), 120)
        ids += submit_jobs(slurm, 3, 6)
        wait_until("every job done", lambda: _all_done(slurm, ids), 240)
        wait_until("the cluster back at 0", lambda: store.live_instances() == [], 120)
        _no_job_ran_on_a_deleted_worker(slurm, ids, store)
        assert sum(1 for d in store.recent_decisions(1000) if d.kind == "delete") >= 2
    finally:
        code = engine.stop()
        leftover = LocalCloud(cfg.path("vms")).list_owned("drn")
        cleanup_vms(cfg.path("vms"), "drn")
    assert code == 0
    assert leftover == []
    assert leftover_vm_namespaces("drn") == []


def test_kill_9_during_scale_up_and_during_drain_then_restart(slurm: SlurmTestbed, tmp_path: Path) -> None:
    """kill -9 of `marea run` while VMs boot, restart: adopted, no duplicates; again while a worker drains."""
    cfg_path = write_demo_config(tmp_path, slurm, cluster="k9", max_workers=4, idle_threshold_s=3, interval_s=1)
    cfg = load_config(cfg_path)
    store = Store(cfg.state_url(), cfg.cluster.name)
    cloud = LocalCloud(cfg.path("vms"))
    engine = EngineProcess(cfg_path)
    engine.start()
    # 4 two-core jobs on 2-core workers: exactly 4 VMs are needed, whatever happens to the engine.
    ids = submit_jobs(slurm, 4, 12, cores=2)
    wait_until("VMs booting", lambda: len(cloud.list_owned("k9")) >= 2, 60, step=0.1)
    engine.kill9()
    # A VM whose create the kill interrupted is broken (like a cloud VM left in ERROR): it is deleted as a
    # failed boot, which starts the backoff, and the healthy ones are adopted. No more than the 4 needed
    # workers may ever join (fewer when the adopted ones finish the queue during the backoff).
    healthy_before = {vm.instance_id for vm in cloud.list_owned("k9") if vm.status.value == "active"}
    engine = EngineProcess(cfg_path)
    engine.start()

    def joined() -> list[str]:
        return [d.instance_id or "" for d in store.recent_decisions(10_000) if d.kind == "joined"]

    try:
        wait_until("the healthy VMs adopted", lambda: healthy_before <= set(joined()), 60)
        assert len(joined()) == len(set(joined())) <= 4, f"duplicates joined: {joined()}"

        wait_until(
            "a worker draining",
            lambda: any(r.state is InstanceState.DRAINING for r in store.live_instances()),
            120,
            step=0.2,
        )
        engine.kill9()
        engine = EngineProcess(cfg_path)
        engine.start()
        wait_until("every job done", lambda: _all_done(slurm, ids), 180)
        wait_until("the cluster back at 0", lambda: store.live_instances() == [], 120)
        _no_job_ran_on_a_deleted_worker(slurm, ids, store)
        assert len(joined()) == len(set(joined())) <= 4, f"duplicates joined: {joined()}"
    finally:
        engine.stop()
        leftover = cloud.list_owned("k9")
        cleanup_vms(cfg.path("vms"), "k9")
    assert leftover == []
    assert leftover_vm_namespaces("k9") == []


def test_worker_whose_user_data_fails_is_a_failed_boot_with_backoff(slurm: SlurmTestbed, tmp_path: Path) -> None:
    failing = "#!/bin/sh\necho 'cannot reach the controller' >&2\nexit 1\n"
    cfg_path = write_demo_config(
        tmp_path, slurm, cluster="fb", max_workers=2, join_timeout_s=6, interval_s=1, user_data=failing
    )
    cfg = load_config(cfg_path)
    store = Store(cfg.state_url(), cfg.cluster.name)
    engine = EngineProcess(cfg_path)
    engine.start()
    try:
        submit_jobs(slurm, 1, 5)
        wait_until("a failed boot", lambda: int(store.get_json("failed_boots_total", 0)) >= 1, 60)
        wait_until("the failed VM deleted", lambda: store.live_instances() == [], 30)
        time.sleep(5)  # inside the 20 s backoff: no new boot
        boots = [d for d in store.recent_decisions(1000) if d.kind == "boot"]
        assert len(boots) == 1, boots
        proc = run_cli("status", "-c", str(cfg_path), "--explain")
        assert proc.returncode == 0, proc.stderr
        text = " ".join(proc.stdout.split())
        assert "did not join the batch system within 6 s" in text
        assert "backoff after 1 failed boot(s)" in text
        report = json.loads(run_cli("status", "-c", str(cfg_path), "--json").stdout)
        assert report["boot_failures"]["total"] == 1 and report["queued_jobs"] == 1
    finally:
        code = engine.stop()
        cleanup_vms(cfg.path("vms"), "fb")
    assert code == 0
    slurm.client("scancel", "-p", "marea")
    assert leftover_vm_namespaces("fb") == []


def test_lost_store_restart_adopts_owned_vms_and_never_touches_foreign_ones(
    slurm: SlurmTestbed, tmp_path: Path
) -> None:
    """The state database is lost while workers run jobs: the new engine adopts every VM tagged with its
    cluster (by tag, not by address), boots nothing for the work they already carry, and a VM of another
    cluster in the same cloud is never touched."""
    from marea.clouds.base import TAG_CLUSTER, TAG_INSTANCE, VMSpec
    from marea.model import Flavour

    cfg_path = write_demo_config(tmp_path, slurm, cluster="ad", max_workers=2, idle_threshold_s=2, interval_s=1)
    cfg = load_config(cfg_path)
    cloud = LocalCloud(cfg.path("vms"))
    foreign = cloud.create(
        VMSpec("other-1", "other-1", Flavour("x", 1, 1), "#!/bin/sh\nsleep 600\n", {TAG_CLUSTER: "other",
               TAG_INSTANCE: "other-1"})
    )  # fmt: skip
    engine = EngineProcess(cfg_path)
    engine.start()
    try:
        ids = submit_jobs(slurm, 2, 20, cores=2)
        store = Store(cfg.state_url(), cfg.cluster.name)
        wait_until("2 busy workers", lambda: sum(r.state is InstanceState.BUSY for r in store.live_instances()) == 2,
                   90)  # fmt: skip
        first = {r.id for r in store.live_instances()}
        store.close()
        assert engine.stop() == 0
        for suffix in ("", "-wal", "-shm"):
            Path(f"{cfg.path('state.db')}{suffix}").unlink(missing_ok=True)
        engine = EngineProcess(cfg_path)
        engine.start()
        store = Store(cfg.state_url(), cfg.cluster.name)
        wait_until("adoption", lambda: {d.instance_id for d in store.recent_decisions(100) if d.kind == "adopt"}
                   == first, 30)  # fmt: skip
        wait_until("every job done", lambda: _all_done(slurm, ids), 120)
        wait_until("the cluster back at 0", lambda: store.live_instances() == [], 90)
        assert not [d for d in store.recent_decisions(1000) if d.kind == "boot"], "booted although adopted"
        _no_job_ran_on_a_deleted_worker(slurm, ids, store)
    finally:
        engine.stop()
        cleanup_vms(cfg.path("vms"), "ad")
    (still,) = cloud.list_owned("other")
    assert still.cloud_id == foreign.cloud_id and still.status.value == "active"
    cloud.delete(still)


def test_worker_that_left_slurm_is_failed_after_the_grace_deleted_and_replaced(
    slurm: SlurmTestbed, tmp_path: Path
) -> None:
    """A joined worker vanishes from Slurm behind marea's back (`scontrol delete nodename`, as after a
    controller that lost its state): after `engine.absent_grace_s` it is declared failed, its VM is deleted,
    and the minimum of one worker is restored by a new VM."""
    cfg_path = write_demo_config(tmp_path, slurm, cluster="ab", max_workers=1, min_workers=1, interval_s=1,
                                 idle_threshold_s=600, absent_grace_s=3)  # fmt: skip
    cfg = load_config(cfg_path)
    engine = EngineProcess(cfg_path)
    engine.start()
    store = Store(cfg.state_url(), cfg.cluster.name)
    try:
        first = wait_until("one idle worker", lambda: [r.id for r in store.live_instances()
                                                       if r.state is InstanceState.IDLE], 90)[0]  # fmt: skip
        slurm.client("scontrol", "delete", f"nodename={first}")
        gone_at = time.time()
        wait_until(f"{first} deleted", lambda: first not in {r.id for r in store.live_instances()}, 60)
        deletes = [d for d in store.recent_decisions(1000) if d.kind == "delete" and d.instance_id == first]
        assert deletes and "worker left the batch system" in deletes[0].reason, deletes
        assert deletes[0].at - gone_at >= 3, "declared failed before the grace"
        assert first not in {vm.instance_id for vm in LocalCloud(cfg.path("vms")).list_owned("ab")}
        second = wait_until("a replacement joined", lambda: [r.id for r in store.live_instances()
                                                             if r.state is InstanceState.IDLE], 90)[0]  # fmt: skip
        assert second != first
    finally:
        store.close()
        code = engine.stop()
        cleanup_vms(cfg.path("vms"), "ab")
    assert code == 0
    assert leftover_vm_namespaces("ab") == []


def _slurm_node(tb: SlurmTestbed, name: str) -> dict[str, object]:
    from marea.batch.slurm import parse_workers

    nodes = json.loads(tb.client("sinfo", "--json"))
    return {"lost": parse_workers(nodes, "marea")[name].lost} if name in parse_workers(nodes, "marea") else {}


def test_a_worker_slurm_marks_down_is_no_free_capacity_and_is_failed_and_deleted(
    slurm: SlurmTestbed, tmp_path: Path
) -> None:
    """The slurmd of a joined worker dies (kill -9) while its VM stays up: slurmctld marks the node
    NOT_RESPONDING, then DOWN. Phase 1 (a long grace): a job queued meanwhile boots a new worker and runs
    there, so the lost worker's cores were not counted as free. Phase 2 (the engine restarted with a 3 s
    grace): the lost worker is failed, removed from Slurm and its VM deleted; the healthy one stays."""
    import os
    import signal
    import subprocess

    cfg_path = write_demo_config(tmp_path, slurm, cluster="lw", max_workers=2, min_workers=1, interval_s=1,
                                 idle_threshold_s=600, absent_grace_s=600)  # fmt: skip
    cfg = load_config(cfg_path)
    cloud = LocalCloud(cfg.path("vms"))
    engine = EngineProcess(cfg_path)
    engine.start()
    store = Store(cfg.state_url(), cfg.cluster.name)
    try:
        lost = wait_until("one idle worker", lambda: [r.id for r in store.live_instances()
                                                      if r.state is InstanceState.IDLE], 90)[0]  # fmt: skip
        pids = subprocess.run(["pgrep", "-f", f"slurmd -D -Z -N {lost} "], capture_output=True, text=True)
        (pid,) = [int(p) for p in pids.stdout.split()]
        os.kill(pid, signal.SIGKILL)
        wait_until("Slurm marks the worker lost", lambda: _slurm_node(slurm, lost).get("lost"), 120, 1.0)
        assert lost in {vm.instance_id for vm in cloud.list_owned("lw")}, "the VM itself stays up"
        (job,) = submit_jobs(slurm, 1, 2)
        wait_until("the job done", lambda: _all_done(slurm, [job]), 120)
        ran_on = str(_jobs(slurm, [job])[job]["nodes"])
        assert ran_on != lost and ran_on in {r.id for r in store.live_instances()}, ran_on
        boots = sum(d.count for d in store.recent_decisions(1000) if d.kind == "boot")
        assert boots == 2, f"{boots} boots: the lost worker's room was counted free"
        assert engine.stop() == 0

        text = cfg_path.read_text().replace("absent_grace_s = 600", "absent_grace_s = 3")
        cfg_path.write_text(text)
        engine = EngineProcess(cfg_path)
        engine.start()
        wait_until(f"{lost} deleted", lambda: lost not in {r.id for r in store.live_instances()}, 60)
        deletes = [d for d in store.recent_decisions(1000) if d.kind == "delete" and d.instance_id == lost]
        assert deletes and "the batch system lost the worker" in deletes[0].reason, deletes
        assert lost not in {vm.instance_id for vm in cloud.list_owned("lw")}
        assert lost not in slurm.client("sinfo", "-h", "-N", "-o", "%N")
        assert [r.id for r in store.live_instances()] == [ran_on]
    finally:
        store.close()
        code = engine.stop()
        cleanup_vms(cfg.path("vms"), "lw")
    assert code == 0
    assert leftover_vm_namespaces("lw") == []
