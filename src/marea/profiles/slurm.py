"""The Slurm profile: slurmctld on the master (configless), workers join as dynamic nodes (`slurmd -Z`).

Workers authenticate with the cluster's munge key (a `[worker.variables]` entry, made at create); the
controller address is the master's port. The feature that puts a worker in marea's partition comes from the
driver's join variables (MAREA_SLURM_FEATURE), the same name the local-driver template uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from marea.profiles import BatchProfile, MasterContext, MasterFragment
from marea.profiles.cloudconfig import document, plain_file, secret_file

if TYPE_CHECKING:
    from marea.batch.base import BatchSystem
    from marea.config import MareaConfig

SLURMCTLD_PORT = 6817
SLURMD_PORT = 6818
#: a node that never runs: it gives the partition the size of the largest flavour, so that Slurm (24.11 refuses
#: jobs for a partition without nodes) accepts jobs while no worker exists, and refuses at submission a job no
#: flavour can hold. Drained in slurm.conf, it never gets work; its pending jobs show ReqNodeNotAvail, which
#: marea counts as demand. It carries no feature, so marea never takes it for a worker.
TEMPLATE_NODE = "marea-template"


def make_driver(cfg: MareaConfig) -> BatchSystem:
    from marea.batch.slurm import SlurmBatch

    return SlurmBatch(cfg.batch.slurm)


def worker_template() -> str:
    return document(
        {
            "packages": ["slurmd", "munge"],
            "write_files": [secret_file("/etc/munge/munge.key", "${MAREA_VAR_MUNGE_KEY}", "munge:munge")],
            "runcmd": [
                ["systemctl", "restart", "munge"],
                ["systemctl", "disable", "--now", "slurmd"],
                ["mkdir", "-p", "/var/spool/slurmd"],
                [
                    "sh",
                    "-c",
                    "slurmd -Z -N ${MAREA_NAME} --conf-server ${MAREA_VAR_SLURM_CONTROLLER} "
                    '--conf "CPUs=${MAREA_CORES} RealMemory=${MAREA_MEMORY_MB} Feature=${MAREA_SLURM_FEATURE}"',
                ],
            ],
        }
    )


def slurm_conf(ctx: MasterContext) -> str:
    cfg = ctx.cfg
    s = cfg.batch.slurm
    flavours = cfg.flavours
    cores = max((f.cores for f in flavours), default=1)
    memory = max((f.memory_mb for f in flavours), default=1)
    gpus = max((f.gpus for f in flavours), default=0)
    template = (
        f"NodeName={TEMPLATE_NODE} NodeAddr=127.0.0.2 CPUs={cores} RealMemory={memory}"
        + (f" Gres=gpu:{gpus}" if gpus else "")
        + " State=DRAIN Reason=marea_template_never_runs_jobs"
    )
    lines = [
        f"ClusterName={cfg.cluster.name}",
        f"SlurmctldHost={cfg.cluster.name}-master({ctx.master_ip})",
        "SlurmctldParameters=enable_configless",
        "AuthType=auth/munge",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        # the template node counts against MaxNodeCount
        f"MaxNodeCount={max(1, cfg.policy.max_workers) + 1}",
        "TreeWidth=65533",
        "ReturnToService=2",
        "SlurmUser=slurm",
        "StateSaveLocation=/var/lib/slurm/slurmctld",
        "SlurmdSpoolDir=/var/lib/slurm/slurmd",
        *(["GresTypes=gpu"] if gpus else []),
        *ctx.slurm_conf,
        template,
        f"NodeSet=marea Feature={s.feature}",
        f"PartitionName={s.partition} Nodes=marea,{TEMPLATE_NODE} Default=YES MaxTime=INFINITE State=UP",
        "",
    ]
    return "\n".join(lines)


def master_fragment(ctx: MasterContext) -> MasterFragment:
    runcmd: list[Any] = [
        ["systemctl", "enable", "munge", "slurmctld"],
        ["systemctl", "restart", "munge"],
        ["systemctl", "restart", "slurmctld"],
    ]
    return MasterFragment(
        packages=["slurmctld", "slurm-client", "munge"],
        write_files=[
            secret_file("/etc/munge/munge.key", ctx.joins.munge_key_b64, "munge:munge"),
            plain_file("/etc/slurm/slurm.conf", slurm_conf(ctx), defer=True),
        ],
        runcmd=runcmd,
        worker_variables={
            "slurm_controller": f"{ctx.master_ip}:{SLURMCTLD_PORT}",
            "munge_key": ctx.joins.munge_key_b64,
        },
    )


PROFILE = BatchProfile(
    name="slurm",
    make_driver=make_driver,
    worker_template=worker_template,
    master_fragment=master_fragment,
    master_ports=(SLURMCTLD_PORT,),
    worker_ports=(SLURMD_PORT,),
    join_variables=("MAREA_SLURM_CONF", "MAREA_SLURM_FEATURE", "MAREA_SLURM_PARTITION"),
    template_variables=("MUNGE_KEY", "SLURM_CONTROLLER"),
    local_templates=("slurm-worker.sh",),
    addons=frozenset({"monitoring"}),
)
