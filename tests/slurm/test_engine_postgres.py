"""The engine's full cycle with its state on a real PostgreSQL server: `marea run` grows a real Slurm cluster
for a burst of jobs and shrinks it back to 0, with the store and the engine lock (an advisory lock) on the
server; killed with SIGKILL in the middle and restarted, it carries on from what PostgreSQL holds."""

from __future__ import annotations

from pathlib import Path

from marea.clouds.local import LocalCloud
from marea.config import load_config
from marea.demo import EngineProcess, SlurmTestbed, submit_jobs, write_demo_config
from marea.engine.store import Store
from tests.conftest import wait_until
from tests.engine_lock_helpers import assert_refused
from tests.slurm.conftest import cleanup_vms, leftover_vm_namespaces
from tests.slurm.test_elastic_slurm import _all_done, _no_job_ran_on_a_deleted_worker
from tests.test_store_postgres import pg_url

__all__ = ["pg_url"]


def test_full_cycle_on_postgresql_with_a_kill_9_in_the_middle(slurm: SlurmTestbed, pg_url: str, tmp_path: Path) -> None:
    cfg_path = write_demo_config(tmp_path, slurm, cluster="pgc", max_workers=2, idle_threshold_s=2, interval_s=1)
    cfg_path.write_text(cfg_path.read_text().replace('state = "state.db"', f'state = "{pg_url}"'))
    cfg = load_config(cfg_path)
    assert cfg.state_url().startswith("postgresql+psycopg://")
    store = Store(cfg.state_url(), cfg.cluster.name)
    cloud = LocalCloud(cfg.path("vms"))
    engine = EngineProcess(cfg_path)
    engine.start()
    try:
        ids = submit_jobs(slurm, 3, 6, cores=2)
        wait_until("a worker joined", lambda: any(d.kind == "joined" for d in store.recent_decisions(100)), 90)
        assert engine.proc is not None
        assert_refused(cfg_path, engine.proc.pid)  # a second engine on the same PostgreSQL cluster state
        engine.kill9()
        engine = EngineProcess(cfg_path)
        engine.start()
        wait_until("every job done", lambda: _all_done(slurm, ids), 180)
        wait_until("the cluster back at 0", lambda: store.live_instances() == [], 120)
        _no_job_ran_on_a_deleted_worker(slurm, ids, store)
        joins = [d.instance_id for d in store.recent_decisions(10_000) if d.kind == "joined"]
        assert len(joins) == len(set(joins)), joins
        assert sum(1 for d in store.recent_decisions(10_000) if d.kind == "delete") >= 2
    finally:
        code = engine.stop()
        store.close()
        leftover = cloud.list_owned("pgc")
        cleanup_vms(cfg.path("vms"), "pgc")
    assert code == 0
    assert leftover == []
    assert leftover_vm_namespaces("pgc") == []
