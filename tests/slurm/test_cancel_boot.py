"""Cancelling a boot no queued work needs any more (`cancel_surplus_boots`), on a real Slurm 22.05 controller with
`marea run` and the local cloud driver. The workers' user-data sleeps before joining, as a real VM's boot does,
so that the engine sees them BOOTING for a while.
"""

from __future__ import annotations

from pathlib import Path

from marea.clouds.local import LocalCloud
from marea.config import load_config
from marea.demo import EngineProcess, SlurmTestbed, submit_jobs, write_demo_config
from marea.engine.store import Store
from marea.model import InstanceState
from marea.templates import worker_template
from tests.conftest import wait_until
from tests.slurm.conftest import cleanup_vms, leftover_vm_namespaces
from tests.slurm.test_elastic_slurm import _all_done, _jobs, _no_job_ran_on_a_deleted_worker

BOOT_S = 20  # the workers' simulated boot: long enough for several 1-s cycles to see them booting


def _slow_worker() -> str:
    shebang, rest = worker_template("slurm-worker.sh").split("\n", 1)
    return f"{shebang}\nsleep {BOOT_S}  # a boot, as a real VM's\n{rest}"


def test_a_boot_whose_job_was_cancelled_is_cancelled_and_the_needed_one_joins(
    slurm: SlurmTestbed, tmp_path: Path
) -> None:
    """Two 2-core jobs boot two 2-core workers; one job is cancelled while both boot. The engine deletes the
    youngest booting VM (the decision says why, not as a failed boot), keeps the other, which joins and runs the
    remaining job; the cancelled VM never appears in Slurm, and nothing else boots."""
    cfg_path = write_demo_config(tmp_path, slurm, cluster="cbt", max_workers=2, cores=2, memory_mb=2000,
                                 idle_threshold_s=600, interval_s=1, user_data=_slow_worker(),
                                 extra_policy="cancel_surplus_boots = true")  # fmt: skip
    cfg = load_config(cfg_path)
    engine = EngineProcess(cfg_path)
    engine.start()
    store = Store(cfg.state_url(), cfg.cluster.name)
    cloud = LocalCloud(cfg.path("vms"))
    try:
        ids = submit_jobs(slurm, 2, 5, cores=2)

        def booting() -> list[str]:
            return [r.id for r in store.live_instances() if r.state is InstanceState.BOOTING]

        both = wait_until("two VMs booting", lambda: b if len(b := booting()) == 2 else None, 60, step=0.2)
        assert isinstance(both, list)
        slurm.client("scancel", ids[1])
        deletes = wait_until(
            "a boot cancelled",
            lambda: [d for d in store.recent_decisions(1000) if d.kind == "delete"] or None,
            30,
            step=0.2,
        )
        assert isinstance(deletes, list) and len(deletes) == 1, deletes
        cancelled = deletes[0].instance_id
        assert cancelled in both and "no queued work needs it" in deletes[0].reason, deletes[0]
        kept = next(i for i in both if i != cancelled)
        wait_until("the cancelled VM gone from the cloud", lambda: len(cloud.list_owned("cbt")) == 1, 30, step=0.2)
        assert [vm.instance_id for vm in cloud.list_owned("cbt")] == [kept]
        wait_until("the remaining job done", lambda: _all_done(slurm, ids[:1]), 90)
        assert _jobs(slurm, ids[:1])[ids[0]]["nodes"] == kept
        nodes = slurm.client("sinfo", "-h", "-N", "-o", "%N").split()
        assert cancelled not in nodes, nodes
        assert sum(d.count for d in store.recent_decisions(1000) if d.kind == "boot") == 2
        assert store.boot_failures().consecutive == 0, "a cancelled boot is not a failed boot"
        gone = store.get(cancelled)
        assert gone is not None and gone.state is InstanceState.GONE
        _no_job_ran_on_a_deleted_worker(slurm, ids[:1], store)
    finally:
        code = engine.stop()
        cleanup_vms(cfg.path("vms"), "cbt")
    assert code == 0
    assert leftover_vm_namespaces("cbt") == []
