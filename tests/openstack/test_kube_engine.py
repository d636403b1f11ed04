"""The engine flow of an elastic Kubernetes cluster on the real OpenStack testbed (Keystone, Nova, Neutron at
10.10.0.1): the Reconciler with the openstack cloud driver and the Kubernetes driver built by `make_batch` from a
marea.toml, talking HTTPS through the official client to the API stand-in (tests/kube/fake_cluster.py: NOT a real
API server, none can run here; every object it accepts or serves is validated against the official Kubernetes
1.30 schemas). The testbed's servers run no user-data, so the test plays their kubelets: it reads each server's
user-data back from Nova and registers the Node with the bootstrap token, name and labels written there.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from marea.batch.factory import make_batch
from marea.batch.kubernetes import KubernetesBatch
from marea.clouds.factory import make_cloud
from marea.config import parse_config
from marea.engine.reconciler import Reconciler
from marea.engine.store import Store
from marea.model import ActionKind, InstanceState
from tests.kube.conftest import Pki, make_pki, serving, write_kubeconfig
from tests.kube.fake_cluster import FakeCluster

from .conftest import OpenStackTestbed, purge, wait_for
from .test_cluster import cluster_data
from .test_engine import workers

pytestmark = pytest.mark.openstack

TEMPLATE = """#cloud-config
runcmd:
  - [kubeadm, join, "${MAREA_K8S_ENDPOINT}", --token, "${MAREA_K8S_TOKEN}", --discovery-token-ca-cert-hash,
     "${MAREA_K8S_CA_HASH}", --node-name, "${MAREA_NAME}",
     --node-labels, "marea.io/cluster=${MAREA_CLUSTER},node.kubernetes.io/instance-type=${MAREA_FLAVOUR}"]
"""
JOIN = re.compile(
    r'--token, "(\S+)".*--node-name, "(\S+)",\s+--node-labels, "marea.io/cluster=([^,]+),[^=]+=(\S+)"', re.S
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def fake(pki: Pki) -> Iterator[FakeCluster]:
    with serving(pki) as api:
        yield api


def test_pods_boot_servers_that_join_then_drain_and_go_node_first(
    testbed: OpenStackTestbed, admin: Any, demo: Any, cluster_name: str, tmp_path: Path, fake: FakeCluster, pki: Pki
) -> None:
    data = cluster_data(cluster_name)
    data.pop("master")
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.url, pki.ca_pem)
    data["batch"] = {
        "system": "kubernetes",
        "kubernetes": {"kubeconfig": str(kubeconfig), "bootstrap_token_ttl_s": 900},
    }
    data["policy"] = {"min_workers": 0, "max_workers": 5, "idle_threshold_s": 60}
    data["worker"] = {"user_data": TEMPLATE}
    cfg = parse_config(data)
    batch = make_batch(cfg)
    assert isinstance(batch, KubernetesBatch) and batch.cluster == cluster_name
    clock = [time.time()]
    engine = Reconciler(cluster=cluster_name, store=Store(f"sqlite:///{tmp_path / 'state.db'}", cluster_name),
                        cloud=make_cloud(cfg), batch=batch, settings=cfg.policy_settings(),
                        user_data_template=cfg.user_data_template(), clock=lambda: clock[0])  # fmt: skip

    def cycle(advance: float = 1.0) -> list[tuple[str | None, int]]:
        clock[0] += advance
        report = engine.cycle()
        assert report.errors == []
        return sorted((a.flavour, a.count) for a in report.plan.of_kind(ActionKind.BOOT))

    try:
        fake.add_pod("jobs", "a", "1", "1Gi")
        fake.add_pod("jobs", "b", "1", "1Gi")
        fake.add_pod("jobs", "c", "2", "2Gi", node_selector={"node.kubernetes.io/instance-type": "m1.medium"})
        fake.add_pod("jobs", "huge", "16", "1Gi")
        assert cycle() == [("m1.medium", 1), ("m1.small", 2)]
        servers = wait_for(lambda: (w := workers(demo, cluster_name)) and len(w) == 3 and w)
        assert "jobs/huge" in engine.store.get_json("last_cycle")["unsatisfiable"][0]["jobs"]

        # each server's kubelet joins with what its user-data says
        names: dict[str, str] = {}
        for server in servers:
            user_data = base64.b64decode(admin.compute.get_server(server.id).user_data).decode()
            m = JOIN.search(user_data)
            assert m is not None, user_data
            token, name, cluster, flavour = m.groups()
            assert name == server.name and cluster == cluster_name and flavour == server.flavor["original_name"]
            assert fake.register_node(name, cluster, flavour, token, cpu="2", memory="3600Mi") == 201
            names[name] = flavour
        [medium] = [n for n, f in names.items() if f == "m1.medium"]
        small = sorted(n for n, f in names.items() if f == "m1.small")
        for pod, node in (("a", small[0]), ("b", small[1]), ("c", medium)):
            fake.bind("jobs", pod, node)
        cycle()
        assert {engine.store.get(n).state for n in names} == {InstanceState.BUSY}  # type: ignore[union-attr]

        for pod in ("a", "b", "c"):
            fake.finish("jobs", pod)
        cycle()
        seen_in_nova: dict[str, bool] = {}
        fake.on_node_delete = lambda node: seen_in_nova.setdefault(
            node, any(s.name == node for s in workers(demo, cluster_name))
        )
        cycle(advance=70)  # idle past the threshold: cordoned
        assert all(fake.get("nodes", "", n)["spec"]["unschedulable"] for n in names)  # type: ignore[index]
        cycle()  # drained: the Node goes, then the server
        assert fake.of("nodes") == [] and fake.of("secrets") == []
        assert seen_in_nova == dict.fromkeys(names, True), "each Node is deleted while its server still exists"
        wait_for(lambda: not workers(demo, cluster_name))
        assert {engine.store.get(n).state for n in names} == {InstanceState.GONE}  # type: ignore[union-attr]
    finally:
        engine.cloud.close()
        batch.close()
        purge(demo, cluster_name)
