"""The Kubernetes driver's writes, against the API stand-in (tests/kube/fake_cluster.py: NOT a real API server;
every object it accepts or serves is validated against the official Kubernetes 1.30 schemas): Nodes that are not
marea's are never touched, resume uncordons, a lost Node's stuck pods do not block its removal, and a snapshot
reads the whole state in two LIST calls."""

from __future__ import annotations

import threading
import time

import pytest

from marea.batch.base import BatchError
from marea.engine.watch import QueueWatch
from marea.model import Flavour
from tests.kube.conftest import Api
from tests.offload.fake_kube import TOKEN

FLAVOURS = (Flavour("m1.big", 8, 16384),)


def test_nodes_without_mareas_ownership_are_never_touched(api: Api) -> None:
    fake, batch = api.fake, api.batch()
    # a Node carrying marea's labels but another providerID (an admin's machine of the same name)
    assert fake.register_node("kc-abc123", "kc", "m1.big", TOKEN, provider="openstack:///x") == 201
    assert batch.snapshot(FLAVOURS).workers == {}
    batch.drain("kc-abc123", "idle")
    assert batch.remove("kc-abc123") is True  # not marea's Node: the worker as marea knows it is gone
    node = fake.get("nodes", "", "kc-abc123")
    assert node is not None and not node["spec"].get("unschedulable")
    assert not [r for r in fake.requests if r[0] in ("PATCH", "DELETE") and "/nodes/" in r[1]]
    batch.close()


def test_one_snapshot_is_two_lists_and_resume_uncordons(api: Api) -> None:
    fake, batch = api.fake, api.batch()
    assert fake.register_node("kc-abc123", "kc", "m1.big", TOKEN) == 201
    fake.add_pod("jobs", "p", "1", "1Gi")
    fake.requests.clear()
    snap = batch.snapshot(FLAVOURS)
    assert [(m, p) for m, p, _ in fake.requests] == [("GET", "/api/v1/pods"), ("GET", "/api/v1/nodes")]
    assert snap.workers["kc-abc123"].total.cores == 4 and sum(d.count for d in snap.demand) == 1
    batch.drain("kc-abc123", "idle for 300 s")
    node = fake.get("nodes", "", "kc-abc123")
    assert node is not None and node["spec"]["unschedulable"] is True
    assert node["metadata"]["annotations"]["marea.io/drain-reason"] == "marea: idle for 300 s"
    assert batch.snapshot(FLAVOURS).workers["kc-abc123"].drained
    batch.resume("kc-abc123")
    node = fake.get("nodes", "", "kc-abc123")
    assert node is not None and node["spec"]["unschedulable"] is False
    assert "marea.io/drain-started" not in node["metadata"].get("annotations", {})
    assert not batch.snapshot(FLAVOURS).workers["kc-abc123"].draining
    batch.close()


def test_a_lost_node_is_reported_lost_and_its_terminating_pods_do_not_block_removal(api: Api) -> None:
    fake, batch = api.fake, api.batch(lost_after_s=300)
    assert fake.register_node("kc-abc123", "kc", "m1.big", TOKEN) == 201
    fake.add_pod("jobs", "p", "1", "1Gi", unschedulable=False)
    fake.bind("jobs", "p", "kc-abc123")
    assert batch.remove("kc-abc123") is False  # a running pod: never
    fake.set_ready("kc-abc123", "Unknown", time.time() - 400)  # the kubelet went silent 400 s ago
    worker = batch.snapshot(FLAVOURS).workers["kc-abc123"]
    assert worker.lost and worker.busy
    assert batch.remove("kc-abc123") is False  # the pod is not even being deleted yet
    fake.objects[("pods", "jobs", "p")]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"  # node controller
    assert batch.remove("kc-abc123") is True
    assert fake.get("nodes", "", "kc-abc123") is None
    batch.close()


def test_an_unreachable_api_is_one_short_line(api: Api) -> None:
    batch = api.batch()
    api.fake.stop()
    with pytest.raises(BatchError) as err:
        batch.snapshot(FLAVOURS)
    assert str(err.value) == "kubernetes: list pods failed: MaxRetryError (NewConnectionError)"
    batch.close()


def test_the_queue_watch_sees_only_unschedulable_pods_in_one_filtered_list(api: Api) -> None:
    """`pending_jobs` (the queue watch's light call): one LIST, filtered on the server to unbound pending pods and
    served from the watch cache; only pods the scheduler gave up on count. A pod pending on a Node (images being
    pulled: PodScheduled True) is not new demand, nor is one not yet considered, nominated, or ignored."""
    fake, batch = api.fake, api.batch(ignored_namespaces=["kube-system"])
    assert fake.register_node("kc-abc123", "kc", "m1.big", TOKEN) == 201
    fake.requests.clear()
    assert batch.pending_jobs() == frozenset()
    wanted = fake.add_pod("jobs", "wanted", "2", "1Gi")
    fake.add_pod("jobs", "fresh", unschedulable=False)  # the scheduler has not tried it yet
    fake.add_pod("kube-system", "sys", "1", "1Gi")  # an ignored namespace
    nominated = fake.add_pod("jobs", "nominated", "1", "1Gi")
    nominated["status"]["nominatedNodeName"] = "kc-abc123"  # preemption makes room for it there
    pulling = fake.add_pod("jobs", "pulling", "1", "1Gi", unschedulable=False)
    pulling["spec"]["nodeName"] = "kc-abc123"  # bound; its kubelet is pulling the image: still Pending
    scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    pulling["status"]["conditions"] = [scheduled]
    fake.add_pod("jobs", "running", "1", "1Gi", unschedulable=False)
    fake.bind("jobs", "running", "kc-abc123")
    assert batch.pending_jobs() == {wanted["metadata"]["uid"]}
    lists = [q for m, p, q in fake.requests if m == "GET" and p == "/api/v1/pods"]
    assert len(fake.requests) == 2 and len(lists) == 2
    assert "fieldSelector=status.phase%3DPending%2Cspec.nodeName%3D" in lists[-1] and "resourceVersion=0" in lists[-1]
    fake.bind("jobs", "wanted", "kc-abc123")  # scheduled after all: no longer pending
    assert batch.pending_jobs() == frozenset()
    batch.close()


def test_a_new_unschedulable_pod_wakes_the_engine_between_cycles(api: Api) -> None:
    """The engine's QueueWatch on this driver: the first poll is the baseline; a pod marked Unschedulable after it
    ends the wait at the next poll, long before the cycle's deadline (60 s here)."""
    fake, batch = api.fake, api.batch()
    watch = QueueWatch(batch, 0.05)
    stop = threading.Event()
    watch.wait(stop, time.monotonic() + 0.2)  # no pod: waits out the deadline, polling
    assert watch.polls >= 1 and watch.wakes == 0
    fake.add_pod("jobs", "p", "1", "1Gi")
    watch.wait(stop, time.monotonic() + 60)
    assert watch.wakes == 1 and watch.every_s == 0.05
    batch.close()
