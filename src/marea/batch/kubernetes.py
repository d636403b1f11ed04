"""Kubernetes as marea's batch system, through the official client: Unschedulable pods are demand, Nodes are workers.

Reads: two LIST calls per snapshot (every pod that is neither Succeeded nor Failed, by field selector; the Nodes
carrying marea's worker label, by label selector), and between snapshots one LIST of the unbound pending pods for
the queue watch (`pending_jobs`). Writes: a bootstrap-token Secret per new worker; a cordon
(`spec.unschedulable`) and Evictions (policy/v1, so PodDisruptionBudgets hold: 429 means "later", and no running pod
is ever deleted directly) to drain; the Node and the worker's token to remove. What the objects mean is in
`kube_pods` (pure); the token and CA pin in `kube_tokens` (pure). A Node is marea's only when it carries marea's
worker and cluster labels and the providerID `marea://<cluster>/<name>`; any other Node is never touched.

A drain blocked by a PodDisruptionBudget is carried on by later snapshots (the engine sends a drain once): each
snapshot retries the evictions on Nodes marea cordoned (annotation `marea.io/drain-started`), and a drain still
blocked after `drain_report_after_s` is logged as a warning each cycle.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client as kclient
from kubernetes import config as kconfig
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from marea.batch.base import BatchError, BatchSnapshot, BatchSystem, Worker
from marea.batch.kube_pods import (
    CLUSTER_LABEL,
    WORKER_LABEL,
    flavour_nodes,
    is_daemon_or_mirror,
    is_finished,
    is_unschedulable,
    owned_worker,
    parse_demand,
    parse_node,
    parse_time,
    pod_key,
)
from marea.batch.kube_tokens import CertError, ca_cert_hash, new_token, token_id, token_secret
from marea.config import KubernetesSection
from marea.model import Flavour, Resources

log = logging.getLogger("marea.batch.kubernetes")

DRAIN_STARTED = "marea.io/drain-started"
DRAIN_REASON = "marea.io/drain-reason"
NOT_FINISHED = "status.phase!=Succeeded,status.phase!=Failed"
#: the queue watch's pods: Pending and bound to no Node, filtered by the API server (a scheduled pod, PodScheduled
#: True, has its spec.nodeName set, so it never crosses the wire; cluster-autoscaler's unschedulable-pod lister
#: selects on an empty spec.nodeName too)
UNBOUND_PENDING = "status.phase=Pending,spec.nodeName="


def _kind(exc: Exception) -> str:
    """A transport error by its class and its cause's (urllib3's MaxRetryError wraps the real one)."""
    reason = getattr(exc, "reason", None)
    return (
        f"{exc.__class__.__name__} ({reason.__class__.__name__})"
        if isinstance(reason, Exception)
        else (exc.__class__.__name__)
    )


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class KubernetesBatch(BatchSystem):
    """A Kubernetes cluster reached through its API with the kubeconfig (or in-cluster identity) of `section`."""

    name = "kubernetes"

    def __init__(self, section: KubernetesSection, cluster: str = "", clock: Callable[[], float] = time.time) -> None:
        self.section = section
        self.cluster = cluster
        self.clock = clock
        conf = kclient.Configuration()
        try:
            if section.kubeconfig:
                kconfig.load_kube_config(section.kubeconfig, section.context or None, client_configuration=conf)  # type: ignore[no-untyped-call]
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                kconfig.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
            else:
                kconfig.load_kube_config(context=section.context or None, client_configuration=conf)  # type: ignore[no-untyped-call]
        except (ConfigException, OSError, ValueError) as exc:
            # the loader's messages name files and contexts, never credentials
            first = str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__
            raise BatchError(f"kubernetes: cannot load the client configuration: {first}") from None
        conf.retries = 1
        self.host = str(conf.host)
        self._ca_pem = Path(conf.ssl_ca_cert).read_text() if conf.ssl_ca_cert else ""
        self.api = kclient.ApiClient(conf)
        self.core = kclient.CoreV1Api(self.api)
        #: workers seen Ready by this process: a short NotReady spell of theirs does not un-join them
        self._seen_ready: set[str] = set()

    # -- calls ---------------------------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., Any], *args: Any, ok: tuple[int, ...] = (), **kw: Any) -> Any:
        """One API call; the raw JSON answer (None for a status in `ok`). Errors become a short BatchError."""
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=self.section.request_timeout_s, **kw)
        except ApiException as exc:
            if exc.status in ok:
                return None
            raise BatchError(f"kubernetes: {what} failed: HTTP {exc.status} {exc.reason}") from None
        except Exception as exc:  # urllib3, TLS and socket errors: named by class only, never by their text
            raise BatchError(f"kubernetes: {what} failed: {_kind(exc)}") from None
        try:
            return json.loads(resp.data) if resp.data else {}
        except ValueError:
            raise BatchError(f"kubernetes: {what}: the answer is not JSON") from None

    def _items(self, what: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> list[dict[str, Any]]:
        doc = self._call(what, fn, *args, **kw)
        items = doc.get("items") if isinstance(doc, dict) else None
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    def _node_selector(self) -> str:
        return f"{WORKER_LABEL},{CLUSTER_LABEL}={self.cluster}" if self.cluster else WORKER_LABEL

    def _pods_on(self, worker: str) -> list[dict[str, Any]]:
        return self._items(f"list pods of {worker}", self.core.list_pod_for_all_namespaces,
                           field_selector=f"spec.nodeName={worker}")  # fmt: skip

    def _owned_node(self, worker: str) -> dict[str, Any] | None:
        node = self._call(f"read node {worker}", self.core.read_node, worker, ok=(404,))
        if node is None:
            return None
        if owned_worker(node, self.cluster) != worker:
            log.warning("%s: a Node of that name exists but is not marea's: left alone", worker)
            return None
        return dict(node)

    # -- the interface -------------------------------------------------------------------------------------------
    def snapshot(self, flavours: tuple[Flavour, ...]) -> BatchSnapshot:
        pods = self._items("list pods", self.core.list_pod_for_all_namespaces, field_selector=NOT_FINISHED)
        nodes = self._items("list nodes", self.core.list_node, label_selector=self._node_selector())
        s = self.section
        reserved = Resources(s.reserved_cores, s.reserved_memory_mb, 0)
        shapes = flavour_nodes(flavours, self.cluster, s.worker_labels, s.flavour_taints, reserved)
        demand = parse_demand(pods, shapes, set(s.ignored_namespaces))
        by_node: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for pod in pods:
            node_name = (pod.get("spec") or {}).get("nodeName")
            if node_name:
                by_node[str(node_name)].append(pod)
        now = self.clock()
        workers: dict[str, Worker] = {}
        for node in nodes:
            name = owned_worker(node, self.cluster)
            if name is None:
                continue
            state = parse_node(node, by_node.get(name, []), now, s.lost_after_s, name in self._seen_ready)
            if state.ready:
                self._seen_ready.add(name)
            if state.worker is not None:
                workers[name] = state.worker
            if state.worker is not None and state.worker.draining and state.evictable:
                self._carry_on_drain(name, node, state.evictable, now)
        return BatchSnapshot(demand.demand, demand.unsatisfiable, workers, demand.queued)

    def pending_jobs(self) -> frozenset[str] | None:
        """The uids of the pods that are demand (Unschedulable, outside `ignored_namespaces`): one LIST between
        full cycles, for the queue watch.

        Lighter than a snapshot's: no Node LIST, and the field selector keeps Running pods and pods already
        bound to a Node (pending while their images are pulled) on the server. `resourceVersion=0` lets the API
        server answer from its watch cache instead of a quorum read of etcd, as informers' first LIST does.
        No `limit`: the API server ignores it when it answers from the cache, and pages (limit + continue) would
        each be an etcd read, heavier for the server than one cached answer. The API has no field projection
        but metadata-only (PartialObjectMetadataList), which lacks the PodScheduled condition that tells a pod
        the scheduler gave up on from one it has not tried yet, so whole pod objects come back; only unbound
        pending ones. Tested against the API stand-in of tests/kube (no real API server runs on the test
        machine).
        """
        pods = self._items("list pending pods", self.core.list_pod_for_all_namespaces,
                           field_selector=UNBOUND_PENDING, resource_version="0")  # fmt: skip
        ignored = set(self.section.ignored_namespaces)
        uids = set()
        for pod in pods:
            meta = pod.get("metadata") or {}
            if is_unschedulable(pod) and meta.get("namespace") not in ignored:
                uids.add(str(meta.get("uid") or pod_key(pod)))
        return frozenset(uids)

    def _carry_on_drain(self, worker: str, node: dict[str, Any], pods: tuple[dict[str, Any], ...], now: float) -> None:
        """Retry the evictions of a drain marea started (never of a Node an admin cordoned)."""
        started = parse_time(((node.get("metadata") or {}).get("annotations") or {}).get(DRAIN_STARTED))
        if started is None:
            return
        try:
            blocked = self._evict_all(worker, pods)
        except BatchError as exc:
            log.warning("%s: eviction retry failed: %s", worker, exc)
            return
        if blocked and now - started > self.section.drain_report_after_s:
            log.warning("%s: drain blocked for %.0f s by PodDisruptionBudgets of %s (never forced)",
                        worker, now - started, ", ".join(blocked[:5]))  # fmt: skip

    def _evict_all(self, worker: str, pods: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[str]:
        """Evict the pods a drain moves (not DaemonSet or mirror pods, not finished or terminating ones); the
        names of those a PodDisruptionBudget keeps (429) for now."""
        blocked = []
        for pod in pods:
            meta = pod.get("metadata") or {}
            if is_daemon_or_mirror(pod) or is_finished(pod) or meta.get("deletionTimestamp"):
                continue
            ns, name = str(meta.get("namespace")), str(meta.get("name"))
            body = kclient.V1Eviction(metadata=kclient.V1ObjectMeta(name=name, namespace=ns))
            try:
                self.core.create_namespaced_pod_eviction(
                    name, ns, body, _preload_content=False, _request_timeout=self.section.request_timeout_s
                )
                log.info("%s: evicted %s/%s", worker, ns, name)
            except ApiException as exc:
                if exc.status == 429:
                    blocked.append(f"{ns}/{name}")
                elif exc.status != 404:
                    raise BatchError(
                        f"kubernetes: eviction of {ns}/{name} failed: HTTP {exc.status} {exc.reason}"
                    ) from None
            except Exception as exc:
                raise BatchError(f"kubernetes: eviction of {ns}/{name} failed: {_kind(exc)}") from None
        return blocked

    def drain(self, worker: str, reason: str) -> None:
        """Cordon, then evict. A PodDisruptionBudget (429) postpones an eviction to the next snapshot."""
        node = self._owned_node(worker)
        if node is None:
            return
        annotations = (node.get("metadata") or {}).get("annotations") or {}
        patch = {
            "spec": {"unschedulable": True},
            "metadata": {"annotations": {DRAIN_STARTED: annotations.get(DRAIN_STARTED) or _iso(self.clock()),
                                         DRAIN_REASON: f"marea: {reason}"[:200]}},
        }  # fmt: skip
        self._call(f"cordon {worker}", self.core.patch_node, worker, patch)
        blocked = self._evict_all(worker, self._pods_on(worker))
        if blocked:
            log.info("%s: cordoned; PodDisruptionBudgets hold %s for now", worker, ", ".join(blocked[:5]))

    def resume(self, worker: str) -> None:
        """Uncordon a worker marea was draining (demand came back)."""
        if self._owned_node(worker) is None:
            return
        unset = {DRAIN_STARTED: None, DRAIN_REASON: None}
        patch = {"spec": {"unschedulable": False}, "metadata": {"annotations": unset}}
        self._call(f"uncordon {worker}", self.core.patch_node, worker, patch)

    def remove(self, worker: str) -> bool:
        """Delete the Node once only DaemonSet and mirror pods remain (pods being deleted on a Node that is no
        longer Ready do not count: their kubelet is gone, and only the Node's deletion lets them go), then the
        worker's bootstrap token. False while other pods remain."""
        node = self._owned_node(worker)
        if node is not None:
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in ((node.get("status") or {}).get("conditions") or []) if isinstance(c, dict)
            )  # fmt: skip
            for pod in self._pods_on(worker):
                if is_daemon_or_mirror(pod) or is_finished(pod):
                    continue
                if not ready and (pod.get("metadata") or {}).get("deletionTimestamp"):
                    continue
                return False
            self._call(f"delete node {worker}", self.core.delete_node, worker, ok=(404,))
            self._seen_ready.discard(worker)
        self._delete_tokens(worker)
        return True

    def _delete_tokens(self, worker: str) -> None:
        name = f"bootstrap-token-{token_id(worker)}"
        self._call("delete a bootstrap token", self.core.delete_namespaced_secret, name, "kube-system", ok=(404,))

    def join_variables(self, worker: str) -> dict[str, str]:
        """A fresh bootstrap token for `worker` (created now, through the API), the endpoint and the CA pin."""
        try:
            ca_hash = ca_cert_hash(self._ca_pem)
        except CertError as exc:
            raise BatchError(f"kubernetes: the cluster CA of the kubeconfig cannot be pinned: {exc}") from None
        labels = {WORKER_LABEL: worker, **({CLUSTER_LABEL: self.cluster} if self.cluster else {})}
        expires = self.clock() + self.section.bootstrap_token_ttl_s
        tid, secret = new_token(worker)
        body = token_secret(tid, secret, expires, worker, labels)
        created = self._call("create a bootstrap token", self.core.create_namespaced_secret, "kube-system", body,
                             ok=(409,))  # fmt: skip
        if created is None:
            raise BatchError(f"kubernetes: a bootstrap token with the id of worker {worker} exists already")
        return {
            "MAREA_K8S_ENDPOINT": self.endpoint(),
            "MAREA_K8S_TOKEN": f"{tid}.{secret}",
            "MAREA_K8S_CA_HASH": ca_hash,
        }

    def endpoint(self) -> str:
        """host:port workers join through: `join_endpoint`, else the kubeconfig's server."""
        if self.section.join_endpoint:
            return self.section.join_endpoint
        url = urlsplit(self.host)
        port = url.port or (443 if url.scheme == "https" else 80)
        host = f"[{url.hostname}]" if url.hostname and ":" in url.hostname else url.hostname
        return f"{host}:{port}"

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]
