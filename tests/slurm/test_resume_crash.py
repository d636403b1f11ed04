"""A resume owed after a crash, on a real Slurm 22.05 controller with the local cloud driver: the engine stores the
RESUME intent (the record back to idle/busy with `drain_sent` set) before it calls `scontrol update state=RESUME`;
a process killed between the two leaves the node drained in Slurm, and the restarted engine must send the resume
again rather than boot a VM for the work the worker was taken back for.

The kill is real: the engine's cycle runs in a forked process whose Slurm driver calls os._exit() where
`scontrol` would have been run (a SIGKILL there could not be aimed at that instant). The restarted engine is a
new Reconciler on the same SQLite file, with the plain Slurm driver.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from marea.batch.slurm import SlurmBatch
from marea.clouds.local import LocalCloud
from marea.config import MareaConfig, load_config
from marea.demo import SlurmTestbed, submit_jobs, write_demo_config
from marea.engine.reconciler import Reconciler
from marea.engine.runner import build_reconciler
from marea.engine.store import Store
from marea.model import InstanceState
from tests.conftest import wait_until
from tests.slurm.conftest import cleanup_vms, leftover_vm_namespaces
from tests.slurm.test_elastic_slurm import _all_done, _jobs

#: the exit status of the engine killed between storing the resume and sending it
KILLED = 86


class DiesOnResume(SlurmBatch):
    """The real Slurm driver, except that the process dies at the resume call (the intent is stored by then)."""

    def resume(self, worker: str) -> None:
        os._exit(KILLED)


def _node_state(tb: SlurmTestbed, node: str) -> str:
    """Slurm's own word for the node (idle, mixed, draining, drained...), without sinfo's trailing flag."""
    return tb.client("sinfo", "-h", "-n", node, "-o", "%T").strip().rstrip("*~#")


def _cycle_until(rec: Reconciler, what: str, cond: object, timeout: float) -> None:
    """Run cycles of `rec` (the engine, in this process) until `cond()` holds after one."""
    assert callable(cond)
    wait_until(what, lambda: rec.cycle() is not None and cond(), timeout, step=0.3)


def _decisions(store: Store) -> str:
    """The engine's decisions, oldest first (for a failure's message)."""
    return "; ".join(f"{d.at:.1f} {d.kind} {d.reason}" for d in reversed(store.recent_decisions(1000)))


def _crashing_cycle(cfg: MareaConfig) -> None:
    """One cycle of an engine whose process dies at the resume call (runs in the forked child)."""
    rec = build_reconciler(cfg)
    rec.batch = DiesOnResume(cfg.batch.slurm)
    rec.cycle()
    os._exit(0)  # the cycle sent no resume: the test sees 0, not KILLED


def test_a_resume_stored_before_a_crash_is_sent_by_the_restarted_engine(slurm: SlurmTestbed, tmp_path: Path) -> None:
    """One 2-core worker runs a job, goes idle and is drained (Slurm: drained). A new job arrives; the engine
    decides to resume the worker, stores it as idle with the resume owed, and is killed before `scontrol`. The
    node stays drained and the job pending. The restarted engine resends the resume: the job runs on that worker,
    which ends busy, and no second VM is ever booted."""
    cfg_path = write_demo_config(tmp_path, slurm, cluster="rcr", max_workers=2, cores=2, memory_mb=2000,
                                 idle_threshold_s=2, interval_s=1)  # fmt: skip
    cfg = load_config(cfg_path)
    cloud = LocalCloud(cfg.path("vms"))
    store = Store(cfg.state_url(), cfg.cluster.name)
    rec = build_reconciler(cfg)
    try:
        [first] = submit_jobs(slurm, 1, 2, cores=1)

        def drained_in_store() -> str | None:
            return next((r.id for r in store.live_instances()
                         if r.state is InstanceState.DRAINING and r.drain_sent), None)  # fmt: skip

        _cycle_until(rec, "the worker booted, ran the job, went idle and was drained", drained_in_store, 180)
        worker = drained_in_store()
        assert worker is not None and _all_done(slurm, [first])
        wait_until("Slurm shows the node drained", lambda: _node_state(slurm, worker) == "drained", 30, step=0.2)
        rec.store.close()

        [second] = submit_jobs(slurm, 1, 20, cores=1)
        child = multiprocessing.get_context("fork").Process(target=_crashing_cycle, args=(cfg,))
        child.start()
        child.join(120)
        assert child.exitcode == KILLED, f"the engine was not killed at the resume call (exit {child.exitcode})"

        # the intent survived the kill; the call never happened
        after_crash = store.get(worker)
        assert after_crash is not None and after_crash.drain_sent, after_crash
        assert after_crash.state in (InstanceState.IDLE, InstanceState.BUSY), after_crash
        assert any(d.kind == "resume" and d.instance_id == worker for d in store.recent_decisions(1000))
        assert _node_state(slurm, worker) == "drained"
        assert _jobs(slurm, [second])[second]["job_state"] == "PENDING"

        restarted = build_reconciler(cfg)
        try:
            restarted.cycle()  # the first cycle of the new life sends the resume owed
            sent = store.get(worker)
            assert sent is not None and not sent.drain_sent, sent
            assert _node_state(slurm, worker) != "drained"
            _cycle_until(restarted, "the new job running on the resumed worker",
                         lambda: _jobs(slurm, [second])[second]["job_state"] == "RUNNING", 60)  # fmt: skip
            restarted.cycle()  # one that sees the job running there
        finally:
            restarted.store.close()
        assert str(_jobs(slurm, [second])[second]["nodes"]) == worker, _decisions(store)
        final = store.get(worker)
        assert final is not None and final.state is InstanceState.BUSY and not final.drain_sent, final
        boots = [d for d in store.recent_decisions(1000) if d.kind == "boot"]
        assert sum(d.count for d in boots) == 1, _decisions(store)
        assert [vm.instance_id for vm in cloud.list_owned("rcr")] == [worker]
        moves = [(old, new) for _, old, new in store.state_history(worker)]
        assert (InstanceState.DRAINING, after_crash.state) in moves, moves
    finally:
        store.close()
        cleanup_vms(cfg.path("vms"), "rcr")
        slurm.client("scancel", "-p", "marea")
    assert leftover_vm_namespaces("rcr") == []
