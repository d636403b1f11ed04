"""Kubernetes pods and Nodes as marea's demand and workers: pure functions on the API's JSON, no I/O.

Why a module of its own: what a pod asks for and which flavour may hold it is the heart of the driver and the
part most worth testing on many shapes; keeping it free of the client lets the tests feed it objects validated
against the official schemas. The rules follow the scheduler's:

* a pod is demand only when the scheduler tried and failed (condition PodScheduled False, reason Unschedulable);
  a pod not yet considered, gated, being deleted, or with a nominated Node (preemption makes room there) is not;
* its request per resource is max(largest init container, sum of app containers) plus `spec.overhead`
  (a request missing from a container defaults to its limit, as the API server does);
* a flavour may hold it when the request fits the flavour less what the kubelet reserves, the nodeSelector and
  the required node affinity match the labels a worker of that flavour will carry (the instance type, marea's
  cluster label, the configured `worker_labels`), and the pod tolerates the flavour's taints (NoSchedule and
  NoExecute; workers carry none unless `flavour_taints` says so).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from marea.batch.base import Worker
from marea.model import DemandGroup, Flavour, Resources, Unsatisfiable
from marea.quantity import QuantityError, parse_quantity, pod_request

INSTANCE_TYPE = "node.kubernetes.io/instance-type"
WORKER_LABEL = "marea.io/worker"
CLUSTER_LABEL = "marea.io/cluster"
GPU = "nvidia.com/gpu"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
MIB = 2.0**20


def provider_id(cluster: str, worker: str) -> str:
    return f"marea://{cluster}/{worker}"


def parse_time(text: Any) -> float | None:
    """An RFC 3339 timestamp of the API as epoch seconds (None when absent or malformed)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _d(obj: Any, key: str) -> dict[str, Any]:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


def _l(obj: Any, key: str) -> list[Any]:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, list) else []


def pod_key(pod: dict[str, Any]) -> str:
    meta = _d(pod, "metadata")
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def pod_resources(pod: dict[str, Any]) -> Resources:
    """What the scheduler reserves for `pod`: the init-container rule, then the overhead. QuantityError if malformed."""
    req = pod_request(pod)
    overhead = _d(_d(pod, "spec"), "overhead")
    cpu = req.cpus + parse_quantity(overhead.get("cpu", 0))
    mem = req.memory_bytes + parse_quantity(overhead.get("memory", 0))
    return Resources(round(cpu, 3), round(mem / MIB, 1), int(req.gpus))


def is_daemon_or_mirror(pod: dict[str, Any]) -> bool:
    """Pods a drain leaves alone and that do not make a worker busy: DaemonSet-owned and static (mirror) pods."""
    meta = _d(pod, "metadata")
    if MIRROR_ANNOTATION in _d(meta, "annotations"):
        return True
    return any(isinstance(o, dict) and o.get("kind") == "DaemonSet" for o in _l(meta, "ownerReferences"))


def is_finished(pod: dict[str, Any]) -> bool:
    return _d(pod, "status").get("phase") in ("Succeeded", "Failed")


def is_unschedulable(pod: dict[str, Any]) -> bool:
    """Pending, unbound, not being deleted, and marked Unschedulable by the scheduler."""
    if _d(pod, "status").get("phase") != "Pending" or _d(pod, "spec").get("nodeName"):
        return False
    if _d(pod, "metadata").get("deletionTimestamp") or _d(pod, "status").get("nominatedNodeName"):
        return False  # being deleted, or the scheduler is preempting room for it on an existing Node
    return any(
        isinstance(c, dict) and c.get("type") == "PodScheduled" and c.get("status") == "False"
        and c.get("reason") == "Unschedulable"
        for c in _l(_d(pod, "status"), "conditions")
    )  # fmt: skip


# -- flavour matching -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: str

    @classmethod
    def parse(cls, text: str) -> Taint:
        body, _, effect = text.rpartition(":")
        key, _, value = body.partition("=")
        return cls(key, value, effect)


@dataclass(frozen=True, slots=True)
class FlavourNode:
    """What a new worker of one flavour will look like to the scheduler."""

    flavour: Flavour
    labels: dict[str, str]
    taints: tuple[Taint, ...]
    room: Resources


def flavour_nodes(
    flavours: Iterable[Flavour],
    cluster: str,
    worker_labels: dict[str, str],
    flavour_taints: dict[str, list[str]],
    reserved: Resources,
) -> list[FlavourNode]:
    out = []
    for f in flavours:
        labels = {**worker_labels, INSTANCE_TYPE: f.name}
        if cluster:
            labels[CLUSTER_LABEL] = cluster
        taints = tuple(Taint.parse(t) for t in flavour_taints.get(f.name, []))
        out.append(FlavourNode(f, labels, taints, f.resources - reserved))
    return out


def _expression_matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op = str(expr.get("key", "")), expr.get("operator")
    values = [str(v) for v in _l(expr, "values")]
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and len(values) == 1:
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def _term_matches(term: dict[str, Any], labels: dict[str, str]) -> bool:
    """A nodeSelectorTerm: all its expressions hold. matchFields name one existing Node: no new worker is it."""
    if _l(term, "matchFields"):
        return False
    exprs = _l(term, "matchExpressions")
    return bool(exprs) and all(isinstance(e, dict) and _expression_matches(e, labels) for e in exprs)


def _tolerates(tolerations: list[Any], taint: Taint) -> bool:
    for t in tolerations:
        if not isinstance(t, dict):
            continue
        if t.get("effect") and t.get("effect") != taint.effect:
            continue
        key = t.get("key") or ""
        if t.get("operator") == "Exists":
            if not key or key == taint.key:
                return True
        elif key == taint.key and (t.get("value") or "") == taint.value:
            return True
    return False


def why_not(pod: dict[str, Any], request: Resources, node: FlavourNode) -> str | None:
    """None when a new worker of `node.flavour` could hold `pod`, else the first reason it could not."""
    spec = _d(pod, "spec")
    for key, value in _d(spec, "nodeSelector").items():
        if node.labels.get(str(key)) != str(value):
            return f"nodeSelector {key}={value}"
    required = _d(_d(_d(spec, "affinity"), "nodeAffinity"), "requiredDuringSchedulingIgnoredDuringExecution")
    terms = [t for t in _l(required, "nodeSelectorTerms") if isinstance(t, dict)]
    if required and not any(_term_matches(t, node.labels) for t in terms):
        return "required node affinity"
    tolerations = _l(spec, "tolerations")
    for taint in node.taints:
        if taint.effect in ("NoSchedule", "NoExecute") and not _tolerates(tolerations, taint):
            return f"taint {taint.key}:{taint.effect} not tolerated"
    if not request.fits_in(node.room):
        return f"asks {request}, more than {node.flavour.name} offers to pods ({node.room})"
    return None


@dataclass(frozen=True, slots=True)
class Demand:
    demand: tuple[DemandGroup, ...]
    unsatisfiable: tuple[Unsatisfiable, ...]
    queued: int


def flavour_group(names: Iterable[str]) -> str:
    """The demand group of pods only some flavours may hold. It becomes a VM tag (OpenStack: at most 255
    characters), so a long list of names is replaced by its digest."""
    text = ",".join(sorted(names))
    if len(text) > 120:
        text = "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"flavours={text}"


def parse_demand(pods: Iterable[dict[str, Any]], nodes: list[FlavourNode], ignored: set[str]) -> Demand:
    """Unschedulable pods outside `ignored` namespaces, grouped by (request, flavours that may hold them)."""
    counts: dict[tuple[Resources, tuple[str, ...]], int] = defaultdict(int)
    oldest: dict[tuple[Resources, tuple[str, ...]], float] = {}
    unsat: dict[str, list[str]] = defaultdict(list)
    queued = 0
    everyone = tuple(sorted(n.flavour.name for n in nodes))
    for pod in pods:
        meta = _d(pod, "metadata")
        if meta.get("namespace") in ignored:
            continue
        if _d(pod, "status").get("phase") == "Pending" and not _d(pod, "spec").get("nodeName"):
            queued += 1
        if not is_unschedulable(pod):
            continue
        try:
            request = pod_resources(pod)
        except QuantityError as exc:
            unsat[f"malformed request: {exc}"].append(pod_key(pod))
            continue
        reasons = {n.flavour.name: why_not(pod, request, n) for n in nodes}
        allowed = tuple(sorted(name for name, why in reasons.items() if why is None))
        if not allowed:
            detail = "; ".join(f"{name}: {why}" for name, why in reasons.items()) or "no flavour configured"
            unsat[f"no flavour can hold the pod ({detail})"].append(pod_key(pod))
            continue
        key = (request, () if allowed == everyone else allowed)
        counts[key] += 1
        created = parse_time(meta.get("creationTimestamp"))
        if created is not None:
            oldest[key] = min(oldest.get(key, created), created)
    demand = tuple(
        DemandGroup(req, n, flavour_group(names) if names else "", oldest.get((req, names)), names)
        for (req, names), n in counts.items()
    )
    return Demand(demand, _capped(unsat), queued)


#: at most this many distinct reasons are reported per snapshot: tenants choose their pods' shapes, and each
#: reason becomes a line of the engine's decisions
MAX_REASONS = 20


def _capped(unsat: dict[str, list[str]]) -> tuple[Unsatisfiable, ...]:
    ranked = sorted(unsat.items(), key=lambda kv: -len(kv[1]))
    out = [Unsatisfiable(tuple(pods), why) for why, pods in ranked[:MAX_REASONS]]
    rest = [p for _, pods in ranked[MAX_REASONS:] for p in pods]
    if rest:
        out.append(Unsatisfiable(tuple(rest), f"no flavour can hold the pod ({len(ranked) - MAX_REASONS} more shapes)"))
    return tuple(out)


# -- workers ------------------------------------------------------------------------------------------------------
def owned_worker(node: dict[str, Any], cluster: str) -> str | None:
    """The marea worker name of `node`, or None when the Node is not marea's (never touched then): it must carry
    marea's worker label equal to its name, marea's cluster label (when the cluster is known) and the providerID
    `marea://<cluster>/<name>`."""
    meta = _d(node, "metadata")
    name = str(meta.get("name", ""))
    labels = _d(meta, "labels")
    if not name or labels.get(WORKER_LABEL) != name:
        return None
    pid = str(_d(node, "spec").get("providerID", ""))
    if cluster:
        return name if labels.get(CLUSTER_LABEL) == cluster and pid == provider_id(cluster, name) else None
    return name if pid.startswith("marea://") and pid.endswith(f"/{name}") else None


def _ready(node: dict[str, Any]) -> tuple[str, float | None]:
    for c in _l(_d(node, "status"), "conditions"):
        if isinstance(c, dict) and c.get("type") == "Ready":
            return str(c.get("status", "Unknown")), parse_time(c.get("lastTransitionTime"))
    return "Unknown", None


def node_total(node: dict[str, Any]) -> Resources:
    status = _d(node, "status")
    alloc = _d(status, "allocatable") or _d(status, "capacity")
    try:
        return Resources(
            round(parse_quantity(alloc.get("cpu", 0)), 3),
            round(parse_quantity(alloc.get("memory", 0)) / MIB, 1),
            int(parse_quantity(alloc.get(GPU, 0))),
        )
    except QuantityError:
        return Resources()


def node_address(node: dict[str, Any]) -> str | None:
    for a in _l(_d(node, "status"), "addresses"):
        if isinstance(a, dict) and a.get("type") == "InternalIP" and a.get("address"):
            return str(a["address"])
    return None


@dataclass(frozen=True, slots=True)
class NodeState:
    """One marea Node as read, with the pods bound to it."""

    worker: Worker | None  # None: registered but not Ready yet (not joined)
    ready: bool
    evictable: tuple[dict[str, Any], ...]


def parse_node(
    node: dict[str, Any], pods: list[dict[str, Any]], now: float, lost_after_s: float, seen_ready: bool
) -> NodeState:
    """The worker of one owned Node. Ready True = joined; NotReady/Unknown since lost_after_s = lost; NotReady for
    less than that is still the joined worker when it was seen Ready before, else not joined yet."""
    name = str(_d(node, "metadata").get("name"))
    status, since = _ready(node)
    ready = status == "True"
    lost = not ready and (since is None or now - since > lost_after_s)
    total = node_total(node)
    used = Resources()
    busy = False
    evictable = []
    for pod in pods:
        if is_finished(pod):
            continue
        with contextlib.suppress(QuantityError):
            used = used + pod_resources(pod)
        if not is_daemon_or_mirror(pod):
            busy = True
            evictable.append(pod)
    draining = bool(_d(node, "spec").get("unschedulable"))
    if not ready and not lost and not seen_ready:
        return NodeState(None, False, tuple(evictable))
    free = Resources(max(0.0, total.cores - used.cores), max(0.0, total.memory_mb - used.memory_mb),
                     max(0, total.gpus - used.gpus))  # fmt: skip
    worker = Worker(name, total, free, busy, draining, draining and not busy, lost, node_address(node))
    return NodeState(worker, ready, tuple(evictable))
