"""The HTCondor profile: a central manager + submit node on the master, startd-only workers.

Every machine shares the pool's UID_DOMAIN/TRUST_DOMAIN and signing key (made at create); the engine on the
master mints each worker an IDTOKEN of its own (`token_command`), revoked when the worker is removed. The
worker template takes the collector and the token from the driver's join variables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from marea.batch.base import HTCONDOR_WORKER_ATTR as WORKER_ATTR
from marea.profiles import BatchProfile, MasterContext, MasterFragment
from marea.profiles.cloudconfig import document, plain_file, secret_file

if TYPE_CHECKING:
    from marea.batch.base import BatchSystem
    from marea.config import MareaConfig

CONDOR_PORT = 9618
#: on the master: where the engine revokes the IDTOKEN of each worker it removed (HTCondor reads config.d)
TOKEN_REVOCATION_FILE = "/etc/condor/config.d/60-marea-revoked.conf"


def make_driver(cfg: MareaConfig) -> BatchSystem:
    from marea.batch.htcondor import HTCondorBatch

    hc = cfg.batch.htcondor
    files = {
        k: str(cfg.path(v))
        for k in ("condor_config", "token_file", "revocation_file", "token_registry")
        if (v := getattr(hc, k))
    }
    return HTCondorBatch(hc.model_copy(update=files))


def worker_token_command(domain: str) -> list[str]:
    """What the master's engine runs for each worker it boots: a token of the worker's own, signed with the pool
    key, that lets a startd join and nothing more (marea/batch/htcondor_tokens.py)."""
    return [
        "condor_token_create", "-identity", f"condor@{domain}", "-key", "POOL",
        "-authz", "ADVERTISE_STARTD", "-authz", "ADVERTISE_MASTER", "-authz", "READ",
    ]  # fmt: skip


def condor_domain(cluster: str) -> str:
    """UID_DOMAIN and TRUST_DOMAIN of the pool: the same on the master and every worker (by default each
    machine's own host name, which would make users differ between them and tokens untrusted)."""
    return f"{cluster}.marea"


def condor_security(domain: str) -> str:
    """Security shared by the master and the workers: HTCondor's recommended settings, IDTOKENS signed with
    the pool key, which lives in one path on every distribution (Debian's default is under /var/lib)."""
    return (
        "use SECURITY: recommended_v9_0\n"
        f"UID_DOMAIN = {domain}\nTRUST_DOMAIN = {domain}\n"
        "SEC_PASSWORD_DIRECTORY = /etc/condor/passwords.d\n"
        "SEC_TOKEN_POOL_SIGNING_KEY_FILE = /etc/condor/passwords.d/POOL\n"
    )


def worker_template() -> str:
    return document(
        {
            "packages": ["htcondor"],
            "write_files": [
                plain_file(
                    "/etc/condor/config.d/50-marea.conf",
                    "CONDOR_HOST = ${MAREA_CONDOR_HOST}\nuse ROLE: Execute\n"
                    + condor_security("${MAREA_VAR_CONDOR_DOMAIN}")
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
    )


def master_fragment(ctx: MasterContext) -> MasterFragment:
    domain = condor_domain(ctx.cfg.cluster.name)
    return MasterFragment(
        packages=["htcondor"],
        write_files=[
            plain_file(
                "/etc/condor/config.d/50-marea.conf",
                f"CONDOR_HOST = {ctx.master_ip}\nuse ROLE: CentralManager\nuse ROLE: Submit\n"
                + condor_security(domain),
                defer=True,
            ),
            secret_file("/etc/condor/passwords.d/POOL", ctx.joins.condor_signing_key_b64, "root:root", "0600"),
        ],
        runcmd=[
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
        ],
        # the engine reads the pool at the master, and mints each worker a token of its own
        engine_settings={
            "collector": ctx.master_ip,
            "token_command": worker_token_command(domain),
            "revocation_file": TOKEN_REVOCATION_FILE,
        },
        # the collector and the worker token come from the engine's htcondor driver (batch.htcondor)
        worker_variables={"condor_domain": domain},
    )


PROFILE = BatchProfile(
    name="htcondor",
    make_driver=make_driver,
    worker_template=worker_template,
    master_fragment=master_fragment,
    master_ports=(CONDOR_PORT,),
    worker_ports=(CONDOR_PORT,),
    join_variables=("MAREA_CONDOR_HOST", "MAREA_CONDOR_IDTOKEN"),
    template_variables=("CONDOR_DOMAIN", "CONDOR_ROOTFS", "CONDOR_INCLUDE"),
    local_templates=("htcondor-worker.sh",),
    addons=frozenset({"monitoring"}),
    extras=("openstack", "htcondor"),
)
