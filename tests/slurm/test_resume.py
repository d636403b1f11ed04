"""Policy v2 on a real Slurm 22.05 controller: a draining worker is taken back (scontrol state=RESUME) when new
jobs arrive, instead of a VM being booted for them. The engine runs as `marea run` with the local cloud driver.
"""

from __future__ import annotations

from pathlib import Path

from marea.batch.slurm import SlurmBatch
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
    """Two 4-core workers: A (2 cores, 30 s) on one, B (4 cores, 6 s) on the other; C (1 core, 30 s, kept off
    A's node with --exclude) follows B. When B ends, nothing is queued and C's one core fits in A's free room:
    C's worker, the least loaded, is drained (consolidation) and keeps running C. Then three 1-core jobs arrive:
    two fit A's node, the third only the draining worker, which the engine resumes; no third VM is ever booted
    and no job is killed."""
    cfg_path = write_demo_config(tmp_path, slurm, cluster="rsm", max_workers=3, cores=4, memory_mb=4000,
                                 idle_threshold_s=600, interval_s=1, extra_policy="consolidate = true")  # fmt: skip
    cfg = load_config(cfg_path)
    # the queue watch's light call sees a queued job (held: no demand, nothing boots for it)
    held = slurm.client("sbatch", "--parsable", "--hold", "-p", "marea", "-o", "/dev/null", "--wrap", "true")
    held_id = held.strip().split(";")[0]
    assert held_id in (SlurmBatch(cfg.batch.slurm).pending_jobs() or set())
    slurm.client("scancel", held_id)
    engine = EngineProcess(cfg_path)
    engine.start()
    store = Store(cfg.state_url(), cfg.cluster.name)
    cloud = LocalCloud(cfg.path("vms"))
    try:
        ids = submit_jobs(slurm, 1, 30, cores=2) + submit_jobs(slurm, 1, 6, cores=4)
        wait_until("A and B running", lambda: all(j["job_state"] == "RUNNING" for j in _jobs(slurm, ids).values())
                   and len(_jobs(slurm, ids)) == 2, 90, step=0.2)  # fmt: skip
        node_a = str(_jobs(slurm, ids)[ids[0]]["nodes"])
        out = slurm.client("sbatch", "--parsable", "-p", "marea", "-c", "1", "--mem=200", "-o", "/dev/null",
                           f"--exclude={node_a}", "--wrap", "sleep 30")  # fmt: skip
        ids.append(out.strip().split(";")[0])

        def draining() -> str | None:
            return next((r.id for r in store.live_instances() if r.state is InstanceState.DRAINING), None)

        drained = wait_until("the least loaded busy worker drained by consolidation", draining, 90, step=0.2)
        assert isinstance(drained, str) and drained != node_a
        reason = next(d.reason for d in store.recent_decisions(1000) if d.kind == "drain")
        assert "consolidated" in reason and node_a in reason, reason
        c_job = _jobs(slurm, [ids[2]])[ids[2]]
        assert c_job["nodes"] == drained and c_job["job_state"] == "RUNNING", c_job
        wait_until("Slurm shows the drain", lambda: _node_state(slurm, drained) == "draining", 30, step=0.2)
        boots_before = sum(d.count for d in store.recent_decisions(1000) if d.kind == "boot")
        assert boots_before == 2

        new = submit_jobs(slurm, 3, 5, cores=1)
        ids += new
        wait_until("the draining worker resumed",
                   lambda: any(d.kind == "resume" and d.instance_id == drained for d in store.recent_decisions(1000)),
                   60, step=0.2)  # fmt: skip
        wait_until("the resume sent", lambda: (r := store.get(drained)) is not None and not r.drain_sent, 30, step=0.2)
        rec = store.get(drained)
        assert rec is not None and rec.state is InstanceState.BUSY
        # "mixed" or "allocated" (a "*" after it: slurmctld awaits the next ping), no longer "draining"
        assert _node_state(slurm, drained).rstrip("*") in ("mixed", "allocated"), _node_state(slurm, drained)
        wait_until("the new jobs done", lambda: _all_done(slurm, new), 90)
        assert drained in {str(j["nodes"]) for j in _jobs(slurm, new).values()}, "no new job ran on the resumed one"
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
