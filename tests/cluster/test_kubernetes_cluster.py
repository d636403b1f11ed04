"""`marea cluster create` for Kubernetes: the master's and the workers' user-data, checked without a cluster.

No Kubernetes can run on this machine (no kubeadm, no kubelet, no container runtime in a VM here), so these
tests check what the master and the workers would run:
- both documents pass cloud-init's own schema (Debian's `cloud-init schema`, as in test_cloudinit.py), and the
  metadata guard is the first thing they do;
- the kubeadm configuration documents are checked field by field against the kubeadm API types
  `kubeadm.k8s.io/v1beta4` (transcribed below from kubernetes/kubernetes
  cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go and bootstraptoken/v1/types.go): an unknown or misspelt field,
  which kubeadm would refuse, fails here;
- the engine's RBAC objects pass the official Kubernetes OpenAPI schemas (kubernetes-validate, strict);
- no join token is in any user-data, the one token kubeadm init always makes lives minutes, and every download
  is pinned (packages by minor and a signing-key fingerprint, helm by sha256, charts by version);
- the shell scripts parse (`sh -n`).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from marea.cluster.cloudinit import master_marea_toml, master_user_data
from marea.cluster.config import ClusterFile, parse_cluster
from marea.cluster.monitoring import AddonsSection
from marea.config import ConfigError, MareaConfig
from marea.engine.reconciler import render_user_data
from marea.profiles import kubernetes as k8s
from marea.profiles.cloudconfig import METADATA_GUARD
from marea.profiles.joins import make_join_secrets
from tests.cluster.test_cloudinit import DRIVER_VARIABLES, cluster_file, schema_errors

MASTER_IP = "10.10.0.5"
K8S_SCHEMA_VERSION = "1.31.0"

# -- kubeadm v1beta4, as its Go types declare it (json names; nested dicts are structs, [x] lists of x) ----------
STR, INT, BOOL = "string", "int", "bool"
ARG = {"name": STR, "value": STR}
TAINT = {"key": STR, "value": STR, "effect": STR, "timeAdded": STR}
NODE_REGISTRATION = {
    "name": STR, "criSocket": STR, "taints": [TAINT], "kubeletExtraArgs": [ARG], "ignorePreflightErrors": [STR],
    "imagePullPolicy": STR,
}  # fmt: skip
API_ENDPOINT = {"advertiseAddress": STR, "bindPort": INT}
BOOTSTRAP_TOKEN = {"token": STR, "description": STR, "ttl": STR, "expires": STR, "usages": [STR], "groups": [STR]}
PATCHES = {"directory": STR}
TYPE_META = {"apiVersion": STR, "kind": STR}
INIT_CONFIGURATION = {
    **TYPE_META, "bootstrapTokens": [BOOTSTRAP_TOKEN], "dryRun": BOOL, "nodeRegistration": NODE_REGISTRATION,
    "localAPIEndpoint": API_ENDPOINT, "certificateKey": STR, "skipPhases": [STR], "patches": PATCHES,
}  # fmt: skip
COMPONENT = {"extraArgs": [ARG], "extraVolumes": [{"name": STR, "hostPath": STR, "mountPath": STR,
                                                  "readOnly": BOOL, "pathType": STR}]}  # fmt: skip
CLUSTER_CONFIGURATION = {
    **TYPE_META, "etcd": {"local": {"imageRepository": STR, "imageTag": STR, "dataDir": STR, "extraArgs": [ARG],
                                    "serverCertSANs": [STR], "peerCertSANs": [STR]},
                          "external": {"endpoints": [STR], "caFile": STR, "certFile": STR, "keyFile": STR}},
    "networking": {"serviceSubnet": STR, "podSubnet": STR, "dnsDomain": STR}, "kubernetesVersion": STR,
    "controlPlaneEndpoint": STR, "apiServer": {**COMPONENT, "certSANs": [STR], "timeoutForControlPlane": STR},
    "controllerManager": COMPONENT, "scheduler": COMPONENT, "dns": {"imageRepository": STR, "imageTag": STR},
    "certificatesDir": STR, "imageRepository": STR, "featureGates": {}, "clusterName": STR,
}  # fmt: skip
JOIN_CONFIGURATION = {
    **TYPE_META, "dryRun": BOOL, "nodeRegistration": NODE_REGISTRATION, "caCertPath": STR,
    "discovery": {"bootstrapToken": {"token": STR, "apiServerEndpoint": STR, "caCertHashes": [STR],
                                     "unsafeSkipCAVerification": BOOL},
                  "file": {"kubeConfigPath": STR}, "tlsBootstrapToken": STR, "timeout": STR},
    "controlPlane": {"localAPIEndpoint": API_ENDPOINT, "certificateKey": STR}, "skipPhases": [STR],
    "patches": PATCHES,
}  # fmt: skip
KINDS = {
    "InitConfiguration": INIT_CONFIGURATION,
    "ClusterConfiguration": CLUSTER_CONFIGURATION,
    "JoinConfiguration": JOIN_CONFIGURATION,
}
PYTHON_TYPES = {STR: str, INT: int, BOOL: bool}


def kubeadm_errors(doc: Any, schema: Any, where: str = "") -> list[str]:
    """Every field of `doc` the kubeadm type `schema` does not have, or has with another shape."""
    if isinstance(schema, str):
        ok = isinstance(doc, PYTHON_TYPES[schema]) and not (schema == INT and isinstance(doc, bool))
        return [] if ok else [f"{where}: expected {schema}, got {type(doc).__name__}"]
    if isinstance(schema, list):
        if not isinstance(doc, list):
            return [f"{where}: expected a list"]
        return [e for i, item in enumerate(doc) for e in kubeadm_errors(item, schema[0], f"{where}[{i}]")]
    if not isinstance(doc, dict):
        return [f"{where}: expected an object"]
    if not schema:  # a map (featureGates)
        return []
    errors = [f"{where}.{key}: no such field" for key in doc if key not in schema]
    return errors + [e for key in doc if key in schema for e in kubeadm_errors(doc[key], schema[key], f"{where}.{key}")]


def check_kubeadm(doc: dict[str, Any]) -> list[str]:
    if doc.get("apiVersion") != "kubeadm.k8s.io/v1beta4" or doc.get("kind") not in KINDS:
        return [f"not a kubeadm v1beta4 document: {doc.get('apiVersion')} {doc.get('kind')}"]
    return kubeadm_errors(doc, KINDS[doc["kind"]], doc["kind"])


# -- the documents under test ------------------------------------------------------------------------------------
def with_addons(cf: ClusterFile, **addons: bool) -> ClusterFile:
    return ClusterFile(cf.master, cf.marea, cf.marea_data, AddonsSection(**addons))


def master_doc(cf: ClusterFile | None = None) -> dict[str, Any]:
    cf = cf or cluster_file("kubernetes")
    text = master_user_data(cf, make_join_secrets("kubernetes", "phys"), MASTER_IP, "clouds: {}\n")
    assert text.startswith("#cloud-config\n")
    doc: dict[str, Any] = json.loads(text.removeprefix("#cloud-config\n"))
    return doc


def files(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in doc["write_files"]}


def worker_text() -> str:
    cf = cluster_file("kubernetes")
    toml = tomllib.loads(master_marea_toml(cf, make_join_secrets("kubernetes", "phys"), MASTER_IP))
    variables = {
        "MAREA_NAME": "phys-ab12", "MAREA_CLUSTER": "phys", "MAREA_FLAVOUR": "m1.small", "MAREA_CORES": "2",
        "MAREA_MEMORY_MB": "4096", **DRIVER_VARIABLES["kubernetes"],
    }  # fmt: skip
    return render_user_data(toml["worker"]["user_data"], variables)


# -- tests -------------------------------------------------------------------------------------------------------
def test_the_kubeadm_check_can_fail() -> None:
    bad = {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "JoinConfiguration",
           "nodeRegistration": {"kubeletExtraArgs": {"node-labels": "a=b"}}, "discovery": {"token": "x"}}  # fmt: skip
    errors = check_kubeadm(bad)
    assert "JoinConfiguration.nodeRegistration.kubeletExtraArgs: expected a list" in errors  # v1beta3's map
    assert "JoinConfiguration.discovery.token: no such field" in errors


def test_the_master_inits_kubeadm_from_v1beta4_documents_with_no_long_lived_token() -> None:
    doc = master_doc()
    init_text = files(doc)[k8s.INIT_CONFIG]["content"]
    docs = [json.loads(part) for part in init_text.split("---\n")]
    assert [d["kind"] for d in docs] == ["InitConfiguration", "ClusterConfiguration"]
    for d in docs:
        assert check_kubeadm(d) == []
    init, cluster = docs
    (token,) = init["bootstrapTokens"]
    assert "token" not in token  # kubeadm draws it on the master; nobody receives it
    assert token["ttl"] == "10m0s"
    assert init["localAPIEndpoint"] == {"advertiseAddress": MASTER_IP, "bindPort": 6443}
    assert cluster["controlPlaneEndpoint"] == f"{MASTER_IP}:6443" and cluster["networking"]["podSubnet"]
    text = json.dumps(doc)
    assert "--token-ttl" not in text and "--token " not in text
    assert files(doc)[k8s.INIT_CONFIG]["permissions"] == "0600"


def test_no_join_secret_is_in_the_master_user_data_or_its_engine_configuration() -> None:
    doc = master_doc()
    toml = tomllib.loads(
        master_marea_toml(cluster_file("kubernetes"), make_join_secrets("kubernetes", "phys"), MASTER_IP)
    )
    assert toml["worker"]["variables"] == {}
    assert not re.search(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b", json.dumps(doc)), "a bootstrap token in the user-data"
    assert "BEGIN RSA PRIVATE KEY" not in json.dumps(doc) and "/etc/kubernetes/pki/ca.key" not in files(doc)


def test_the_master_engine_reaches_the_api_with_its_own_kubeconfig() -> None:
    cf = cluster_file("kubernetes")
    data = tomllib.loads(master_marea_toml(cf, make_join_secrets("kubernetes", "phys"), MASTER_IP))
    cfg = MareaConfig.model_validate(data)  # parse_config refuses kubernetes while this build has no driver
    assert cfg.batch.kubernetes.kubeconfig == "/etc/marea/kubeconfig"
    assert cfg.batch.kubernetes.join_endpoint == f"{MASTER_IP}:6443"
    script = files(master_doc())[k8s.MASTER_SCRIPT]["content"]
    assert "(umask 077; cat >/etc/marea/kubeconfig <<EOF" in script
    assert "chmod 0600 /etc/marea/kubeconfig" in script and "chown root:root /etc/marea/kubeconfig" in script
    assert f"server: https://{MASTER_IP}:6443" in script


def test_the_metadata_guard_comes_first_on_the_master_and_the_workers() -> None:
    for doc in (master_doc(), json.loads(worker_text().removeprefix("#cloud-config\n"))):
        assert next(iter(doc)) == "bootcmd"
        assert doc["bootcmd"][0] == ["sh", "-c", METADATA_GUARD]


def test_the_worker_joins_with_the_drivers_token_labels_and_provider_id(tmp_path: Path) -> None:
    text = worker_text()
    assert "${" not in text
    assert schema_errors(tmp_path, text) == ""
    doc = json.loads(text.removeprefix("#cloud-config\n"))
    join_file = files(doc)[k8s.JOIN_CONFIG]
    assert join_file["permissions"] == "0600"
    join = json.loads(join_file["content"])
    assert check_kubeadm(join) == []
    assert join["discovery"]["bootstrapToken"] == {
        "token": "abcdef.0123456789abcdef",
        "apiServerEndpoint": "10.10.0.5:6443",
        "caCertHashes": ["sha256:" + "0" * 64],
    }
    registration = join["nodeRegistration"]
    assert registration["name"] == "phys-ab12"
    args = {a["name"]: a["value"] for a in registration["kubeletExtraArgs"]}
    assert args == {
        "node-labels": "marea.io/worker=phys-ab12,marea.io/cluster=phys,node.kubernetes.io/instance-type=m1.small",
        "provider-id": "marea://phys/phys-ab12",
    }
    assert doc["runcmd"] == ["set -e", [k8s.NODE_SCRIPT, "worker"], ["kubeadm", "join", "--config", k8s.JOIN_CONFIG],
                             ["rm", "-f", k8s.JOIN_CONFIG]]  # fmt: skip


def test_the_engine_identity_has_exactly_the_verbs_the_driver_needs_and_valid_objects() -> None:
    manifest = json.loads(files(master_doc())[k8s.RBAC_MANIFEST]["content"])
    for item in manifest["items"]:
        kubernetes_validate.validate(item, K8S_SCHEMA_VERSION, strict=True)
    by_kind = {item["kind"]: item for item in manifest["items"]}
    rules = {
        (r["apiGroups"][0], res): sorted(r["verbs"]) for r in by_kind["ClusterRole"]["rules"] for res in r["resources"]
    }
    # the rules of profiles/kubernetes-rbac.yaml, which tests/kube/test_rbac.py checks against the driver's calls
    assert rules == {
        ("", "nodes"): ["delete", "get", "list", "patch"],
        ("", "pods"): ["list"],
        ("", "pods/eviction"): ["create"],
    }
    role = by_kind["Role"]
    assert role["metadata"]["namespace"] == "kube-system"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]}]
    account = {"kind": "ServiceAccount", "name": "marea-engine", "namespace": "kube-system"}
    assert by_kind["ClusterRoleBinding"]["subjects"] == [account] == by_kind["RoleBinding"]["subjects"]
    assert by_kind["Secret"]["type"] == "kubernetes.io/service-account-token"


def test_the_rbac_check_can_fail() -> None:
    bad = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "x"},
           "rules": [{"apiGroup": [""], "verbs": ["get"]}]}  # fmt: skip
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_SCHEMA_VERSION, strict=True)


def test_every_download_is_pinned() -> None:
    doc = master_doc(with_addons(cluster_file("kubernetes"), monitoring=True, spark_operator=True, strimzi=True))
    node = files(doc)[k8s.NODE_SCRIPT]["content"]
    assert "pkgs.k8s.io/core:/stable:/$minor/deb/" in node and "minor=v1.31" in node
    assert f"fpr={k8s.K8S_KEY_FINGERPRINT}" in node and '[ "$got" = "$fpr" ]' in node
    assert re.fullmatch(r"[0-9A-F]{40}", k8s.K8S_KEY_FINGERPRINT)
    master = files(doc)[k8s.MASTER_SCRIPT]["content"]
    assert re.fullmatch(r"[0-9a-f]{64}", k8s.HELM_SHA256)
    assert f'echo "{k8s.HELM_SHA256}  /tmp/marea-helm.tgz" | sha256sum -c -' in master
    installs = [line for line in master.splitlines() if line.startswith("helm ")]
    assert [line.split()[4] for line in installs] == [
        "flannel", "kube-prometheus-stack", "spark-operator", "strimzi-kafka-operator",
    ]  # fmt: skip
    for line in installs:
        version = line.split("--version ")[1].split()[0]
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", version), line
        assert "--repo https://" in line
    # Grafana's admin password is made on the master, never the chart's public default
    assert "head -c 24 /dev/urandom" in master and "prom-operator" not in master


def test_the_scripts_are_valid_shell() -> None:
    doc = master_doc(with_addons(cluster_file("kubernetes"), monitoring=True, strimzi=True))
    for path in (k8s.NODE_SCRIPT, k8s.MASTER_SCRIPT):
        text = files(doc)[path]["content"]
        assert text.startswith("#!/bin/sh\n") and "set -eu" in text
        r = subprocess.run(["sh", "-n"], input=text, text=True, capture_output=True)
        assert r.returncode == 0, f"{path}: {r.stderr}"


def test_no_addon_no_chart_and_kubernetes_monitoring_is_not_debians_prometheus(tmp_path: Path) -> None:
    plain = files(master_doc())[k8s.MASTER_SCRIPT]["content"]
    assert [line.split()[4] for line in plain.splitlines() if line.startswith("helm ")] == ["flannel"]
    doc = master_doc(with_addons(cluster_file("kubernetes"), monitoring=True))
    assert "prometheus" not in doc["packages"]
    text = master_user_data(with_addons(cluster_file("kubernetes"), monitoring=True, spark_operator=True),
                            make_join_secrets("kubernetes", "phys"), MASTER_IP, "clouds: {}\n")  # fmt: skip
    assert schema_errors(tmp_path, text) == ""


@pytest.mark.parametrize("addon", ["spark_operator", "strimzi"])
@pytest.mark.parametrize("system", ["slurm", "htcondor"])
def test_kubernetes_addons_are_refused_elsewhere_naming_the_key(system: str, addon: str) -> None:
    data = {
        "cluster": {"name": "phys"},
        "cloud": {"driver": "openstack", "openstack": {"cloud": "demo", "image": "img", "network": "net"}},
        "batch": {"system": system},
        "master": {"flavour": "m", "floating_network": "public"},
        "addons": {addon: True},
    }
    with pytest.raises(ConfigError) as info:
        parse_cluster(data, "cluster.toml")
    assert str(info.value) == f"cluster.toml: addons.{addon}: needs batch.system 'kubernetes', not {system!r}"


def test_the_master_writes_the_engines_kubeconfig_root_only_and_loadable(tmp_path: Path) -> None:
    """The script's own lines that write the kubeconfig, run by sh on a CA file and a token: the result is a
    kubeconfig (as kubectl and the Python client read it) that only its owner can read."""
    import yaml

    script = files(master_doc())[k8s.MASTER_SCRIPT]["content"]
    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('ca="$(base64'))
    end = next(i for i, line in enumerate(lines) if line.startswith("chmod 0600"))
    ca, kubeconfig = tmp_path / "ca.crt", tmp_path / "kubeconfig"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    part = "\n".join(line for line in lines[start : end + 1] if not line.startswith("chown "))
    part = part.replace("/etc/kubernetes/pki/ca.crt", str(ca)).replace(k8s.KUBECONFIG, str(kubeconfig))
    r = subprocess.run(["sh", "-euc", 'token="eyJ.secret.sig"\n' + part], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert kubeconfig.stat().st_mode & 0o777 == 0o600
    config = yaml.safe_load(kubeconfig.read_text())
    assert config["current-context"] == "marea"
    (cluster,) = config["clusters"]
    assert cluster["cluster"]["server"] == f"https://{MASTER_IP}:6443"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == ca.read_bytes()
    assert config["users"] == [{"name": "marea-engine", "user": {"token": "eyJ.secret.sig"}}]


def test_the_master_installs_marea_with_the_kubernetes_client() -> None:
    runcmd = master_doc()["runcmd"]
    pip = next(step for step in runcmd if isinstance(step, list) and step[0] == "/opt/marea/bin/pip")
    assert pip[-1] == "marea[openstack,kubernetes]"
    # the system's steps first, marea's service last
    assert (
        runcmd.index([k8s.MASTER_SCRIPT])
        < runcmd.index(pip)
        < runcmd.index(["systemctl", "enable", "--now", "marea.service"])
    )


def test_a_kubernetes_cluster_file_with_addons_parses_once_the_driver_is_there() -> None:
    """With the driver (marea.batch.kubernetes, another branch), `marea cluster create` reads the file as it
    reads a Slurm or HTCondor one."""
    pytest.importorskip("marea.batch.kubernetes")
    data = {
        "cluster": {"name": "phys"},
        "cloud": {"driver": "openstack", "openstack": {"cloud": "demo", "image": "img", "network": "net"}},
        "batch": {"system": "kubernetes"},
        "master": {"flavour": "m", "floating_network": "public"},
        "addons": {"monitoring": True, "spark_operator": True, "strimzi": True},
    }
    cf = parse_cluster(data, "cluster.toml")
    assert cf.addons.enabled() == {"monitoring", "spark_operator", "strimzi"}
