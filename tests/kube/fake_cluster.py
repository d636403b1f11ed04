"""The HTTP stand-in of a Kubernetes API server (tests/offload/fake_kube.py), extended to what the elastic driver
uses: pods with scheduling conditions, Nodes (list by label, read, merge-patch, delete, create by a kubelet that
authenticates with a bootstrap token), the Eviction subresource (policy/v1) with PodDisruptionBudgets answering
429 while their budget is used up, and bootstrap-token Secrets in kube-system.

NOT a real API server (none can run on this machine): it stores objects and answers the REST calls marea's driver
makes, over a real TCP socket, to the official Python client. Every object it accepts (Secrets, Evictions, Nodes,
patched Nodes) or serves (pods, Nodes, Secrets, PDBs) is validated against the official OpenAPI schemas of
Kubernetes 1.30 with `kubernetes-validate`; a failure is recorded in `invalid` (tests assert it stays empty) and an
accepted object that fails is refused with 422, as the real server would. The test plays the scheduler (`bind`),
the kubelet (`register_node`, `finish`) and the disruption controller (`pdb`).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.offload.fake_kube import TOKEN, FakeKube

K8S_VERSION = "1.30.0"
KINDS = {"pods": ("v1", "Pod"), "nodes": ("v1", "Node"), "secrets": ("v1", "Secret"),
         "poddisruptionbudgets": ("policy/v1", "PodDisruptionBudget")}  # fmt: skip


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(int(t), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code: int, reason: str, message: str) -> JSONResponse:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip
    return JSONResponse(body, code)


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch (what both merge-patch and, for these fields, strategic merge do)."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            merge_patch(target[k], v)
        else:
            target[k] = copy.deepcopy(v)
    return target


def _labels_match(selector: str, labels: dict[str, str]) -> bool:
    for part in filter(None, selector.split(",")):
        if "!=" in part:
            k, v = part.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in part:
            k, v = part.split("=", 1)
            if labels.get(k) != v:
                return False
        elif part not in labels:
            return False
    return True


def _field(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for p in path.split("."):
        cur = cur.get(p) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def _fields_match(selector: str, obj: dict[str, Any]) -> bool:
    for part in filter(None, selector.split(",")):
        if "!=" in part:
            k, v = part.split("!=", 1)
            if _field(obj, k) == v:
                return False
        else:
            k, v = part.split("=", 1)
            if _field(obj, k) != v.lstrip("="):
                return False
    return True


def make_pod(
    name: str, cpu: str = "1", memory: str = "1Gi", *, gpus: int = 0, unschedulable: bool = True,
    node_selector: dict[str, str] | None = None, affinity: dict[str, Any] | None = None,
    tolerations: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None,
    owner: str = "", init: tuple[str, str] | None = None, overhead: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A pending pod, marked Unschedulable by the scheduler (or not yet considered), as the API serves it."""
    requests: dict[str, Any] = {"cpu": cpu, "memory": memory}
    container: dict[str, Any] = {"name": "main", "image": "busybox", "resources": {"requests": requests}}
    if gpus:
        requests["nvidia.com/gpu"] = str(gpus)
        container["resources"]["limits"] = {"nvidia.com/gpu": str(gpus)}
    spec: dict[str, Any] = {"containers": [container]}
    if init:
        spec["initContainers"] = [{"name": "init", "image": "busybox",
                                   "resources": {"requests": {"cpu": init[0], "memory": init[1]}}}]  # fmt: skip
    if node_selector:
        spec["nodeSelector"] = node_selector
    if affinity:
        spec["affinity"] = affinity
    if tolerations:
        spec["tolerations"] = tolerations
    if overhead:
        spec["overhead"] = overhead
    conditions = []
    if unschedulable:
        conditions = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                       "message": "0/3 nodes are available: 3 Insufficient cpu.",
                       "lastTransitionTime": iso(time.time())}]  # fmt: skip
    meta: dict[str, Any] = {"name": name, "namespace": "default", "labels": labels or {"app": name}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner, "name": f"{name}-owner",
                                    "uid": f"uid-{name}-owner", "controller": True}]  # fmt: skip
    return {"metadata": meta, "spec": spec, "status": {"phase": "Pending", "conditions": conditions}}


class FakeCluster(FakeKube):
    @property
    def url(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://127.0.0.1:{self.port}"

    def __init__(self, tls: tuple[str, str, str] | None = None) -> None:
        """`tls` = (server certificate, its key, the CA file): serve HTTPS, as a real API server does."""
        super().__init__()
        self.ca_file = ""
        if tls is not None:
            cert, key, self.ca_file = tls
            config = uvicorn.Config(self.app, log_level="warning", lifespan="off", ssl_certfile=cert, ssl_keyfile=key)
            self.server = uvicorn.Server(config)
            self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.invalid: list[str] = []
        #: off only in benchmarks/kube_snapshot.py (schema checks of thousands of objects would be what it times)
        self.validate = True
        self._valid: set[str] = set()
        self.lock = threading.Lock()
        #: called with the node's name just before a Node is deleted (a test checks what still exists then)
        self.on_node_delete: Callable[[str], object] | None = None  # its result is not used
        #: called with the node's name when a Node is patched, before the patch applies (the scheduler's race)
        self.on_node_patch: Callable[[str], None] | None = None
        self.objects[("namespaces", "", "kube-system")] = {"metadata": {"name": "kube-system"}}
        extra = [
            Route("/api/v1/pods", self.list_all_pods, methods=["GET"]),
            Route("/api/v1/nodes", self.list_nodes, methods=["GET"]),
            Route("/api/v1/nodes", self.create_node, methods=["POST"]),
            Route("/api/v1/nodes/{name}", self.node, methods=["GET", "PATCH", "DELETE"]),
            Route("/api/v1/namespaces/{ns}/pods/{name}/eviction", self.evict, methods=["POST"]),
            Route("/api/v1/namespaces/{ns}/secrets", self.secrets, methods=["GET", "POST"]),
        ]
        self.app.router.routes[0:0] = extra

    def stop(self) -> None:
        """Stop at once: a client's idle keep-alive connection does not hold the shutdown for uvicorn's grace."""
        self.server.force_exit = True
        super().stop()

    # -- validation ----------------------------------------------------------------------------------------------
    def check(self, kind: str, obj: dict[str, Any]) -> str | None:
        """The schema error of `obj` (recorded in `invalid`), or None when it is valid."""
        api, name = KINDS.get(kind, ("policy/v1", "Eviction"))
        doc = {"apiVersion": api, "kind": name, **{k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}}
        text = json.dumps(doc, sort_keys=True)
        if not self.validate or text in self._valid:
            return None
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            error = f"{name} {obj.get('metadata', {}).get('name')}: {exc.message}"
            self.invalid.append(error)
            return error
        self._valid.add(text)
        return None

    def _put(self, kind: str, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("creationTimestamp", iso(time.time()))
        meta.setdefault("uid", f"uid-{kind}-{ns}-{meta['name']}")
        self.version += 1
        meta["resourceVersion"] = str(self.version)
        if ns:
            meta["namespace"] = ns
        assert self.check(kind, obj) is None, self.invalid[-1]
        with self.lock:
            self.objects[(kind, ns, meta["name"])] = obj
        return obj

    def _serve(self, kind: str, items: list[dict[str, Any]]) -> Response:
        for o in items:
            self.check(kind, o)
        api, name = KINDS[kind]
        doc = {"kind": f"{name}List", "apiVersion": api, "metadata": {"resourceVersion": str(self.version)},
               "items": items}  # fmt: skip
        return JSONResponse(doc)

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(o) for (k, _, _), o in self.objects.items() if k == kind]

    def get(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, ns, name))

    # -- the test's hands: scheduler, kubelet, controllers -----------------------------------------------------
    def add_pod(self, ns: str, name: str, cpu: str = "1", memory: str = "1Gi", **kw: Any) -> dict[str, Any]:
        return self._put("pods", ns, make_pod(name, cpu, memory, **kw))

    def bind(self, ns: str, name: str, node: str) -> None:
        """The scheduler places a pod; its kubelet starts it."""
        with self.lock:
            pod = self.objects[("pods", ns, name)]
            pod["spec"]["nodeName"] = node
            pod["status"] = {"phase": "Running", "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": iso(time.time())}]}  # fmt: skip
        self.check("pods", pod)

    def finish(self, ns: str, name: str) -> None:
        """The pod's containers exited 0."""
        with self.lock:
            self.objects[("pods", ns, name)]["status"]["phase"] = "Succeeded"

    def register_node(
        self, name: str, cluster: str, flavour: str, bearer: str, *, cpu: str = "4", memory: str = "8Gi",
        gpus: int = 0, provider: str | None = None,
    ) -> int:  # fmt: skip
        """The kubelet of a new worker registers its Node with the token of its user-data (HTTP status back)."""
        import httpx

        alloc = {"cpu": cpu, "memory": memory, "pods": "110"}
        if gpus:
            alloc["nvidia.com/gpu"] = str(gpus)
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {
                "marea.io/worker": name, "marea.io/cluster": cluster, "node.kubernetes.io/instance-type": flavour,
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
            "spec": {"providerID": provider if provider is not None else f"marea://{cluster}/{name}"},
            "status": {
                "capacity": alloc, "allocatable": alloc,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "lastHeartbeatTime": iso(time.time()), "lastTransitionTime": iso(time.time())}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.9"}, {"type": "Hostname", "address": name}],
            },
        }  # fmt: skip
        r = httpx.post(f"{self.url}/api/v1/nodes", json=node, headers={"Authorization": f"Bearer {bearer}"},
                       verify=ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True)  # fmt: skip
        return r.status_code

    def set_ready(self, name: str, ready: str, since: float) -> None:
        with self.lock:
            cond = self.objects[("nodes", "", name)]["status"]["conditions"][0]
            cond.update(status=ready, lastTransitionTime=iso(since))

    def pdb(self, ns: str, name: str, match: dict[str, str], allowed: int) -> None:
        """A PodDisruptionBudget as the disruption controller keeps it: `allowed` evictions left."""
        obj = {"metadata": {"name": name}, "spec": {"minAvailable": 1, "selector": {"matchLabels": match}},
               "status": {"currentHealthy": 1 + allowed, "desiredHealthy": 1, "disruptionsAllowed": allowed,
                          "expectedPods": 1 + allowed}}  # fmt: skip
        self._put("poddisruptionbudgets", ns, obj)

    def bootstrap_token_valid(self, bearer: str) -> bool:
        """What the API server's bootstrap authenticator checks: the Secret of the token id exists, has the
        type, the secret, usage-bootstrap-authentication and an expiration in the future."""
        token_id, _, secret = bearer.partition(".")
        obj = self.get("secrets", "kube-system", f"bootstrap-token-{token_id}")
        if obj is None or obj.get("type") != "bootstrap.kubernetes.io/token":
            return False
        data = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
        expires = dt.datetime.fromisoformat(data.get("expiration", "1970-01-01T00:00:00Z").replace("Z", "+00:00"))
        return (data.get("token-secret") == secret and data.get("usage-bootstrap-authentication") == "true"
                and expires.timestamp() > time.time())  # fmt: skip

    # -- routes --------------------------------------------------------------------------------------------------
    def _admin(self, request: Request) -> Response | None:
        self.requests.append((request.method, request.url.path, request.url.query))
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return status(401, "Unauthorized", "Unauthorized")
        return None

    async def list_all_pods(self, request: Request) -> Response:
        if (denied := self._admin(request)) is not None:
            return denied
        q = request.query_params
        items = [p for p in self.of("pods") if _fields_match(q.get("fieldSelector", ""), p)
                 and _labels_match(q.get("labelSelector", ""), p["metadata"].get("labels", {}))]  # fmt: skip
        return self._serve("pods", items)

    async def list_nodes(self, request: Request) -> Response:
        if (denied := self._admin(request)) is not None:
            return denied
        sel = request.query_params.get("labelSelector", "")
        return self._serve("nodes", [n for n in self.of("nodes") if _labels_match(sel, n["metadata"]["labels"])])

    async def create_node(self, request: Request) -> Response:
        self.requests.append((request.method, request.url.path, request.url.query))
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if bearer != TOKEN and not self.bootstrap_token_valid(bearer):
            return status(401, "Unauthorized", "Unauthorized")
        node = await request.json()
        if (error := self.check("nodes", node)) is not None:
            return status(422, "Invalid", error)
        if self.get("nodes", "", node["metadata"]["name"]) is not None:
            return status(409, "AlreadyExists", "node exists")
        return JSONResponse(self._put("nodes", "", node), 201)

    async def node(self, request: Request) -> Response:
        if (denied := self._admin(request)) is not None:
            return denied
        name = request.path_params["name"]
        obj = self.get("nodes", "", name)
        if obj is None:
            return status(404, "NotFound", f'nodes "{name}" not found')
        if request.method == "GET":
            self.check("nodes", obj)
            return JSONResponse(obj)
        if request.method == "DELETE":
            if self.on_node_delete is not None:
                self.on_node_delete(name)
            with self.lock:
                self.objects.pop(("nodes", "", name))
            return JSONResponse(obj)
        if self.on_node_patch is not None:
            self.on_node_patch(name)
        patched = merge_patch(copy.deepcopy(obj), await request.json())
        if (error := self.check("nodes", patched)) is not None:
            return status(422, "Invalid", error)
        return JSONResponse(self._put("nodes", "", patched))

    async def evict(self, request: Request) -> Response:
        if (denied := self._admin(request)) is not None:
            return denied
        ns, name = request.path_params["ns"], request.path_params["name"]
        body = await request.json()
        if (error := self.check("evictions", body)) is not None:
            return status(422, "Invalid", error)
        pod = self.get("pods", ns, name)
        if pod is None:
            return status(404, "NotFound", f'pods "{name}" not found')
        labels = pod["metadata"].get("labels", {})
        with self.lock:
            for (kind, pns, _pname), pdb in self.objects.items():
                sel = pdb["spec"]["selector"]["matchLabels"] if kind == "poddisruptionbudgets" else None
                if sel is None or pns != ns or any(labels.get(k) != v for k, v in sel.items()):
                    continue
                if pdb["status"]["disruptionsAllowed"] < 1:
                    return status(429, "TooManyRequests",
                                  "Cannot evict pod as it would violate the pod's disruption budget.")  # fmt: skip
                pdb["status"]["disruptionsAllowed"] -= 1
            self.objects.pop(("pods", ns, name))
        done = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
        return JSONResponse(done, 201)

    async def secrets(self, request: Request) -> Response:
        if (denied := self._admin(request)) is not None:
            return denied
        ns = request.path_params["ns"]
        if request.method == "GET":
            sel = request.query_params.get("labelSelector", "")
            items = [s for s in self.of("secrets") if s["metadata"].get("namespace") == ns
                     and _labels_match(sel, s["metadata"].get("labels", {}))]  # fmt: skip
            return self._serve("secrets", items)
        obj = await request.json()
        if (error := self.check("secrets", obj)) is not None:
            return status(422, "Invalid", error)
        if self.get("secrets", ns, obj["metadata"]["name"]) is not None:
            return status(409, "AlreadyExists", "secret exists")
        return JSONResponse(self._put("secrets", ns, obj), 201)
