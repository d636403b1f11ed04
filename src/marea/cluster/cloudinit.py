"""Cloud-init user-data for the master and the workers, per batch system.

Both are `#cloud-config` documents, so any image that runs cloud-init works, and both pass cloud-init's own
schema validation (tested with Debian's `cloud-init schema`). The master installs the batch system's central
manager and marea, and runs `marea run` with the admin's cluster file plus the worker template below. Worker
templates carry `${MAREA_*}` placeholders that the engine fills for each worker (name, cores, memory) and
`${MAREA_VAR_*}` join parameters that come from the master's `[worker.variables]`.

Files holding secrets are written with mode 0600/0400 and `defer: true` (after packages created their users).
The user-data itself holds join secrets (the munge key, the HTCondor token): its first act shuts every user but
root out of the metadata service that would hand it back (METADATA_GUARD; docs/security.md).
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlsplit

from marea.batch.base import HTCONDOR_WORKER_ATTR as WORKER_ATTR
from marea.cluster import monitoring
from marea.cluster.config import ClusterFile
from marea.cluster.joins import JoinSecrets
from marea.cluster.tomlout import dumps

SLURMCTLD_PORT = 6817
#: on the master: where the engine revokes the IDTOKEN of each worker it removed (HTCondor reads config.d)
TOKEN_REVOCATION_FILE = "/etc/condor/config.d/60-marea-revoked.conf"


def worker_token_command(domain: str) -> list[str]:
    """What the master's engine runs for each worker it boots: a token of the worker's own, signed with the pool
    key, that lets a startd join and nothing more (marea/batch/htcondor_tokens.py)."""
    return [
        "condor_token_create", "-identity", f"condor@{domain}", "-key", "POOL",
        "-authz", "ADVERTISE_STARTD", "-authz", "ADVERTISE_MASTER", "-authz", "READ",
    ]  # fmt: skip


#: TCP ports the master must accept from workers, per system (SSH is opened to the admin's CIDR apart)
MASTER_PORTS: dict[str, list[int]] = {
    "slurm": [SLURMCTLD_PORT],
    "htcondor": [9618],
    "kubernetes": [6443, 10250],
}
#: TCP ports workers must accept from the cluster (the master and each other)
WORKER_PORTS: dict[str, list[int]] = {
    "slurm": [6818],
    "htcondor": [9618],
    "kubernetes": [10250],
}


#: the metadata service, where anyone on the VM can read its user-data (the join secrets) back
METADATA_V4, METADATA_V6 = "169.254.169.254", "fe80::a9fe:a9fe"
#: the first act of every marea user-data (`bootcmd`, at every boot, before SSH logins or jobs are possible): only
#: root may reach the metadata service (cloud-init has read it by then). With nftables, else iptables; an image
#: with neither gets a `prohibit` route, which shuts root out too (nothing after boot needs the service).
METADATA_GUARD = (
    "(nft add table inet marea_guard"
    " && nft 'add chain inet marea_guard output { type filter hook output priority 0; policy accept; }'"
    " && nft flush chain inet marea_guard output"
    f" && nft add rule inet marea_guard output ip daddr {METADATA_V4} meta skuid != 0 reject"
    f" && nft add rule inet marea_guard output ip6 daddr {METADATA_V6} meta skuid != 0 reject)"
    f" || (iptables -C OUTPUT -d {METADATA_V4} -m owner ! --uid-owner 0 -j REJECT"
    f" || iptables -I OUTPUT -d {METADATA_V4} -m owner ! --uid-owner 0 -j REJECT)"
    f" || ip route replace prohibit {METADATA_V4}/32"
)


def _doc(body: dict[str, Any]) -> str:
    # JSON is YAML: cloud-init reads it as a #cloud-config document, and marea needs no YAML library
    body = {"bootcmd": [["sh", "-c", METADATA_GUARD]], **body}
    if "runcmd" in body:
        # cloud-init writes runcmd as one shell script and judges it by its last command: stop at the first
        # failure, so a failed step shows as `cloud-init status: error` instead of a broken service later
        body = {**body, "runcmd": ["set -e", *body["runcmd"]]}
    return "#cloud-config\n" + json.dumps(body, indent=2) + "\n"


def _file(path: str, content: str, mode: str = "0644", **extra: Any) -> dict[str, Any]:
    return {"path": path, "content": content, "permissions": mode, **extra}


def _secret_file(path: str, content_b64: str, owner: str, mode: str = "0400") -> dict[str, Any]:
    return {
        "path": path,
        "encoding": "b64",
        "content": content_b64,
        "owner": owner,
        "permissions": mode,
        "defer": True,
    }


# -- workers ---------------------------------------------------------------------------------------------------
def worker_template(system: str) -> str:
    """The worker user-data template the master's engine renders for every worker it boots."""
    if system == "slurm":
        body: dict[str, Any] = {
            "packages": ["slurmd", "munge"],
            "write_files": [_secret_file("/etc/munge/munge.key", "${MAREA_VAR_MUNGE_KEY}", "munge:munge")],
            "runcmd": [
                ["systemctl", "restart", "munge"],
                ["systemctl", "disable", "--now", "slurmd"],
                ["mkdir", "-p", "/var/spool/slurmd"],
                [
                    "sh",
                    "-c",
                    "slurmd -Z -N ${MAREA_NAME} --conf-server ${MAREA_VAR_SLURM_CONTROLLER} "
                    '--conf "CPUs=${MAREA_CORES} RealMemory=${MAREA_MEMORY_MB} Feature=${MAREA_VAR_SLURM_FEATURE}"',
                ],
            ],
        }
    elif system == "htcondor":
        body = {
            "packages": ["htcondor"],
            "write_files": [
                _file(
                    "/etc/condor/config.d/50-marea.conf",
                    "CONDOR_HOST = ${MAREA_CONDOR_HOST}\nuse ROLE: Execute\n"
                    + _condor_security("${MAREA_VAR_CONDOR_DOMAIN}")
                    # one partitionable slot of the flavour's size (the VM may see more of the host than it has)
                    + "NUM_CPUS = ${MAREA_CORES}\nMEMORY = ${MAREA_MEMORY_MB}\nuse FEATURE: PartitionableSlot\n"
                    + f'STARTD_ATTRS = $(STARTD_ATTRS) {WORKER_ATTR}\n{WORKER_ATTR} = "${{MAREA_NAME}}"\n',
                ),
                {
                    "path": "/etc/condor/tokens.d/marea-worker",
                    "content": "${MAREA_CONDOR_IDTOKEN}\n",
                    "permissions": "0600",
                    "defer": True,
                },
            ],
            "runcmd": [["systemctl", "enable", "condor"], ["systemctl", "restart", "condor"]],
        }
    else:
        body = {
            "packages": ["kubeadm", "kubelet", "containerd"],
            "runcmd": [
                [
                    "kubeadm",
                    "join",
                    "${MAREA_VAR_K8S_ENDPOINT}",
                    "--token",
                    "${MAREA_VAR_K8S_TOKEN}",
                    "--discovery-token-ca-cert-hash",
                    "${MAREA_VAR_K8S_CA_HASH}",
                    "--node-name",
                    "${MAREA_NAME}",
                ]
            ],
        }
    return _doc(body)


def condor_domain(cluster: str) -> str:
    """UID_DOMAIN and TRUST_DOMAIN of the pool: the same on the master and every worker (by default each
    machine's own host name, which would make users differ between them and tokens untrusted)."""
    return f"{cluster}.marea"


def _condor_security(domain: str) -> str:
    """Security shared by the master and the workers: HTCondor's recommended settings, IDTOKENS signed with
    the pool key, which lives in one path on every distribution (Debian's default is under /var/lib)."""
    return (
        "use SECURITY: recommended_v9_0\n"
        f"UID_DOMAIN = {domain}\nTRUST_DOMAIN = {domain}\n"
        "SEC_PASSWORD_DIRECTORY = /etc/condor/passwords.d\n"
        "SEC_TOKEN_POOL_SIGNING_KEY_FILE = /etc/condor/passwords.d/POOL\n"
    )


def worker_variables(
    system: str, joins: JoinSecrets, master_ip: str, feature: str = "marea", cluster: str = "marea"
) -> dict[str, str]:
    """The `[worker.variables]` of the master's marea.toml (exposed to templates as MAREA_VAR_<NAME>)."""
    if system == "slurm":
        return {
            "slurm_controller": f"{master_ip}:{SLURMCTLD_PORT}",
            "slurm_feature": feature,
            "munge_key": joins.munge_key_b64,
        }
    if system == "htcondor":
        # the collector and the worker token come from the engine's htcondor driver (batch.htcondor)
        return {"condor_domain": condor_domain(cluster)}
    return {
        "k8s_endpoint": f"{master_ip}:6443",
        "k8s_token": joins.kubeadm_token,
        "k8s_ca_hash": joins.k8s_ca_hash,
    }


# -- master ----------------------------------------------------------------------------------------------------
def master_marea_toml(cf: ClusterFile, joins: JoinSecrets, master_ip: str) -> str:
    """The marea.toml the master's engine runs: the admin's file, the worker template, the join variables."""
    data: dict[str, Any] = {k: v for k, v in cf.marea_data.items() if k != "worker"}
    cluster = dict(data.get("cluster", {}))
    cluster["state"] = "/var/lib/marea/state.db"
    data["cluster"] = cluster
    system = cf.marea.batch.system
    feature = cf.marea.batch.slurm.feature
    variables = {
        **cf.marea.worker.variables,
        **worker_variables(system, joins, master_ip, feature, cf.marea.cluster.name),
    }
    if system == "htcondor":  # the engine reads the pool at the master, and mints each worker a token of its own
        batch = dict(data.get("batch", {}))
        batch["htcondor"] = {
            **batch.get("htcondor", {}),
            "collector": master_ip,
            "token_command": worker_token_command(condor_domain(cf.marea.cluster.name)),
            "revocation_file": TOKEN_REVOCATION_FILE,
        }
        data["batch"] = batch
    # [worker] last and [worker.variables] last in it: the master appends the HTCondor IDTOKEN at boot
    data["worker"] = {"user_data": monitoring.add_to_worker(cf, worker_template(system)), "variables": variables}
    return dumps(data)


#: a node that never runs: it gives the partition the size of the largest flavour, so that Slurm (24.11 refuses
#: jobs for a partition without nodes) accepts jobs while no worker exists, and refuses at submission a job no
#: flavour can hold. Drained in slurm.conf, it never gets work; its pending jobs show ReqNodeNotAvail, which
#: marea counts as demand. It carries no feature, so marea never takes it for a worker.
TEMPLATE_NODE = "marea-template"


def _slurm_conf(cf: ClusterFile, master_ip: str) -> str:
    s = cf.marea.batch.slurm
    flavours = cf.marea.flavours
    cores = max((f.cores for f in flavours), default=1)
    memory = max((f.memory_mb for f in flavours), default=1)
    gpus = max((f.gpus for f in flavours), default=0)
    template = (
        f"NodeName={TEMPLATE_NODE} NodeAddr=127.0.0.2 CPUs={cores} RealMemory={memory}"
        + (f" Gres=gpu:{gpus}" if gpus else "")
        + " State=DRAIN Reason=marea_template_never_runs_jobs"
    )
    lines = [
        f"ClusterName={cf.marea.cluster.name}",
        f"SlurmctldHost={cf.marea.cluster.name}-master({master_ip})",
        "SlurmctldParameters=enable_configless",
        "AuthType=auth/munge",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        # the template node counts against MaxNodeCount
        f"MaxNodeCount={max(1, cf.marea.policy.max_workers) + 1}",
        "TreeWidth=65533",
        "ReturnToService=2",
        "SlurmUser=slurm",
        "StateSaveLocation=/var/lib/slurm/slurmctld",
        "SlurmdSpoolDir=/var/lib/slurm/slurmd",
        *(["GresTypes=gpu"] if gpus else []),
        *cf.master.slurm_conf,
        template,
        f"NodeSet=marea Feature={s.feature}",
        f"PartitionName={s.partition} Nodes=marea,{TEMPLATE_NODE} Default=YES MaxTime=INFINITE State=UP",
        "",
    ]
    return "\n".join(lines)


def _install_marea(cf: ClusterFile) -> list[list[str]]:
    """marea into its own venv on the master, from PyPI or from `master.pip_find_links` (no index there)."""
    source: list[str] = []
    if cf.master.pip_find_links:
        source = ["--no-index", "--find-links", cf.master.pip_find_links]
        url = urlsplit(cf.master.pip_find_links)
        if url.scheme == "http" and url.hostname:  # the admin named this plain-HTTP page: pip must accept it
            source += ["--trusted-host", url.hostname]
    return [
        ["python3", "-m", "venv", "/opt/marea"],
        ["/opt/marea/bin/pip", "install", "--quiet", *source, cf.master.package(cf.marea.batch.system)],
        ["ln", "-sf", "/opt/marea/bin/marea", "/usr/local/bin/marea"],
    ]


def master_user_data(cf: ClusterFile, joins: JoinSecrets, master_ip: str, clouds_yaml: str) -> str:
    """The master's #cloud-config. `clouds_yaml` holds the master's own application credential."""
    system = cf.marea.batch.system
    toml = master_marea_toml(cf, joins, master_ip)
    files: list[dict[str, Any]] = [
        {
            "path": "/etc/marea/marea.toml",
            "encoding": "b64",
            "content": base64.b64encode(toml.encode()).decode(),
            "permissions": "0600",
        },
        {
            "path": "/etc/marea/clouds.yaml",
            "encoding": "b64",
            "content": base64.b64encode(clouds_yaml.encode()).decode(),
            "permissions": "0600",
        },
    ]
    runcmd: list[Any]
    if system == "slurm":
        packages = ["slurmctld", "slurm-client", "munge", "python3-venv"]
        files += [
            _secret_file("/etc/munge/munge.key", joins.munge_key_b64, "munge:munge"),
            _file("/etc/slurm/slurm.conf", _slurm_conf(cf, master_ip), defer=True),
        ]
        runcmd = [
            ["systemctl", "enable", "munge", "slurmctld"],
            ["systemctl", "restart", "munge"],
            ["systemctl", "restart", "slurmctld"],
        ]
    elif system == "htcondor":
        packages = ["htcondor", "python3-venv"]
        domain = condor_domain(cf.marea.cluster.name)
        files += [
            _file(
                "/etc/condor/config.d/50-marea.conf",
                f"CONDOR_HOST = {master_ip}\nuse ROLE: CentralManager\nuse ROLE: Submit\n" + _condor_security(domain),
                defer=True,
            ),
            _secret_file("/etc/condor/passwords.d/POOL", joins.condor_signing_key_b64, "root:root", "0600"),
        ]
        runcmd = [
            ["systemctl", "enable", "condor"],
            ["systemctl", "restart", "condor"],
            # the engine's own token: workers' startds accept a drain and a shutdown only from an authenticated
            # administrator. In root's token directory, which the Python bindings read (they do not read the
            # daemons' /etc/condor/tokens.d)
            [
                "sh",
                "-c",
                "umask 077 && mkdir -p /root/.condor/tokens.d && "
                f"condor_token_create -identity condor@{domain} -key POOL -authz ADMINISTRATOR -authz READ "
                "> /root/.condor/tokens.d/marea-engine",
            ],
        ]
    else:
        packages = ["kubeadm", "kubelet", "kubectl", "containerd", "python3-venv"]
        files += [
            _file("/etc/kubernetes/pki/ca.crt", joins.k8s_ca_cert_pem),
            {
                "path": "/etc/kubernetes/pki/ca.key",
                "encoding": "b64",
                "content": base64.b64encode(joins.k8s_ca_key_pem.encode()).decode(),
                "permissions": "0600",
            },
        ]
        runcmd = [
            [
                "kubeadm",
                "init",
                "--token",
                joins.kubeadm_token,
                "--token-ttl",
                "0",
                "--apiserver-advertise-address",
                master_ip,
                "--control-plane-endpoint",
                f"{master_ip}:6443",
            ]
        ]
    runcmd += [
        ["mkdir", "-p", "/var/lib/marea"],
        *_install_marea(cf),
        # the unit shipped in the package (hardened: src/marea/systemd/marea.service), with this ExecStart
        ["/opt/marea/bin/marea", "systemd", "install", "--config", "/etc/marea/marea.toml"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "marea.service"],
    ]
    body = {
        "hostname": f"{cf.marea.cluster.name}-master",
        "package_update": True,
        "packages": packages,
        "write_files": files,
        "runcmd": runcmd,
    }
    return _doc(monitoring.add_to_master(cf, body))
