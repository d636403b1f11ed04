"""The engine (marea.engine.Reconciler: the real policy, a real SQLite store, the local cloud's real process "VMs")
driving a Kubernetes cluster through the elastic driver and the official client, over HTTPS, against the API
stand-in (tests/kube/fake_cluster.py: NOT a real API server, none can run here; every object it accepts or serves
is validated against the official Kubernetes 1.30 schemas). The test plays the scheduler (binds pods), the kubelet
(registers the Node with the bootstrap token its VM's user-data carries) and the disruption controller (a PDB)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from marea.clouds.base import TAG_FLAVOUR
from marea.clouds.local import LocalCloud
from marea.engine.reconciler import Reconciler
from marea.engine.store import Store
from marea.model import ActionKind, Flavour, InstanceState, PolicySettings
from tests.kube.conftest import Api

SMALL, BIG = Flavour("m1.small", 2, 4096), Flavour("m1.big", 8, 16384)
TYPE = "node.kubernetes.io/instance-type"
#: what a worker's user-data does with the join variables (the real template runs kubeadm join with them)
TEMPLATE = """#!/bin/sh
# kubeadm join ${MAREA_K8S_ENDPOINT} --token ${MAREA_K8S_TOKEN} --discovery-token-ca-cert-hash ${MAREA_K8S_CA_HASH}
# --node-name ${MAREA_NAME} --node-labels marea.io/cluster=${MAREA_CLUSTER},instance-type=${MAREA_FLAVOUR}
exec sleep 600
"""
JOIN = re.compile(r"--token (\S+) .*\n# --node-name (\S+) --node-labels marea.io/cluster=(\S+),[^=]+=(\S+)")


@dataclass
class Rig:
    api: Api
    cloud: LocalCloud
    store: Store
    engine: Reconciler
    clock: list[float]

    def cycle(self, advance: float = 1.0) -> list[tuple[str, str, int]]:
        self.clock[0] += advance
        report = self.engine.cycle()
        assert report.errors == []
        return [(a.flavour or "", a.group, a.count) for a in report.plan.of_kind(ActionKind.BOOT)]

    def vms(self) -> dict[str, Path]:
        return {
            vm.instance_id or "": self.cloud.base_dir / (vm.instance_id or "") for vm in self.cloud.list_owned("kc")
        }

    def kubelet_joins(self, iid: str) -> str:
        """Register the Node the way the VM's user-data says, with its bootstrap token; the token back."""
        m = JOIN.search((self.vms()[iid] / "user-data").read_text())
        assert m is not None
        token, name, cluster, flavour = m.groups()
        cpu, memory = ("2", "3696Mi") if flavour == "m1.small" else ("8", "15984Mi")
        assert self.api.fake.register_node(name, cluster, flavour, token, cpu=cpu, memory=memory) == 201
        return token

    def state(self, iid: str) -> InstanceState:
        rec = self.store.get(iid)
        assert rec is not None
        return rec.state


@pytest.fixture
def rig(api: Api, tmp_path: Path) -> Iterator[Rig]:
    cloud = LocalCloud(tmp_path / "vms")
    store = Store(f"sqlite:///{tmp_path / 'state.db'}", "kc")
    clock = [time.time()]
    settings = PolicySettings(flavours=(SMALL, BIG), max_workers=6, idle_threshold_s=120.0, join_timeout_s=900.0)
    batch = api.batch("kc", bootstrap_token_ttl_s=600)
    engine = Reconciler(cluster="kc", store=store, cloud=cloud, batch=batch, settings=settings,
                        user_data_template=TEMPLATE, clock=lambda: clock[0])  # fmt: skip
    try:
        yield Rig(api, cloud, store, engine, clock)
    finally:
        for vm in cloud.list_owned("kc"):
            cloud.delete(vm)
        batch.close()
        store.close()


def test_pending_pods_boot_the_right_flavours_then_join_drain_through_a_pdb_and_go(
    rig: Rig, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = rig.api.fake
    for i in range(3):
        fake.add_pod("jobs", f"small-{i}", "1", "1Gi")
    fake.add_pod("jobs", "big-0", "3", "6Gi", node_selector={TYPE: "m1.big"})
    fake.add_pod("jobs", "fresh", "1", "1Gi", unschedulable=False)  # the scheduler has not tried it yet
    fake.add_pod("jobs", "huge", "64", "1Gi")  # no flavour holds it

    boots = rig.cycle()
    assert sorted(boots) == [("m1.big", "flavours=m1.big", 1), ("m1.small", "", 2)]
    vms = rig.vms()
    assert len(vms) == 3
    by_flavour = {vm.instance_id: vm.tags[TAG_FLAVOUR] for vm in rig.cloud.list_owned("kc")}
    last = rig.store.get_json("last_cycle")
    assert last["queued_jobs"] == 6
    [unsat] = last["unsatisfiable"]
    assert unsat["jobs"] == ["jobs/huge"] and "m1.big: asks 64 cores" in unsat["reason"]
    assert rig.cycle() == []  # booting workers are room enough: nothing more

    # the kubelets join with their tokens; the scheduler places the pods
    tokens = [rig.kubelet_joins(iid) for iid in vms]
    smalls = sorted(i for i, f in by_flavour.items() if f == "m1.small")
    [big] = [i for i, f in by_flavour.items() if f == "m1.big"]
    fake.bind("jobs", "small-0", smalls[0])
    fake.bind("jobs", "small-1", smalls[0])
    fake.bind("jobs", "small-2", smalls[1])
    fake.bind("jobs", "big-0", big)
    assert rig.cycle() == []
    assert {rig.state(i) for i in vms} == {InstanceState.BUSY}

    # work ends; the workers idle past the threshold are drained. The scheduler binds a pod protected by a
    # PodDisruptionBudget onto `big` just before marea's cordon lands (the race a drain must handle).
    for name in ("small-0", "small-1", "small-2", "big-0"):
        fake.finish("jobs", name)
    rig.cycle()
    assert {rig.state(i) for i in vms} == {InstanceState.IDLE}
    fake.pdb("jobs", "guard", {"app": "guarded"}, 0)

    def race(node: str) -> None:
        if node == big and fake.get("pods", "jobs", "guarded") is None:
            fake.add_pod("jobs", "guarded", "1", "1Gi", unschedulable=False, labels={"app": "guarded"})
            fake.bind("jobs", "guarded", big)

    deleted_while_vm_existed: dict[str, bool] = {}
    fake.on_node_patch = race
    fake.on_node_delete = lambda node: deleted_while_vm_existed.setdefault(node, node in rig.vms())
    rig.cycle(advance=130)
    assert {rig.state(i) for i in vms} == {InstanceState.DRAINING}
    assert all(fake.get("nodes", "", i)["spec"]["unschedulable"] for i in vms)  # type: ignore[index]
    evictions = [p for m, p, _ in fake.requests if m == "POST" and p.endswith("/eviction")]
    assert evictions == ["/api/v1/namespaces/jobs/pods/guarded/eviction"]  # refused: 429

    for _ in range(2):
        rig.cycle(advance=10)
    assert sorted(rig.vms()) == [big], "the idle workers are gone, the guarded one stays"
    assert sorted(deleted_while_vm_existed) == smalls and all(deleted_while_vm_existed.values())
    assert fake.get("pods", "jobs", "guarded") is not None, "a running pod is never deleted past its PDB"
    assert fake.get("nodes", "", big) is not None and rig.state(big) is InstanceState.DRAINING
    assert len([p for m, p, _ in fake.requests if p.endswith("/eviction")]) >= 3  # retried every snapshot

    fake.pdb("jobs", "guard", {"app": "guarded"}, 1)  # a replica elsewhere became healthy
    for _ in range(3):
        rig.cycle(advance=10)
    assert fake.get("pods", "jobs", "guarded") is None, "evicted through the API"
    assert rig.vms() == {} and fake.of("nodes") == []
    assert deleted_while_vm_existed[big] is True, "the Node goes before the VM"
    assert {rig.state(i) for i in vms} == {InstanceState.GONE}
    assert fake.of("secrets") == [], "each removed worker's bootstrap token is deleted"
    assert not any(m == "DELETE" and "/pods/" in p for m, p, _ in fake.requests), "pods are evicted, never deleted"

    db = (tmp_path / "state.db").read_bytes()
    for token in tokens:
        assert token not in caplog.text and token.encode() not in db
