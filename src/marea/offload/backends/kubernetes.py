"""The `kubernetes` backend: pods go to a remote cluster through its REST API (kubeconfig: token or cert).

Deliberately thin: what to create is decided by `kubetranslate` (pure, schema-tested); this module only sends
it. Status for every pod comes from a watch-fed cache (one LIST of the pods marea manages, by label, then a
WATCH from its resourceVersion; relist on any error), not from one GET per status request. Logs are proxied
from the API server's log endpoint, follow included (streamed).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from marea.config import OffloadSection
from marea.offload.backends.base import (
    Backend,
    BackendError,
    PodStatuses,
    container_status,
    terminated_pod,
    waiting_pod,
)
from marea.offload.backends.kubetranslate import MANAGED, UID_LABEL, translate, uid_label
from marea.offload.quantity import parse_quantity
from marea.offload.state import PodRecord
from marea.offload.wire import CreateRequest, LogRequest, WireError

LOST_AFTER_S = 60.0
#: a watch is re-opened (with a fresh LIST) at least this often
WATCH_SECONDS = 300
log = logging.getLogger("marea.offload.kubernetes")


class KubeConfig:
    """The parts of a kubeconfig marea uses: server, CA, and a bearer token or a client certificate.

    Embedded CA data is loaded from memory; an embedded client certificate and key must pass through files
    (Python's ssl loads a chain only from files): they are written into a fresh 0700 directory, loaded, and
    deleted before the constructor returns, so no key file outlives it, whatever happens to the process later.
    """

    def __init__(self, path: Path, context: str = "") -> None:
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise BackendError(f"{path}: cannot read kubeconfig: {exc.__class__.__name__}") from None
        if not isinstance(doc, dict):
            raise BackendError(f"{path}: not a kubeconfig")
        name = context or doc.get("current-context", "")
        ctx = _named(doc.get("contexts"), name, "context", path)
        cluster = _named(doc.get("clusters"), ctx.get("cluster", ""), "cluster", path)
        user = _named(doc.get("users"), ctx.get("user", ""), "user", path) if ctx.get("user") else {}
        self.server: str = str(cluster.get("server", "")).rstrip("/")
        if not self.server:
            raise BackendError(f"{path}: cluster has no server")
        self.token: str = str(user.get("token", ""))
        self.verify: ssl.SSLContext | bool = True
        self.namespace: str = str(ctx.get("namespace", ""))
        try:
            self._tls(path, cluster, user)
        except (OSError, ssl.SSLError, ValueError) as exc:  # binascii.Error is a ValueError
            raise BackendError(f"{path}: cannot load its TLS settings: {exc.__class__.__name__}") from None

    def _tls(self, path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> None:
        if cluster.get("insecure-skip-tls-verify"):
            self.verify = False
        elif cluster.get("certificate-authority-data"):
            ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
            self.verify = ssl.create_default_context(cadata=ca)
        elif cluster.get("certificate-authority"):
            self.verify = ssl.create_default_context(cafile=str(cluster["certificate-authority"]))
        if user.get("client-certificate-data") or user.get("client-certificate"):
            ctx_ssl = self.verify if isinstance(self.verify, ssl.SSLContext) else ssl.create_default_context()
            with tempfile.TemporaryDirectory(prefix="marea-kube-") as tmp:  # 0700, removed on leaving
                ctx_ssl.load_cert_chain(
                    _key_file(user, "client-certificate", Path(tmp)), _key_file(user, "client-key", Path(tmp))
                )
            self.verify = ctx_ssl

    def close(self) -> None:
        """Nothing to remove: no file is kept (see the class docstring)."""


def _key_file(section: dict[str, Any], key: str, tmp: Path) -> str:
    """The path of a certificate or key: as configured, or written (0600) into `tmp` from its `-data`."""
    if section.get(f"{key}-data"):
        name = tmp / key
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(section[f"{key}-data"]))
        return str(name)
    return str(section[key])


def _named(items: Any, name: str, what: str, path: Path) -> dict[str, Any]:
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name:
            return dict(item.get(what) or {})
    raise BackendError(f"{path}: no {what} named {name!r}")


class KubernetesBackend(Backend):
    name = "kubernetes"

    def __init__(self, settings: OffloadSection) -> None:
        self.settings = settings
        self.k = settings.kubernetes
        path = Path(self.k.kubeconfig or os.environ.get("KUBECONFIG", "") or Path.home() / ".kube" / "config")
        self.kc = KubeConfig(path.expanduser(), self.k.context)
        headers = {"Authorization": f"Bearer {self.kc.token}"} if self.kc.token else {}
        self.http = httpx.Client(
            base_url=self.kc.server, headers=headers, verify=self.kc.verify, timeout=self.k.timeout_s
        )
        self.headers = headers
        self.missing_since: dict[str, float] = {}
        self.watch: PodWatch | None = None

    # -- plumbing --------------------------------------------------------------------------------------------
    def call(self, method: str, url: str, body: Any = None, ok: tuple[int, ...] = ()) -> Any:
        try:
            r = self.http.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise BackendError(f"{method} {url}: {exc.__class__.__name__}") from None
        if r.status_code in ok:
            return None
        if r.status_code >= 400:
            try:
                msg = str(r.json().get("message", ""))[:200]
            except ValueError:
                msg = r.text[:200]
            if r.status_code == 422 or r.status_code == 403:
                raise WireError(422, f"remote cluster refused {url.rsplit('/', 1)[-1]}: {msg}")
            raise BackendError(f"{method} {url}: HTTP {r.status_code} {msg}")
        return r.json() if r.content else None

    # -- create / delete -------------------------------------------------------------------------------------
    def create(self, req: CreateRequest, rec: PodRecord) -> None:
        objs = translate(req, self.k)
        ns = objs.namespace
        rec.objects = {
            "namespace": ns,
            "pod": objs.pod["metadata"]["name"],
            "configmaps": [c["metadata"]["name"] for c in objs.configmaps],
            "secrets": [s["metadata"]["name"] for s in objs.secrets],
        }
        self.call(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            ok=(409,),
        )
        for cm in objs.configmaps:
            self.call("POST", f"/api/v1/namespaces/{ns}/configmaps", cm, ok=(409,))
        for sec in objs.secrets:
            self.call("POST", f"/api/v1/namespaces/{ns}/secrets", sec, ok=(409,))
        self.call("POST", f"/api/v1/namespaces/{ns}/pods", objs.pod, ok=(409,))
        rec.jid = f"{ns}/{objs.pod['metadata']['name']}"

    def delete(self, rec: PodRecord) -> None:
        ns = rec.objects.get("namespace")
        if not ns:
            return
        grace = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": self.settings.grace_s}
        if rec.objects.get("pod"):
            self.call("DELETE", f"/api/v1/namespaces/{ns}/pods/{rec.objects['pod']}", grace, ok=(404,))
        for name in rec.objects.get("configmaps", []):
            self.call("DELETE", f"/api/v1/namespaces/{ns}/configmaps/{name}", ok=(404,))
        for name in rec.objects.get("secrets", []):
            self.call("DELETE", f"/api/v1/namespaces/{ns}/secrets/{name}", ok=(404,))

    # -- status ----------------------------------------------------------------------------------------------
    def list_pods(self) -> tuple[dict[str, dict[str, Any]], str]:
        """One LIST of every pod marea manages: (uid label -> pod, resourceVersion to watch from)."""
        listing = self.call("GET", f"/api/v1/pods?labelSelector={MANAGED}%3Dtrue") or {}
        remote = {_key(item): item for item in listing.get("items", [])}
        return remote, str((listing.get("metadata") or {}).get("resourceVersion", ""))

    def refresh(self, recs: list[PodRecord]) -> dict[str, PodStatuses]:
        if self.watch is None:
            self.watch = PodWatch(self)
        remote = self.watch.snapshot() if self.watch.synced.is_set() else self.list_pods()[0]
        out: dict[str, PodStatuses] = {}
        now = time.monotonic()
        for rec in recs:
            item = remote.get(uid_label(rec.uid))
            if item is None:
                first = self.missing_since.setdefault(rec.uid, now)
                if now - first > LOST_AFTER_S:
                    out[rec.uid] = terminated_pod(rec, "RemotePodLost", "the remote pod is gone")
                else:
                    out[rec.uid] = waiting_pod(rec, "ContainerCreating")
                continue
            self.missing_since.pop(rec.uid, None)
            out[rec.uid] = remote_statuses(rec, item)
        return out

    def logs(self, rec: PodRecord, req: LogRequest, finished: Callable[[], bool]) -> AsyncIterator[bytes]:
        names = [n for kind in ("init", "containers") for n, _ in rec.containers.get(kind, [])]
        if req.container not in names:
            raise WireError(404, f"pod {rec.namespace}/{rec.name} has no container {req.container!r}")
        params: dict[str, str] = {"container": req.container}
        if req.tail:
            params["tailLines"] = str(req.tail)
        if req.limit_bytes:
            params["limitBytes"] = str(req.limit_bytes)
        if req.timestamps:
            params["timestamps"] = "true"
        if req.previous:
            params["previous"] = "true"
        if req.follow:
            params["follow"] = "true"
        if req.since_seconds:
            params["sinceSeconds"] = str(req.since_seconds)
        elif req.since_time is not None:
            params["sinceTime"] = req.since_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        url = f"/api/v1/namespaces/{rec.objects['namespace']}/pods/{rec.objects['pod']}/log"
        return self._stream(url, params)

    async def _stream(self, url: str, params: dict[str, str]) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._remote_log(url, params):
                yield chunk
        except httpx.HTTPError as exc:
            raise BackendError(f"remote log read failed: {exc.__class__.__name__}") from None

    async def _remote_log(self, url: str, params: dict[str, str]) -> AsyncIterator[bytes]:
        async with (
            httpx.AsyncClient(
                base_url=self.kc.server,
                headers=self.headers,
                verify=self.kc.verify,
                timeout=httpx.Timeout(self.k.timeout_s, read=None),
            ) as client,
            client.stream("GET", url, params=params) as r,
        ):
            if r.status_code != 200:  # an error status, never a 200 carrying the error as log text
                raw = (await r.aread())[:2000]
                try:
                    msg = str(json.loads(raw).get("message", ""))[:200]
                except (ValueError, AttributeError):
                    msg = raw[:200].decode(errors="replace")
                if r.status_code == 404:
                    raise WireError(404, f"remote cluster: log not found: {msg}")
                raise BackendError(f"remote log read failed: HTTP {r.status_code} {msg}")
            yield b""  # opened: the caller may answer 200 now
            async for chunk in r.aiter_bytes():
                yield chunk

    def capacity(self, recs: list[PodRecord]) -> dict[str, Any]:
        nodes = self.call("GET", "/api/v1/nodes") or {}
        cpu = mem = pods = 0.0
        for node in nodes.get("items", []):
            labels = (node.get("metadata") or {}).get("labels") or {}
            if any(labels.get(k) != v for k, v in self.k.node_selector.items()):
                continue
            alloc = (node.get("status") or {}).get("allocatable") or {}
            cpu += parse_quantity(alloc.get("cpu", 0))
            mem += parse_quantity(alloc.get("memory", 0))
            pods += parse_quantity(alloc.get("pods", 0))
        return {"cpu": str(int(cpu)), "memory": f"{int(mem // 2**20)}Mi", "pods": str(int(pods))}

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
        self.http.close()
        self.kc.close()


def _key(item: dict[str, Any]) -> str:
    return str(((item.get("metadata") or {}).get("labels") or {}).get(UID_LABEL, ""))


class PodWatch:
    """The status cache's feed: one LIST, then a WATCH from its resourceVersion, relisting after any error.

    Until the first LIST succeeds (and after a broken watch, until the relist) `synced` is clear and the
    backend's refresh does its own LIST, so a missing watch makes status slower to change, never wrong.
    """

    def __init__(self, backend: KubernetesBackend) -> None:
        self.backend = backend
        self.pods: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self.stopping = threading.Event()
        self.client = httpx.Client(
            base_url=backend.kc.server,
            headers=backend.headers,
            verify=backend.kc.verify,
            timeout=httpx.Timeout(backend.k.timeout_s, read=WATCH_SECONDS + 30),
        )
        self.thread = threading.Thread(target=self.run, name="kube-pod-watch", daemon=True)
        self.thread.start()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return dict(self.pods)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                pods, version = self.backend.list_pods()
                with self.lock:
                    self.pods = pods
                self.synced.set()
                self.follow(version)
            except (httpx.HTTPError, BackendError, WireError, ValueError, KeyError, TypeError) as exc:
                log.warning("pod watch interrupted (%s); relisting", exc.__class__.__name__)
            self.synced.clear()
            self.stopping.wait(1.0)

    def follow(self, version: str) -> None:
        params = {
            "labelSelector": f"{MANAGED}=true",
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        if version:
            params["resourceVersion"] = version
        with self.client.stream("GET", "/api/v1/pods", params=params) as r:
            if r.status_code != 200:
                raise BackendError(f"watch: HTTP {r.status_code}")
            for line in r.iter_lines():
                if self.stopping.is_set():
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":  # typically 410 Gone: the version is too old, relist
                    raise BackendError(f"watch error: {str(obj.get('message', ''))[:100]}")
                if kind == "BOOKMARK":
                    continue
                with self.lock:
                    if kind == "DELETED":
                        self.pods.pop(_key(obj), None)
                    else:
                        self.pods[_key(obj)] = obj

    def close(self) -> None:
        self.stopping.set()
        self.client.close()
        self.thread.join(1)  # a daemon thread blocked in a read must not hold up shutdown


def remote_statuses(rec: PodRecord, item: dict[str, Any]) -> PodStatuses:
    """The remote pod's container statuses, in the pod's container order; missing ones are waiting."""
    status = item.get("status") or {}
    reason = "ContainerCreating"
    message = ""
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            reason, message = str(cond.get("reason") or "Unschedulable"), str(cond.get("message") or "")
    out = PodStatuses()
    for kind, key, target in (
        ("init", "initContainerStatuses", out.init),
        ("containers", "containerStatuses", out.containers),
    ):
        by_name = {c.get("name"): c for c in status.get(key) or [] if isinstance(c, dict)}
        for name, image in rec.containers.get(kind, []):
            c = by_name.get(name)
            if c is None:
                state: dict[str, Any] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
                target.append(container_status(name, image, state))
            else:
                target.append(dict(c))
    return out
