"""The RBAC the driver needs (src/marea/profiles/kubernetes-rbac.yaml) is valid against the official Kubernetes 1.30
schemas (kubernetes-validate) and allows every API call the driver makes in a whole worker life against the API
stand-in (tests/kube/fake_cluster.py), and nothing the driver does not use: no reading of Secrets."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import kubernetes_validate
import yaml

from marea.model import Flavour
from tests.kube.conftest import Api
from tests.kube.fake_cluster import K8S_VERSION

FLAVOURS = (Flavour("m1.big", 8, 16384),)


def rbac() -> list[dict[str, Any]]:
    text = resources.files("marea.profiles").joinpath("kubernetes-rbac.yaml").read_text()
    return [d for d in yaml.safe_load_all(text) if d]


def allowed(docs: list[dict[str, Any]], verb: str, resource: str, namespace: str) -> bool:
    for doc in docs:
        if doc["kind"] == "ClusterRole" or (doc["kind"] == "Role" and doc["metadata"]["namespace"] == namespace):
            for rule in doc["rules"]:
                if "" in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
                    return True
    return False


def verb_and_resource(method: str, path: str) -> tuple[str, str, str]:
    """The RBAC verb, resource and namespace of one REST call, as the API server's authorizer derives them."""
    m = re.match(r"^/api/v1/(?:namespaces/([^/]+)/)?([a-z]+)(?:/([^/]+))?(?:/([a-z]+))?$", path)
    assert m, path
    ns, resource, name, sub = m.groups()
    verb = {"GET": "get" if name else "list", "POST": "create", "PATCH": "patch", "DELETE": "delete"}[method]
    return verb, f"{resource}/{sub}" if sub else resource, ns or ""


def test_the_rbac_objects_are_valid_and_bind_one_identity() -> None:
    docs = rbac()
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"]
    assert not allowed(docs, "get", "secrets", "kube-system") and not allowed(docs, "list", "secrets", "kube-system")


def test_every_call_of_a_worker_life_is_allowed(api: Api) -> None:
    fake, batch = api.fake, api.batch()
    fake.add_pod("jobs", "p", "1", "1Gi")
    batch.snapshot(FLAVOURS)
    token = batch.join_variables("kc-abc123")["MAREA_K8S_TOKEN"]
    assert fake.register_node("kc-abc123", "kc", "m1.big", token) == 201
    fake.bind("jobs", "p", "kc-abc123")
    batch.snapshot(FLAVOURS)
    batch.drain("kc-abc123", "idle")  # evicts p
    batch.resume("kc-abc123")
    batch.drain("kc-abc123", "idle")
    assert batch.remove("kc-abc123") is True
    batch.close()
    calls = {verb_and_resource(m, p) for m, p, _ in fake.requests if p != "/api/v1/nodes" or m != "POST"}
    assert ("create", "pods/eviction", "jobs") in calls and ("delete", "secrets", "kube-system") in calls
    docs = rbac()
    assert [c for c in sorted(calls) if not allowed(docs, *c)] == []
