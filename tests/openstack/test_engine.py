"""The elastic engine (marea.engine.Reconciler) driving the real OpenStack testbed through the openstack driver.

The cloud side is real (Keystone, Nova with the fake virt driver, Neutron, Glance). The batch side is a
fixed queue (`tests.fixed_queue.FixedQueue`): the testbed's servers never run their user-data, so no worker
could join any batch system, and this helper has no network namespace of its own to run a Slurm controller
in; what is under test here is the engine's use of the cloud (boots, quota, ERROR handling, ownership), not
demand parsing, which the Slurm tests cover against real Slurm.
"""

from __future__ import annotations

import base64
import json
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from marea.batch.base import BatchSystem
from marea.clouds.base import TAG_CLUSTER, TAG_INSTANCE
from marea.clouds.factory import make_cloud
from marea.cluster.config import parse_cluster
from marea.cluster.maker import ClusterMaker
from marea.config import MareaConfig, parse_config
from marea.engine.reconciler import Reconciler
from marea.engine.store import Store
from marea.model import ActionKind
from tests.fixed_queue import FixedQueue

from .conftest import NO_HOST_FLAVOUR, OpenStackTestbed, purge, wait_for
from .test_cluster import cluster_data, project_fips

pytestmark = pytest.mark.openstack


def reconciler(cfg: MareaConfig, batch: BatchSystem, tmp_path: Path) -> Reconciler:
    return Reconciler(
        cluster=cfg.cluster.name,
        store=Store(f"sqlite:///{tmp_path / 'state.db'}", cfg.cluster.name),
        cloud=make_cloud(cfg),
        batch=batch,
        settings=cfg.policy_settings(),
        user_data_template=cfg.user_data_template(),
        variables={f"MAREA_VAR_{k.upper()}": v for k, v in cfg.worker.variables.items()},
        clock=time.time,
    )


def engine_config(name: str, **policy: Any) -> MareaConfig:
    data = cluster_data(name)
    data.pop("master")
    data["policy"] = {**data.get("policy", {}), **policy}
    return parse_config(data)


def workers(conn: Any, cluster: str) -> list[Any]:
    return [
        s
        for s in conn.compute.servers()
        if (s.metadata or {}).get(TAG_CLUSTER) == cluster and (s.metadata or {}).get(TAG_INSTANCE)
        and s.status != "DELETED"
    ]  # fmt: skip


def master_engine_config(
    admin: Any, master_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[MareaConfig, dict[str, Any]]:
    """The marea.toml the master's engine would run, taken from the master's real user-data, and its clouds.yaml
    (the application credential the cluster maker made) as the client configuration of this test."""
    user_data = base64.b64decode(admin.compute.get_server(master_id).user_data).decode()
    doc = json.loads(user_data.removeprefix("#cloud-config\n"))

    def content(path: str) -> str:
        return base64.b64decode(next(f for f in doc["write_files"] if f["path"] == path)["content"]).decode()

    data = tomllib.loads(content("/etc/marea/marea.toml"))
    clouds = tmp_path / "master-clouds.yaml"
    clouds.write_text(content("/etc/marea/clouds.yaml"))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    return parse_config(data), data


def test_engine_scales_workers_up_from_demand_with_ownership_and_join_parameters(
    testbed: OpenStackTestbed,
    admin: Any,
    demo: Any,
    cluster_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine as the master runs it: its marea.toml and its clouds.yaml (the application credential)."""
    maker = ClusterMaker(parse_cluster(cluster_data(cluster_name)))
    try:
        st = maker.create()
        assert st.master is not None
        cfg, data = master_engine_config(admin, st.master.cloud_id, tmp_path, monkeypatch)
        munge_key = data["worker"]["variables"]["munge_key"]
        engine = reconciler(cfg, FixedQueue(3), tmp_path)
        report = engine.cycle()
        assert report.errors == []
        boots = report.plan.of_kind(ActionKind.BOOT)
        assert sum(a.count for a in boots) == 3
        booted = wait_for(lambda: (w := workers(demo, cluster_name)) and len(w) == 3 and w)
        for server in booted:
            meta = server.metadata
            assert meta[TAG_CLUSTER] == cluster_name and meta[TAG_INSTANCE].startswith(cluster_name)
            assert server.name == meta[TAG_INSTANCE]
            assert munge_key not in json.dumps(meta), "a secret in server metadata"
            user_data = base64.b64decode(admin.compute.get_server(server.id).user_data).decode()
            assert munge_key in user_data, "the worker must get the munge key"
            assert f"--conf-server {st.master.address}:6817" in user_data
            assert f"-N {server.name}" in user_data
            ports = list(demo.network.ports(device_id=server.id))
            assert all(not list(demo.network.ips(port_id=p.id)) for p in ports), "a worker got a floating IP"
        in_use = [ip for ip in project_fips(demo) if ip.port_id]
        assert len([ip for ip in in_use if demo.network.get_port(ip.port_id).device_id == st.master.cloud_id]) == 1
        engine.cloud.close()
        destroyed = maker.destroy()
        assert destroyed.servers == 4
        assert workers(demo, cluster_name) == []
    finally:
        purge(demo, cluster_name)


def test_quota_smaller_than_demand_boots_up_to_quota_and_says_quota(
    testbed: OpenStackTestbed, demo: Any, demo_quota: Any, cluster_name: str, tmp_path: Path
) -> None:
    cfg = engine_config(cluster_name, max_workers=10, max_parallel_boots=10)
    engine = reconciler(cfg, FixedQueue(5), tmp_path)
    used = 100 - (engine.cloud.quota().instances or 0)
    demo_quota(instances=used + 2)
    try:
        first = engine.cycle()
        assert first.errors == []
        assert sum(a.count for a in first.plan.of_kind(ActionKind.BOOT)) == 2
        assert any("quota" in a.reason for a in first.plan.of_kind(ActionKind.WAIT))
        # the next cycles, at once (before Nova's own usage counts the two), stay quiet: no 403, no failed boot
        for _ in range(3):
            later = engine.cycle()
            assert later.errors == [] and later.plan.of_kind(ActionKind.BOOT) == []
            assert any("quota" in a.reason for a in later.plan.of_kind(ActionKind.WAIT))
        assert engine.store.get_json("failed_boots_total", 0) == 0
        assert len(workers(demo, cluster_name)) == 2
    finally:
        for vm in engine.cloud.list_owned(cluster_name):
            engine.cloud.delete(vm)
        engine.cloud.close()
        purge(demo, cluster_name)
    assert workers(demo, cluster_name) == [], "a worker leaked"


def test_server_in_error_is_deleted_counted_as_failed_boot_and_backed_off(
    testbed: OpenStackTestbed, demo: Any, cluster_name: str, tmp_path: Path
) -> None:
    data = cluster_data(cluster_name)
    data.pop("master")
    data["flavours"] = [{"name": NO_HOST_FLAVOUR, "cores": 1, "memory_mb": 512}]
    data["policy"] = {"max_workers": 5, "backoff_base_s": 600}
    cfg = parse_config(data)
    engine = reconciler(cfg, FixedQueue(1, 1, 256), tmp_path)
    try:
        first = engine.cycle()
        assert sum(a.count for a in first.plan.of_kind(ActionKind.BOOT)) == 1
        failed = wait_for(lambda: next((s for s in workers(demo, cluster_name) if s.status == "ERROR"), None))
        second = engine.cycle()
        deletes = second.plan.of_kind(ActionKind.DELETE)
        assert len(deletes) == 1 and "no valid host" in deletes[0].reason.lower()
        # the failure is counted when the ERROR is seen, before the policy decides: no replacement this cycle
        assert second.plan.of_kind(ActionKind.BOOT) == []
        assert any("backoff" in a.reason for a in second.plan.of_kind(ActionKind.WAIT))
        assert engine.store.boot_failures().consecutive == 1
        assert engine.store.get_json("failed_boots_total", 0) == 1
        wait_for(lambda: failed.id not in [s.id for s in workers(demo, cluster_name)])
        for _ in range(3):  # inside the 600 s backoff: still no boot
            later = engine.cycle()
            assert later.plan.of_kind(ActionKind.BOOT) == []
            assert any("backoff" in a.reason for a in later.plan.of_kind(ActionKind.WAIT))
        assert workers(demo, cluster_name) == []
    finally:
        engine.cloud.close()
        purge(demo, cluster_name)
