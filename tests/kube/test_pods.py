"""What a pod asks for and which flavour may hold it (marea.batch.kube_pods), on pods validated against the
official Kubernetes 1.30 schemas (kubernetes-validate), so the shapes are ones a real API server serves."""

from __future__ import annotations

import time
from typing import Any

import kubernetes_validate
import pytest

from marea.batch.kube_pods import (
    MAX_REASONS,
    FlavourNode,
    flavour_group,
    flavour_nodes,
    is_unschedulable,
    owned_worker,
    parse_demand,
    parse_node,
    pod_resources,
)
from marea.model import (
    ClusterView,
    DemandGroup,
    Flavour,
    PolicySettings,
    Resources,
)
from marea.policy.planner import plan_scale_up
from tests.kube.fake_cluster import K8S_VERSION, iso, make_pod

SMALL, BIG, GPU = Flavour("m1.small", 2, 4096), Flavour("m1.big", 8, 16384), Flavour("g1.gpu", 8, 32768, 1)
FLAVOURS = (SMALL, BIG, GPU)
TYPE = "node.kubernetes.io/instance-type"


def valid(obj: dict[str, Any], kind: str = "Pod") -> dict[str, Any]:
    kubernetes_validate.validate({"apiVersion": "v1", "kind": kind, **obj}, K8S_VERSION, strict=True)
    return obj


def pod(name: str = "p", cpu: str = "1", memory: str = "1Gi", **kw: Any) -> dict[str, Any]:
    return valid(make_pod(name, cpu, memory, **kw))


def shapes(taints: dict[str, list[str]] | None = None, reserved: Resources = Resources()) -> list[FlavourNode]:
    return flavour_nodes(FLAVOURS, "kc", {"kubernetes.io/os": "linux"}, taints or {}, reserved)


def test_request_takes_the_init_container_rule_and_the_overhead() -> None:
    # the app asks 1 CPU / 1 GiB, the init container 3 CPU / 512 MiB: per resource, the larger
    p = pod(cpu="1", memory="1Gi", init=("3", "512Mi"), overhead={"cpu": "250m", "memory": "120Mi"})
    assert pod_resources(p) == Resources(3.25, 1024 + 120, 0)
    p["spec"]["containers"].append(valid(make_pod("x", "500m", "2Gi"))["spec"]["containers"][0] | {"name": "side"})
    assert pod_resources(p) == Resources(3.25, 1024 + 2048 + 120, 0)
    assert pod_resources(pod(cpu="2", memory="1Gi", gpus=1)).gpus == 1


def test_only_pods_the_scheduler_marked_unschedulable_are_demand() -> None:
    waiting = pod("a")
    fresh = pod("b", unschedulable=False)  # not considered by the scheduler yet
    gated = pod("c")
    gated["status"]["conditions"][0]["reason"] = "SchedulingGated"
    leaving = pod("d")
    leaving["metadata"]["deletionTimestamp"] = iso(time.time())
    preempting = pod("f")
    preempting["status"]["nominatedNodeName"] = "kc-abc123"
    assert [is_unschedulable(p) for p in (waiting, fresh, gated, leaving, preempting)] == [True] + [False] * 4
    ignored = pod("e")
    ignored["metadata"]["namespace"] = "kube-system"
    d = parse_demand([waiting, fresh, gated, leaving, ignored], shapes(), {"kube-system"})
    assert [(g.count, g.request) for g in d.demand] == [(1, Resources(1.0, 1024.0, 0))]
    assert d.queued == 4  # pending and unbound, ignored namespaces aside


def test_a_long_flavour_list_makes_a_short_group() -> None:
    names = [f"flavour-with-a-long-name-{i}" for i in range(20)]
    group = flavour_group(names)
    assert len(group) < 40 and group == flavour_group(reversed(names)) != flavour_group(names[1:])
    assert flavour_group(["b", "a"]) == "flavours=a,b"


def test_node_selector_and_required_affinity_pin_flavours() -> None:
    pinned = pod("a", node_selector={TYPE: "m1.big"})
    either = pod(
        "b",
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": TYPE, "operator": "In", "values": ["g1.gpu", "m1.big"]}]}
                    ]
                }
            }
        },
    )
    not_small = pod(
        "c",
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": TYPE, "operator": "NotIn", "values": ["m1.small"]}]}
                    ]
                }
            }
        },
    )
    anywhere = pod("d", node_selector={"kubernetes.io/os": "linux"})
    d = parse_demand([pinned, either, not_small, anywhere], shapes(), set())
    groups = {g.flavours: g for g in d.demand}
    assert groups[("m1.big",)].count == 1 and groups[("m1.big",)].group == "flavours=m1.big"
    assert groups[("g1.gpu", "m1.big")].count == 2
    assert groups[()].count == 1 and groups[()].group == ""
    assert d.unsatisfiable == ()


def test_taints_of_a_flavour_keep_out_pods_that_do_not_tolerate_them() -> None:
    taints = {"g1.gpu": ["nvidia.com/gpu=present:NoSchedule"]}
    plain = pod("a")
    tolerant = pod("b", tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    gpu_plain = pod("c", gpus=1)
    gpu_tolerant = pod("d", gpus=1, tolerations=[{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"}])
    d = parse_demand([plain, tolerant, gpu_plain, gpu_tolerant], shapes(taints), set())
    by = {g.flavours: g.count for g in d.demand}
    assert by == {("m1.big", "m1.small"): 1, (): 1, ("g1.gpu",): 1}
    [unsat] = d.unsatisfiable
    assert unsat.job_ids == ("default/c",)
    assert "g1.gpu: taint nvidia.com/gpu:NoSchedule not tolerated" in unsat.reason


def test_a_pod_no_flavour_can_hold_is_unsatisfiable_with_each_flavours_reason() -> None:
    huge = pod("huge", cpu="64")
    labelled = pod("ssd", node_selector={"disktype": "ssd"})
    exact = pod("exact", cpu="2", memory="4Gi", node_selector={TYPE: "m1.small"})  # the kubelet keeps some memory
    d = parse_demand([huge, labelled, exact], shapes(reserved=Resources(0, 400, 0)), set())
    reasons = {u.job_ids: u.reason for u in d.unsatisfiable}
    assert "m1.big: asks 64 cores" in reasons[("default/huge",)]
    assert "nodeSelector disktype=ssd" in reasons[("default/ssd",)]
    assert "m1.small offers to pods (2 cores, 3696 MiB)" in reasons[("default/exact",)]
    assert d.demand == ()


def test_planner_boots_only_the_flavours_a_group_allows() -> None:
    """Without DemandGroup.flavours the planner would take the first flavour that fits (m1.small)."""
    settings = PolicySettings(flavours=FLAVOURS, max_workers=10)
    demand = (DemandGroup(Resources(1, 1024), 3, "flavours=m1.big", None, ("m1.big",)),
              DemandGroup(Resources(1, 1024), 1))  # fmt: skip
    actions = plan_scale_up(ClusterView(1000.0, (), demand), settings).actions
    boots = {(a.flavour, a.group): a.count for a in actions if a.kind.value == "boot"}
    assert boots == {("m1.big", "flavours=m1.big"): 1, ("m1.small", ""): 1}


def node(name: str, *, provider: str | None = None, cluster: str = "kc", ready: str = "True",
         since: float | None = None, unschedulable: bool = False) -> dict[str, Any]:  # fmt: skip
    n = {
        "metadata": {"name": name, "labels": {"marea.io/worker": name, "marea.io/cluster": cluster, TYPE: "m1.big"}},
        "spec": {"providerID": provider if provider is not None else f"marea://{cluster}/{name}",
                 "unschedulable": unschedulable},
        "status": {"allocatable": {"cpu": "7800m", "memory": "15Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": ready,
                                   "lastTransitionTime": iso(since if since is not None else time.time())}]},
    }  # fmt: skip
    return valid(n, "Node")


def test_only_nodes_with_maréas_label_and_provider_id_are_workers() -> None:
    assert owned_worker(node("kc-1"), "kc") == "kc-1"
    assert owned_worker(node("kc-1", provider="openstack:///abc"), "kc") is None
    assert owned_worker(node("kc-1", cluster="other"), "kc") is None
    foreign = node("kc-1")
    del foreign["metadata"]["labels"]["marea.io/worker"]
    assert owned_worker(foreign, "kc") is None


@pytest.mark.parametrize(
    ("ready", "age", "seen", "expect"),
    [("True", 0, False, "joined"), ("False", 10, False, None), ("False", 10, True, "joined"),
     ("Unknown", 400, False, "lost"), ("False", 400, True, "lost")],
)  # fmt: skip
def test_ready_joins_and_not_ready_past_lost_after_is_lost(ready: str, age: float, seen: bool, expect: str) -> None:
    now = time.time()
    state = parse_node(node("kc-1", ready=ready, since=now - age), [], now, 300.0, seen)
    if expect is None:
        assert state.worker is None
    else:
        assert state.worker is not None and state.worker.lost == (expect == "lost")


def test_busy_free_and_drained_count_daemonsets_and_mirror_pods_right() -> None:
    now = time.time()
    ds = pod("ds", cpu="200m", memory="100Mi", owner="DaemonSet")
    mirror = pod("etcd", cpu="100m", memory="100Mi")
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    done = pod("done", cpu="4")
    done["status"]["phase"] = "Succeeded"
    work = pod("work", cpu="2", memory="2Gi", owner="ReplicaSet")
    idle = parse_node(node("kc-1", unschedulable=True), [ds, mirror, done], now, 300.0, True).worker
    assert idle is not None and not idle.busy and idle.drained
    assert idle.free == Resources(7.5, 15 * 1024 - 200, 0)
    busy = parse_node(node("kc-1", unschedulable=True), [ds, mirror, done, work], now, 300.0, True)
    assert busy.worker is not None and busy.worker.busy and busy.worker.draining and not busy.worker.drained
    assert [p["metadata"]["name"] for p in busy.evictable] == ["work"]


def test_many_distinct_unsatisfiable_shapes_make_a_bounded_report() -> None:
    pods = [pod(f"p{i}", cpu=str(100 + i)) for i in range(50)] + [pod(f"q{i}", cpu="99") for i in range(3)]
    d = parse_demand(pods, shapes(), set())
    assert len(d.unsatisfiable) == MAX_REASONS + 1
    assert d.unsatisfiable[0].job_ids == ("default/q0", "default/q1", "default/q2")  # the most pods first
    assert sum(len(u.job_ids) for u in d.unsatisfiable) == 53
    assert d.unsatisfiable[-1].reason == "no flavour can hold the pod (31 more shapes)"
