"""Policy v2 on a real Slurm 22.05 controller: a draining worker is taken back (scontrol state=RESUME) when new
jobs arrive, instead of a VM being booted for them. The engine runs as `marea run` with the local cloud driver.
"""

from __future__ import annotations

from pathlib import Path

from marea.clouds.local import LocalCloud
from marea.config import load_config
from marea.demo import EngineProcess, SlurmTestbed, submit_jobs, write_demo_config
from marea.engine.store import Store
from marea.model import InstanceState
from tests.conftest import wait_until
from tests.slurm.conftest import cleanup_vms, leftover_vm_namespaces
from tests.slurm.test_elastic_slurm import _all_done, _jobs, _no_job_ran_on_a_deleted_worker


def _node_state(tb: SlurmTestbed, node: str) -> str:
    """Slurm's own word for the node: idle, mixed, allocated, draining, drained..."""
    return tb.client("sinfo", "-h", "-n", node, "-o", "%T").strip()


def test_new_jobs_resume_a_draining_worker_instead_of_booting(slurm: SlurmTestbed, tmp_path: Path) -> None:
    """Two 2-core workers: one runs a 2-core job of 5 s, the other a 1-core job of 25 s. When the short job
    ends, nothing is queued and the long job's 1 core fits in the idle worker's room: the busy worker is drained
    (consolidation) and keeps running its job. Then three 1-core jobs arrive: two fit the idle worker, the third
    fits only the draining one, which the engine resumes; no third VM is ever booted and no job is killed."""
    cfg_path = write_demo_config(tmp_path, slurm, cluster="rsm", max_workers=3, idle_threshold_s=600, interval_s=1,
                                 extra_policy="consolidate = true")  # fmt: skip
    cfg = load_config(cfg_path)
    engine = EngineProcess(cfg_path)
    engine.start()
    store = Store(cfg.state_url(), cfg.cluster.name)
    cloud = LocalCloud(cfg.path("vms"))
    try:
        ids = submit_jobs(slurm, 1, 5, cores=2) + submit_jobs(slurm, 1, 25, cores=1)

        def draining() -> str | None:
            return next((r.id for r in store.live_instances() if r.state is InstanceState.DRAINING), None)

        drained = wait_until("a busy worker drained by consolidation", draining, 150, step=0.2)
        assert isinstance(drained, str)
        reason = next(d.reason for d in store.recent_decisions(1000) if d.kind == "drain")
        assert "consolidated" in reason, reason
        long_job = _jobs(slurm, [ids[1]])[ids[1]]
        assert long_job["nodes"] == drained and long_job["job_state"] == "RUNNING", long_job
        wait_until("Slurm shows the drain", lambda: _node_state(slurm, drained) == "draining", 30, step=0.2)
        boots_before = sum(d.count for d in store.recent_decisions(1000) if d.kind == "boot")
        assert boots_before == 2

        ids += submit_jobs(slurm, 3, 5, cores=1)
        wait_until("the draining worker resumed",
                   lambda: any(d.kind == "resume" and d.instance_id == drained for d in store.recent_decisions(1000)),
                   60, step=0.2)  # fmt: skip
        wait_until("the resume sent", lambda: (r := store.get(drained)) is not None and not r.drain_sent, 30, step=0.2)
        rec = store.get(drained)
        assert rec is not None and rec.state is InstanceState.BUSY
        # "mixed" or "allocated" (a "*" after it: slurmctld awaits the next ping), no longer "draining"
        assert _node_state(slurm, drained).rstrip("*") in ("mixed", "allocated"), _node_state(slurm, drained)
        wait_until("the new jobs done", lambda: _all_done(slurm, ids[2:]), 90)
        new_jobs = _jobs(slurm, ids[2:])
        assert drained in {str(j["nodes"]) for j in new_jobs.values()}, "no new job ran on the resumed worker"
        assert sum(d.count for d in store.recent_decisions(1000) if d.kind == "boot") == boots_before
        assert len(cloud.list_owned("rsm")) == 2, "a VM was booted instead of resuming"
        moves = [(old, new) for _, old, new in store.state_history(drained)]
        assert (InstanceState.DRAINING, InstanceState.BUSY) in moves, moves
        wait_until("every job done", lambda: _all_done(slurm, ids), 120)
        _no_job_ran_on_a_deleted_worker(slurm, ids, store)
    finally:
        code = engine.stop()
        cleanup_vms(cfg.path("vms"), "rsm")
    assert code == 0
    assert leftover_vm_namespaces("rsm") == []
