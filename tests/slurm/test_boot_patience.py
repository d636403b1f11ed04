"""Boot patience (`boot_patience_s`) on a real Slurm 22.05 controller with `marea run` and the local cloud driver:
a job that arrives at a busy cluster waits for the busy worker's room instead of a VM being booted for it, and a
VM boots once the patience runs out with the worker still busy.
"""

from __future__ import annotations

from pathlib import Path

from marea.clouds.local import LocalCloud
from marea.config import load_config
from marea.demo import EngineProcess, SlurmTestbed, submit_jobs, write_demo_config
from marea.engine.store import Store
from tests.conftest import wait_until
from tests.slurm.conftest import cleanup_vms, leftover_vm_namespaces
from tests.slurm.test_elastic_slurm import _all_done, _jobs, _no_job_ran_on_a_deleted_worker

PATIENCE_S = 30


def test_a_job_waits_for_a_busy_workers_room_then_boots_when_patience_runs_out(
    slurm: SlurmTestbed, tmp_path: Path
) -> None:
    """One 2-core worker. A (12 s) runs on it; B arrives, fits only the busy worker: no VM boots, the decision
    log says why, and B runs on the same worker when A ends (12 s < 30 s of patience). Then C (90 s) runs there
    and D arrives: after 30 s with the worker still busy, a second VM boots and D runs on it."""
    cfg_path = write_demo_config(tmp_path, slurm, cluster="pat", max_workers=2, cores=2, memory_mb=2000,
                                 idle_threshold_s=600, interval_s=1, boot_patience_s=PATIENCE_S)  # fmt: skip
    cfg = load_config(cfg_path)
    engine = EngineProcess(cfg_path)
    engine.start()
    store = Store(cfg.state_url(), cfg.cluster.name)
    cloud = LocalCloud(cfg.path("vms"))

    def boots() -> int:
        return sum(d.count for d in store.recent_decisions(1000) if d.kind == "boot")

    def running(job: str) -> bool:
        return _jobs(slurm, [job]).get(job, {}).get("job_state") == "RUNNING"

    try:
        (a,) = submit_jobs(slurm, 1, 12, cores=2)
        wait_until("A running", lambda: running(a), 90, step=0.2)
        first = str(_jobs(slurm, [a])[a]["nodes"])
        (b,) = submit_jobs(slurm, 1, 2, cores=2)
        wait_until("B done", lambda: _all_done(slurm, [a, b]), 90, step=0.2)
        assert str(_jobs(slurm, [b])[b]["nodes"]) == first, "B did not wait for the busy worker"
        assert boots() == 1 and len(cloud.list_owned("pat")) == 1
        assert any("boot_patience_s" in d.reason for d in store.recent_decisions(1000) if d.kind == "wait")

        (c,) = submit_jobs(slurm, 1, 90, cores=2)
        wait_until("C running", lambda: running(c), 30, step=0.2)
        (d,) = submit_jobs(slurm, 1, 2, cores=2)
        wait_until("a second VM booted once the patience ran out", lambda: boots() == 2, PATIENCE_S + 30, step=0.2)
        wait_until("D done", lambda: _all_done(slurm, [d]), 90, step=0.2)
        assert str(_jobs(slurm, [d])[d]["nodes"]) != first and running(c), "D should not have waited for C"
        slurm.client("scancel", c)
        _no_job_ran_on_a_deleted_worker(slurm, [a, b, d], store)
    finally:
        code = engine.stop()
        cleanup_vms(cfg.path("vms"), "pat")
    assert code == 0
    assert leftover_vm_namespaces("pat") == []
