"""Pure translation of an offloaded pod into the objects created on a remote Kubernetes cluster.

No I/O here, so the whole mapping is checked against the official schemas (kubernetes-validate) in tests.
Choices, each deliberate:
- namespace: `namespace_prefix` + the pod's namespace (except `unprefixed` ones); `refused_namespaces`
  are refused;
- names: the pod is `<name>-<uid>` cut to 63 characters (unique, a valid DNS label); each ConfigMap / Secret
  copied for it is `<original>-<uid>`, and every reference (volumes, projected sources, env, envFrom) is
  rewritten, so two pods with a ConfigMap of the same name never share or clobber it;
- projected volumes that arrived as data (the service-account token, downward API: interLink sends them as a
  ConfigMap named after the volume) become a ConfigMap volume with the same files; the remote cluster must not
  inject its own token at the same path, hence `automountServiceAccountToken: false`;
- serviceAccountName names an account of the central cluster: dropped unless `service_account = "keep"`;
- nodeName and the nodeSelector that pins the pod to interLink's virtual node are removed; the configured
  nodeSelector and tolerations are merged in (the pod's own keys win; tolerations are added);
- every other field of the spec (probes, affinity, security contexts, init containers, resources, ...) is
  copied as it came: full spec fidelity.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from marea.config import OffloadKubernetesSection
from marea.offload.wire import CreateRequest, WireError

MANAGED = "marea.offload/managed"
UID_LABEL = "marea.offload/pod-uid"
_DNS = re.compile(r"[^a-z0-9-]")


@dataclass
class RemoteObjects:
    namespace: str
    pod: dict[str, Any]
    configmaps: list[dict[str, Any]] = field(default_factory=list)
    secrets: list[dict[str, Any]] = field(default_factory=list)


def remote_namespace(namespace: str, s: OffloadKubernetesSection) -> str:
    if namespace in s.refused_namespaces:
        raise WireError(422, f"namespace {namespace} may not be offloaded to the remote cluster")
    if namespace in s.unprefixed:
        return namespace
    return (s.namespace_prefix + namespace)[:63].rstrip("-")


def remote_name(name: str, uid: str, limit: int = 63) -> str:
    """`<name>-<uid>`, the name cut so the result fits `limit` and stays a DNS label."""
    clean_uid = _DNS.sub("", uid.lower())
    room = limit - len(clean_uid) - 1
    head = _DNS.sub("-", name.lower())[: max(room, 0)].strip("-.")
    return f"{head}-{clean_uid}" if head else clean_uid[:limit]


def uid_label(uid: str) -> str:
    return _DNS.sub("", uid.lower())[:63]


def _meta(name: str, namespace: str, uid: str, src: dict[str, Any] | None = None) -> dict[str, Any]:
    src = src or {}
    labels = {**(src.get("labels") or {}), MANAGED: "true", UID_LABEL: uid_label(uid)}
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if src.get("annotations"):
        meta["annotations"] = dict(src["annotations"])
    return meta


def translate(req: CreateRequest, s: OffloadKubernetesSection) -> RemoteObjects:
    uid, ns = req.ref.uid, remote_namespace(req.ref.namespace, s)
    out = RemoteObjects(namespace=ns, pod={})
    cm_names: dict[str, str] = {}
    secret_names: dict[str, str] = {}
    for name, cm in req.configmaps.items():
        cm_names[name] = remote_name(name, uid, 253)
        obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(cm_names[name], ns, uid)}
        for key in ("data", "binaryData"):
            if cm.get(key):
                obj[key] = dict(cm[key])
        out.configmaps.append(obj)
    for name, sec in req.secrets.items():
        secret_names[name] = remote_name(name, uid, 253)
        obj = {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(secret_names[name], ns, uid)}
        obj["type"] = sec.get("type") or "Opaque"
        for key in ("data", "stringData"):
            if sec.get(key):
                obj[key] = dict(sec[key])
        out.secrets.append(obj)

    pod = copy.deepcopy(req.pod)
    spec = pod["spec"]
    for vol in spec.get("volumes") or []:
        _rewrite_volume(vol, req, uid, ns, cm_names, secret_names, out)
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        _rewrite_env(c, cm_names, secret_names)

    node = spec.pop("nodeName", None)
    selector = {k: v for k, v in (spec.get("nodeSelector") or {}).items() if not (node and v == node)}
    selector = {**s.node_selector, **selector}
    if selector:
        spec["nodeSelector"] = selector
    else:
        spec.pop("nodeSelector", None)
    tolerations = list(spec.get("tolerations") or [])
    tolerations += [dict(t) for t in s.tolerations if t not in tolerations]
    if tolerations:
        spec["tolerations"] = tolerations
    if s.service_account == "drop":
        spec.pop("serviceAccountName", None)
        spec.pop("serviceAccount", None)
    spec["automountServiceAccountToken"] = False
    src_meta = pod.get("metadata") or {}
    meta = _meta(remote_name(req.ref.name, uid), ns, uid, src_meta)
    meta.setdefault("annotations", {}).update(
        {"marea.offload/source": f"{req.ref.namespace}/{req.ref.name}", "marea.offload/source-uid": uid}
    )
    out.pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    return out


def _rewrite_volume(
    vol: dict[str, Any],
    req: CreateRequest,
    uid: str,
    ns: str,
    cm_names: dict[str, str],
    secret_names: dict[str, str],
    out: RemoteObjects,
) -> None:
    if "configMap" in vol:
        name = vol["configMap"].get("name", "")
        if name in cm_names:
            vol["configMap"]["name"] = cm_names[name]
        elif not vol["configMap"].get("optional"):
            raise WireError(422, f"volume {vol['name']}: configMap {name!r} did not arrive with the pod")
    elif "secret" in vol:
        name = vol["secret"].get("secretName", "")
        if name in secret_names:
            vol["secret"]["secretName"] = secret_names[name]
        elif not vol["secret"].get("optional"):
            raise WireError(422, f"volume {vol['name']}: secret {name!r} did not arrive with the pod")
    elif "projected" in vol:
        arrived = req.projected.get(vol["name"])
        if arrived is not None:
            cm_name = remote_name(vol["name"], uid, 253)
            obj = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _meta(cm_name, ns, uid),
                "data": dict(arrived.get("data") or {}),
            }
            out.configmaps.append(obj)
            mode = vol["projected"].get("defaultMode")
            vol.pop("projected")
            vol["configMap"] = {"name": cm_name, **({"defaultMode": mode} if mode is not None else {})}
        else:
            for src in vol["projected"].get("sources") or []:
                if "configMap" in src and src["configMap"].get("name") in cm_names:
                    src["configMap"]["name"] = cm_names[src["configMap"]["name"]]
                if "secret" in src and src["secret"].get("name") in secret_names:
                    src["secret"]["name"] = secret_names[src["secret"]["name"]]


def _rewrite_env(c: dict[str, Any], cm_names: dict[str, str], secret_names: dict[str, str]) -> None:
    for e in c.get("env") or []:
        vf = e.get("valueFrom") or {}
        if vf.get("configMapKeyRef", {}).get("name") in cm_names:
            vf["configMapKeyRef"]["name"] = cm_names[vf["configMapKeyRef"]["name"]]
        if vf.get("secretKeyRef", {}).get("name") in secret_names:
            vf["secretKeyRef"]["name"] = secret_names[vf["secretKeyRef"]["name"]]
    for src in c.get("envFrom") or []:
        if src.get("configMapRef", {}).get("name") in cm_names:
            src["configMapRef"]["name"] = cm_names[src["configMapRef"]["name"]]
        if src.get("secretRef", {}).get("name") in secret_names:
            src["secretRef"]["name"] = secret_names[src["secretRef"]["name"]]
