"""The Kubernetes profile: a kubeadm control plane on the master, kubeadm-joined workers, marea on the master.

Versions are pinned, and every download is checked:
- kubelet, kubeadm (and kubectl on the master) of the minor K8S_MINOR from pkgs.k8s.io, whose signing key must
  have the fingerprint K8S_KEY_FINGERPRINT before apt trusts it; containerd is Debian's (SystemdCgroup on);
- helm HELM_VERSION, whose tarball must have the sha256 HELM_SHA256 (get.helm.sh's published checksum);
- the CNI (flannel) and the add-ons are helm charts at pinned chart versions (CHARTS).
A pre-baked image (CloudVeneto's Kubernetes image: containerd, kubelet and kubeadm installed) needs no setting:
the node script finds kubeadm and skips the repository; its kubeadm must be of K8S_MINOR, or the boot fails
saying so. The one thing that differs is that such an image needs no network to pkgs.k8s.io.

Join secrets: none in any user-data. `kubeadm init` makes the cluster CA on the master and a single bootstrap
token with a ten-minute TTL (kubeadm always makes one; nobody receives it). Each worker joins with a token the
engine's driver creates for it through the API with `batch.kubernetes.bootstrap_token_ttl_s`, the API endpoint
and the CA's public-key hash (its join variables MAREA_K8S_TOKEN, MAREA_K8S_ENDPOINT, MAREA_K8S_CA_HASH).
The engine talks to the API as the ServiceAccount `marea-engine` (RBAC below: only the verbs the driver uses),
through /etc/marea/kubeconfig (0600 root).

kubeadm configuration: API `kubeadm.k8s.io/v1beta4` (kubeadm >= 1.31; K8S_MINOR is 1.31), whose
`kubeletExtraArgs` is a list of {name, value}.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml

from marea.profiles import BatchProfile, MasterContext, MasterFragment
from marea.profiles.cloudconfig import document, plain_file

if TYPE_CHECKING:
    from marea.batch.base import BatchSystem
    from marea.config import MareaConfig

#: the Kubernetes minor every node installs (pkgs.k8s.io has one repository per minor)
K8S_MINOR = "v1.31"
#: the pkgs.k8s.io signing key ("isv:kubernetes OBS Project"), the same for every minor's repository
K8S_KEY_FINGERPRINT = "DE15B14486CD377B9E876E1A234654DA9A296436"
HELM_VERSION = "v3.16.3"
#: sha256 of https://get.helm.sh/helm-v3.16.3-linux-amd64.tar.gz (its published .sha256sum)
HELM_SHA256 = "f5355c79190951eed23c5432a3b920e071f4c00a64f75e077de0dd4cb7b294ea"
HELM_URL = f"https://get.helm.sh/helm-{HELM_VERSION}-linux-amd64.tar.gz"
KUBEADM_API = "kubeadm.k8s.io/v1beta4"
API_PORT = 6443
KUBELET_PORT = 10250
#: flannel's VXLAN between every two nodes (UDP)
FLANNEL_VXLAN_PORT = 8472
POD_SUBNET = "10.244.0.0/16"
CRI_SOCKET = "unix:///run/containerd/containerd.sock"
#: the engine's identity in the cluster, and where its kubeconfig lives on the master
SERVICE_ACCOUNT = "marea-engine"
NAMESPACE = "kube-system"
KUBECONFIG = "/etc/marea/kubeconfig"
#: the lifetime of the one token `kubeadm init` always makes (unused: workers get theirs from the engine)
INIT_TOKEN_TTL = "10m0s"
NODE_SCRIPT = "/usr/local/sbin/marea-k8s-node"
MASTER_SCRIPT = "/usr/local/sbin/marea-k8s-master"
JOIN_CONFIG = "/etc/marea/kubeadm-join.json"
INIT_CONFIG = "/etc/marea/kubeadm-init.yaml"
RBAC_MANIFEST = "/etc/marea/k8s/rbac.json"


class Chart:
    """A helm chart at a pinned version, installed into its own namespace."""

    def __init__(self, release: str, chart: str, repo: str, version: str, namespace: str) -> None:
        self.release, self.chart, self.repo, self.version, self.namespace = release, chart, repo, version, namespace

    def install(self, values: str = "") -> str:
        command = (
            f"helm upgrade --install {self.release} {self.chart} --repo {self.repo} --version {self.version}"
            f" --namespace {self.namespace} --create-namespace"
        )
        return command + (f" --values {values}" if values else "")


FLANNEL = Chart("flannel", "flannel", "https://flannel-io.github.io/flannel/", "v0.26.1", "kube-flannel")
#: the add-ons of seed 004, by their `[addons]` key
CHARTS: dict[str, Chart] = {
    # Prometheus (operator), Alertmanager, node exporters on every node, and Grafana with Kubernetes dashboards
    "monitoring": Chart(
        "monitoring", "kube-prometheus-stack", "https://prometheus-community.github.io/helm-charts", "66.2.1",
        "monitoring",
    ),
    "spark_operator": Chart(
        "spark-operator", "spark-operator", "https://kubeflow.github.io/spark-operator", "2.0.2", "spark-operator"
    ),
    "strimzi": Chart("strimzi", "strimzi-kafka-operator", "https://strimzi.io/charts/", "0.44.0", "kafka"),
}  # fmt: skip
#: Grafana's admin password: made on the master at boot, never in the user-data (the chart's default is public)
GRAFANA_PASSWORD_FILE = "/etc/marea/grafana-admin-password"


def make_driver(cfg: MareaConfig) -> BatchSystem:
    from marea.batch.kubernetes import KubernetesBatch

    kube = cfg.batch.kubernetes
    path = {"kubeconfig": str(cfg.path(kube.kubeconfig))} if kube.kubeconfig else {}
    # the cluster name: the driver recognises its Nodes by the cluster label and providerID
    return KubernetesBatch(kube.model_copy(update=path), cluster=cfg.cluster.name)


# -- both roles ------------------------------------------------------------------------------------------------
def node_script() -> str:
    """Prepare a node of either role: kernel settings, containerd, kubelet and kubeadm of the pinned minor."""
    return f"""#!/bin/sh
# marea: make this machine a Kubernetes node ({K8S_MINOR}); $1 is master or worker
set -eu
role="$1"
minor={K8S_MINOR}
fpr={K8S_KEY_FINGERPRINT}
fail() {{ echo "marea: $*" >&2; exit 1; }}
printf 'overlay\\nbr_netfilter\\n' >/etc/modules-load.d/marea-k8s.conf
modprobe overlay && modprobe br_netfilter || fail "cannot load the kernel modules overlay and br_netfilter"
printf '%s = 1\\n' net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.ipv4.ip_forward \\
  >/etc/sysctl.d/90-marea-k8s.conf
sysctl --system >/dev/null || fail "cannot apply the kernel settings Kubernetes needs (ip_forward, bridge-nf-call)"
swapoff -a
sed -i '/[[:space:]]swap[[:space:]]/s/^/#/' /etc/fstab
if command -v kubeadm >/dev/null 2>&1; then
  # a pre-baked image: its own kubeadm, which must be of the pinned minor
  have="$(kubeadm version -o short)"
  case "$have" in "$minor".*) ;; *) fail "this image's kubeadm is $have, the cluster is pinned to $minor" ;; esac
else
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y containerd curl gpg ca-certificates
  install -d -m 0755 /etc/apt/keyrings
  curl -fsSL "https://pkgs.k8s.io/core:/stable:/$minor/deb/Release.key" -o /tmp/marea-k8s.key \\
    || fail "cannot download the Kubernetes package key from pkgs.k8s.io"
  got="$(gpg --show-keys --with-colons /tmp/marea-k8s.key | awk -F: '$1 == "fpr" {{ print $10; exit }}')"
  [ "$got" = "$fpr" ] || fail "the pkgs.k8s.io key has fingerprint '$got', expected $fpr"
  gpg --dearmor --batch --yes -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg /tmp/marea-k8s.key
  rm -f /tmp/marea-k8s.key
  echo "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/$minor/deb/ /" \\
    >/etc/apt/sources.list.d/kubernetes.list
  apt-get update
  pkgs="kubelet kubeadm"
  [ "$role" = master ] && pkgs="$pkgs kubectl"
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y $pkgs || fail "cannot install $pkgs from pkgs.k8s.io"
  # shellcheck disable=SC2086
  apt-mark hold $pkgs
fi
mkdir -p /etc/containerd
containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' >/etc/containerd/config.toml
systemctl restart containerd
systemctl enable kubelet
"""


# -- workers ---------------------------------------------------------------------------------------------------
def join_configuration() -> dict[str, Any]:
    """The worker's kubeadm JoinConfiguration, with the placeholders the engine fills for each worker. The
    labels and the provider id are how the engine's driver tells its Nodes (and their flavours) apart."""
    labels = ",".join(
        [
            "marea.io/worker=${MAREA_NAME}",
            "marea.io/cluster=${MAREA_CLUSTER}",
            "node.kubernetes.io/instance-type=${MAREA_FLAVOUR}",
        ]
    )
    return {
        "apiVersion": KUBEADM_API,
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "token": "${MAREA_K8S_TOKEN}",
                "apiServerEndpoint": "${MAREA_K8S_ENDPOINT}",
                "caCertHashes": ["${MAREA_K8S_CA_HASH}"],
            }
        },
        "nodeRegistration": {
            "name": "${MAREA_NAME}",
            "criSocket": CRI_SOCKET,
            "kubeletExtraArgs": [
                {"name": "node-labels", "value": labels},
                {"name": "provider-id", "value": "marea://${MAREA_CLUSTER}/${MAREA_NAME}"},
            ],
        },
    }


def worker_template() -> str:
    return document(
        {
            "write_files": [
                plain_file(NODE_SCRIPT, node_script(), "0755"),
                # holds the worker's bootstrap token (short-lived, and deleted once the node joined)
                plain_file(JOIN_CONFIG, json.dumps(join_configuration(), indent=2) + "\n", "0600"),
            ],
            "runcmd": [
                [NODE_SCRIPT, "worker"],
                ["kubeadm", "join", "--config", JOIN_CONFIG],
                ["rm", "-f", JOIN_CONFIG],
            ],
        }
    )


# -- master ----------------------------------------------------------------------------------------------------
def init_configuration(ctx: MasterContext) -> list[dict[str, Any]]:
    """`kubeadm init`'s InitConfiguration and ClusterConfiguration."""
    name = ctx.cfg.cluster.name
    init = {
        "apiVersion": KUBEADM_API,
        "kind": "InitConfiguration",
        # kubeadm always makes a token (an empty list is defaulted to one valid 24 h): make it short and unused
        "bootstrapTokens": [
            {
                "description": "made by kubeadm init, unused: marea creates a token per worker",
                "ttl": INIT_TOKEN_TTL,
                "usages": ["signing", "authentication"],
                "groups": ["system:bootstrappers:kubeadm:default-node-token"],
            }
        ],
        "localAPIEndpoint": {"advertiseAddress": ctx.master_ip, "bindPort": API_PORT},
        "nodeRegistration": {"name": f"{name}-master", "criSocket": CRI_SOCKET},
    }
    cluster = {
        "apiVersion": KUBEADM_API,
        "kind": "ClusterConfiguration",
        "clusterName": name,
        "controlPlaneEndpoint": f"{ctx.master_ip}:{API_PORT}",
        "networking": {"podSubnet": POD_SUBNET},
        "apiServer": {"certSANs": [ctx.master_ip]},
    }
    return [init, cluster]


def rbac_manifest() -> dict[str, Any]:
    """The engine's identity: the ServiceAccount and roles of `kubernetes-rbac.yaml` (only the verbs the driver
    uses: tests/kube/test_rbac.py checks every call of a worker's life against that file), and a token Secret the
    master's kubeconfig is made from (revoked by deleting the Secret)."""
    text = resources.files("marea.profiles").joinpath("kubernetes-rbac.yaml").read_text()
    items: list[dict[str, Any]] = [doc for doc in yaml.safe_load_all(text) if doc]
    items.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": f"{SERVICE_ACCOUNT}-token",
                "namespace": NAMESPACE,
                "annotations": {"kubernetes.io/service-account.name": SERVICE_ACCOUNT},
            },
        }
    )
    return {"apiVersion": "v1", "kind": "List", "items": items}


def addon_commands(addons: frozenset[str]) -> str:
    """Shell lines installing the chosen add-ons (in CHARTS order)."""
    lines: list[str] = []
    for key, chart in CHARTS.items():
        if key not in addons:
            continue
        if key == "monitoring":
            values = "/etc/marea/k8s/monitoring-values.json"
            password = GRAFANA_PASSWORD_FILE
            lines += [
                f"[ -s {password} ] || (umask 077; head -c 24 /dev/urandom | base64 >{password})",
                f'(umask 077; printf \'{{"grafana": {{"adminPassword": "%s"}}}}\\n\' "$(cat {password})" >{values})',
                chart.install(values),
            ]
        else:
            lines.append(chart.install())
    return "\n".join(lines)


def master_script(ctx: MasterContext) -> str:
    """The master's steps after the node script: init, helm, CNI, the engine's identity, the add-ons."""
    server = f"https://{ctx.master_ip}:{API_PORT}"
    secret = f"{SERVICE_ACCOUNT}-token"
    return f"""#!/bin/sh
# marea: the Kubernetes control plane, marea's identity in it, the CNI and the add-ons
set -eu
fail() {{ echo "marea: $*" >&2; exit 1; }}
{NODE_SCRIPT} master
kubeadm init --config {INIT_CONFIG} --skip-token-print || fail "kubeadm init failed (journalctl -u kubelet)"
export KUBECONFIG=/etc/kubernetes/admin.conf
curl -fsSL {HELM_URL} -o /tmp/marea-helm.tgz || fail "cannot download helm {HELM_VERSION}"
echo "{HELM_SHA256}  /tmp/marea-helm.tgz" | sha256sum -c - >/dev/null || fail "helm {HELM_VERSION}: checksum mismatch"
tar -xzf /tmp/marea-helm.tgz -C /tmp linux-amd64/helm
install -m 0755 /tmp/linux-amd64/helm /usr/local/bin/helm
rm -rf /tmp/marea-helm.tgz /tmp/linux-amd64
{FLANNEL.install()} --set podCidr={POD_SUBNET} || fail "cannot install the CNI (flannel) with helm"
kubectl apply -f {RBAC_MANIFEST}
token=""
for _ in $(seq 60); do
  token="$(kubectl -n {NAMESPACE} get secret {secret} -o jsonpath='{{.data.token}}' | base64 -d)"
  [ -n "$token" ] && break
  sleep 2
done
[ -n "$token" ] || fail "no token for the ServiceAccount {SERVICE_ACCOUNT}"
ca="$(base64 -w0 /etc/kubernetes/pki/ca.crt)"
# a here-document: the token never shows in a process list
(umask 077; cat >{KUBECONFIG} <<EOF
apiVersion: v1
kind: Config
clusters:
- name: marea
  cluster:
    server: {server}
    certificate-authority-data: $ca
users:
- name: {SERVICE_ACCOUNT}
  user:
    token: $token
contexts:
- name: marea
  context:
    cluster: marea
    user: {SERVICE_ACCOUNT}
current-context: marea
EOF
)
chown root:root {KUBECONFIG}
chmod 0600 {KUBECONFIG}
{addon_commands(ctx.addons)}
"""


def master_fragment(ctx: MasterContext) -> MasterFragment:
    init_yaml = "---\n".join(json.dumps(doc, indent=2) + "\n" for doc in init_configuration(ctx))
    return MasterFragment(
        packages=["curl", "gpg", "ca-certificates"],
        write_files=[
            plain_file(NODE_SCRIPT, node_script(), "0755"),
            plain_file(INIT_CONFIG, init_yaml, "0600"),
            plain_file(RBAC_MANIFEST, json.dumps(rbac_manifest(), indent=2) + "\n", "0644"),
            plain_file(MASTER_SCRIPT, master_script(ctx), "0700"),
        ],
        runcmd=[[MASTER_SCRIPT]],
        engine_settings={"kubeconfig": KUBECONFIG, "join_endpoint": f"{ctx.master_ip}:{API_PORT}"},
    )


PROFILE = BatchProfile(
    name="kubernetes",
    make_driver=make_driver,
    worker_template=worker_template,
    master_fragment=master_fragment,
    master_ports=(API_PORT, KUBELET_PORT),
    worker_ports=(KUBELET_PORT,),
    master_udp_ports=(FLANNEL_VXLAN_PORT,),
    worker_udp_ports=(FLANNEL_VXLAN_PORT,),
    join_variables=("MAREA_K8S_ENDPOINT", "MAREA_K8S_TOKEN", "MAREA_K8S_CA_HASH"),
    addons=frozenset(CHARTS),
    host_monitoring=False,
    extras=("openstack", "kubernetes"),
)
