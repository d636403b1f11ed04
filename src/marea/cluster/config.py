"""cluster.toml: a marea.toml (the elastic engine the master will run) plus a `[master]` section.

The master section only matters to `marea cluster`: which flavour the master gets, where its floating IP comes
from, who may reach it. Everything else is validated by marea's own config model, so the file the master runs
is exactly the file the admin wrote, with the join parameters filled in.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError

from marea import profiles
from marea.cluster.monitoring import AddonsSection
from marea.config import ConfigError, MareaConfig, _describe, _Strict, parse_config


class MasterSection(_Strict):
    flavour: str = Field(min_length=1, description="OpenStack flavour of the master VM")
    #: external network the master's floating IP comes from (a free one of the project is reused first)
    floating_network: str = Field(min_length=1)
    #: image of the master (default: cloud.openstack.image)
    image: str = ""
    #: OpenSSH public key installed as the cluster's keypair (empty: use cloud.openstack.key_name as it is)
    ssh_public_key: str = ""
    #: who may reach the master over SSH
    ssh_cidr: str = "0.0.0.0/0"
    #: private key `marea cluster ssh` logs in with (empty: ssh's own defaults and agent)
    ssh_key_file: str = ""
    #: login user on the master (empty: the image's `os_admin_user` property, else one named after its
    #: `os_distro`, as Debian, Ubuntu, Rocky... cloud images do, else root)
    ssh_user: str = ""
    #: how marea itself gets onto the master: a pip requirement (a version, a wheel URL, a git URL); empty:
    #: marea with the extras the batch system needs (`marea[openstack]`, plus `htcondor` or `kubernetes`)
    marea_package: str = ""
    #: where pip finds marea and its dependencies when not on PyPI: a URL of a page of wheels (pip's
    #: `--no-index --find-links`). Empty on a cloud whose guests reach PyPI (CloudVeneto); set on clouds whose
    #: guests reach no package index (the project's testbed serves its wheelhouse there)
    pip_find_links: str = ""
    #: roles of the application credential the master's marea runs with (a subset of the creator's roles in
    #: the project; the least one that may create and delete servers and ports)
    credential_roles: list[str] = Field(default_factory=lambda: ["member"])
    #: lines added to the slurm.conf written on the master (Slurm clusters), before the node and partition lines.
    #: Machines whose kernel gives jobs no cgroups (the project's container testbed) need
    #: ["ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none"]
    slurm_conf: list[Annotated[str, Field(pattern=r"^[^\n]*$")]] = Field(default_factory=list)
    #: the master must be ACTIVE within this many seconds of its creation, or create fails
    boot_timeout_s: Annotated[float, Field(gt=0)] = 600.0

    def package(self, system: str) -> str:
        if self.marea_package:
            return self.marea_package
        return f"marea[{','.join(profiles.get(system).extras)}]"


@dataclass(frozen=True)
class ClusterFile:
    master: MasterSection
    marea: MareaConfig
    #: the marea part as read, for writing it onto the master
    marea_data: dict[str, Any]
    addons: AddonsSection = field(default_factory=AddonsSection)


def parse_cluster(data: dict[str, Any], source: str = "<cluster>", source_dir: str = ".") -> ClusterFile:
    data = dict(data)
    master_data = data.pop("master", None)
    addons = _addons(data.pop("addons", {}), source)
    if master_data is None:
        raise ConfigError(f"{source}: master: required section is missing")
    try:
        master = MasterSection.model_validate(master_data)
    except ValidationError as exc:
        errors = exc.errors(include_input=False)
        first = _describe({**errors[0], "loc": ("master", *errors[0]["loc"])})
        raise ConfigError(f"{source}: {first}") from None
    cfg = parse_config(data, source, source_dir)
    if cfg.cloud.driver != "openstack":
        raise ConfigError(f"{source}: cloud.driver: marea cluster needs 'openstack', got {cfg.cloud.driver!r}")
    if not cfg.cloud.openstack.image and not master.image:
        raise ConfigError(f"{source}: cloud.openstack.image: required by marea cluster")
    if not cfg.cloud.openstack.network:
        raise ConfigError(f"{source}: cloud.openstack.network: required by marea cluster")
    system = cfg.batch.system
    for name in sorted(addons.enabled() - profiles.get(system).addons):
        can = sorted(s for s in profiles.SYSTEMS if name in profiles.get(s).addons)
        raise ConfigError(f"{source}: addons.{name}: needs batch.system {' or '.join(map(repr, can))}, not {system!r}")
    return ClusterFile(master, cfg, data, addons)


def _addons(data: Any, source: str) -> AddonsSection:
    try:
        return AddonsSection.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_input=False)
        raise ConfigError(f"{source}: {_describe({**errors[0], 'loc': ('addons', *errors[0]['loc'])})}") from None


def load_cluster(path: str | Path) -> ClusterFile:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse_cluster(data, str(p), str(p.resolve().parent))
