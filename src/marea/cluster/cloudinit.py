"""Cloud-init user-data for the master and the workers, assembled from the batch system's profile.

Both are `#cloud-config` documents, so any image that runs cloud-init works, and both pass cloud-init's own
schema validation (tested with Debian's `cloud-init schema`). The master installs the batch system's central
manager (the profile's master fragment) and marea, and runs `marea run` with the admin's cluster file plus
the profile's worker template. Worker templates carry `${MAREA_*}` placeholders that the engine fills for each
worker: its own (name, cores, memory...), its driver's join variables, and `${MAREA_VAR_*}` from the master's
`[worker.variables]` (marea.profiles).

Files holding secrets are written with mode 0600/0400 and `defer: true` (after packages created their users).
The user-data itself may hold join secrets (the munge key, the HTCondor pool key): its first act shuts every
user but root out of the metadata service that would hand it back (METADATA_GUARD; docs/security.md).
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit

from marea import profiles
from marea.cluster import monitoring
from marea.cluster.config import ClusterFile
from marea.cluster.tomlout import dumps
from marea.profiles.cloudconfig import METADATA_GUARD, METADATA_V4, METADATA_V6, document
from marea.profiles.joins import JoinSecrets

__all__ = [
    "METADATA_GUARD", "METADATA_V4", "METADATA_V6", "master_marea_toml", "master_user_data", "worker_template",
]  # fmt: skip


def worker_template(system: str) -> str:
    """The worker user-data template the master's engine renders for every worker it boots."""
    return profiles.get(system).worker_template()


def _context(cf: ClusterFile, joins: JoinSecrets, master_ip: str) -> profiles.MasterContext:
    return profiles.MasterContext(
        cfg=cf.marea,
        master_ip=master_ip,
        joins=joins,
        slurm_conf=tuple(cf.master.slurm_conf),
        addons=cf.addons.enabled(),
    )


def master_marea_toml(cf: ClusterFile, joins: JoinSecrets, master_ip: str) -> str:
    """The marea.toml the master's engine runs: the admin's file, the worker template, the join variables."""
    return _master_toml(cf, profiles.get(cf.marea.batch.system).master_fragment(_context(cf, joins, master_ip)))


def _master_toml(cf: ClusterFile, fragment: profiles.MasterFragment) -> str:
    data: dict[str, Any] = {k: v for k, v in cf.marea_data.items() if k != "worker"}
    cluster = dict(data.get("cluster", {}))
    cluster["state"] = "/var/lib/marea/state.db"
    data["cluster"] = cluster
    system = cf.marea.batch.system
    variables = {**cf.marea.worker.variables, **fragment.worker_variables}
    if fragment.engine_settings:  # where the engine finds the system on the master
        batch = dict(data.get("batch", {}))
        batch[system] = {**batch.get(system, {}), **fragment.engine_settings}
        data["batch"] = batch
    # [worker] last and [worker.variables] last in it
    data["worker"] = {"user_data": monitoring.add_to_worker(cf, worker_template(system)), "variables": variables}
    return dumps(data)


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
    fragment = profiles.get(system).master_fragment(_context(cf, joins, master_ip))
    toml = _master_toml(cf, fragment)
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
        *fragment.write_files,
    ]
    runcmd: list[Any] = [
        *fragment.runcmd,
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
        "packages": [*fragment.packages, "python3-venv"],
        "write_files": files,
        "runcmd": runcmd,
    }
    return document(monitoring.add_to_master(cf, body))
