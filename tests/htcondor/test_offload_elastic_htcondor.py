"""Offloading and elasticity together, on the real HTCondor 23.9 pool: an offloaded pod is the only demand.

`marea run` (htcondor plugin, local cloud) watches the schedd with no worker in the pool; `marea offload
serve --backend htcondor` receives a pod. The pod's job idles, the engine boots a worker VM for it, the pod
runs there with rootless podman, and once it is done and deleted the worker is drained and deleted.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from marea.clouds.local import LocalCloud
from marea.config import load_config
from marea.demo import EngineProcess
from marea.engine.store import Store
from marea.htcondor_demo import write_htcondor_config
from tests.conftest import wait_until
from tests.htcondor.conftest import CondorTestbed, load_pod_image
from tests.htcondor.test_offload_htcondor import htcondor_toml
from tests.offload.conftest import BUSYBOX, Server, all_terminated, simple_pod, wait_for

pytestmark = [pytest.mark.htcondor, pytest.mark.podman]


def test_offloaded_pod_boots_a_worker_runs_there_and_the_worker_goes(condor: CondorTestbed, tmp_path: Path) -> None:
    load_pod_image(BUSYBOX)
    # no worker in the pool (a VM powered off by an earlier test leaves its ads for up to CLASSAD_LIFETIME)
    wait_until("an empty pool", lambda: condor.slots() == [], 120, step=2)
    engine_dir = tmp_path / "engine"
    engine_dir.mkdir()
    cfg_path = write_htcondor_config(engine_dir, condor.env, cluster="offl", max_workers=2, idle_threshold_s=3,
                                     interval_s=1, job_constraint="MareaPodUid =!= undefined")  # fmt: skip
    cfg = load_config(cfg_path)
    store = Store(cfg.state_url(), cfg.cluster.name)
    engine = EngineProcess(cfg_path)
    engine.start()
    server = Server(tmp_path, htcondor_toml(condor)).start()
    try:
        req = simple_pod(str(uuid.uuid4()), "echo hello from a new worker; sleep 2; echo bye", cpu="1", memory="200Mi")
        pod = req["pod"]
        assert server.create(req).status_code == 200
        # pending first: there is no worker; the engine reads the pod's job as demand and boots one
        first = server.status(pod)["containers"][0]["state"]
        assert "waiting" in first, first
        final = wait_for(server, pod, all_terminated, timeout=180)[-1]
        assert final["containers"][0]["state"]["terminated"]["exitCode"] == 0
        assert server.logs(pod, "main").text == "hello from a new worker\nbye\n"
        boots = [d for d in store.recent_decisions(1000) if d.kind == "boot"]
        assert sum(d.count for d in boots) == 1 and "queued work" in boots[0].reason, boots
        assert server.delete(pod).status_code == 200
        wait_until("the worker drained and deleted", lambda: store.live_instances() == [], 120)
        decisions = store.recent_decisions(1000)
        deletes = [d for d in decisions if d.kind == "delete"]
        assert deletes
        for d in deletes:  # drain first
            assert any(x.kind == "drain" and x.instance_id == d.instance_id and x.at <= d.at for x in decisions)
    finally:
        server.stop()
        code = engine.stop()
        store.close()
        cloud = LocalCloud(cfg.path("vms"))
        leftover = cloud.list_owned(cfg.cluster.name)
        for vm in leftover:
            cloud.delete(vm)
    assert code == 0 and leftover == []
