"""One profile per batch system: everything marea knows of it, in one place.

A profile gives the engine's driver (imported lazily: a master runs one system, and the others' client
libraries need not be installed), the worker user-data template the cluster maker hands the master's engine,
the master's cloud-config fragment, the TCP ports the master and the workers open, the names the worker
template may use (the driver's `join_variables()` plus the engine's own, ENGINE_VARIABLES), and the cluster
add-ons the system can have. The configuration's allowed `batch.system` values are SYSTEMS.

This package imports neither the engine nor the cluster maker (import-linter holds it), so the engine's
driver factory and the configuration may import it; the profile modules are loaded on first use by `get`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from marea.batch.base import BatchSystem
    from marea.config import MareaConfig
    from marea.profiles.joins import JoinSecrets

from marea.profiles.registry import SYSTEMS, unavailable

#: the placeholders the engine itself fills in every worker's user-data (engine/reconciler.py `_spec`)
ENGINE_VARIABLES: tuple[str, ...] = (
    "MAREA_INSTANCE_ID", "MAREA_NAME", "MAREA_CLUSTER", "MAREA_FLAVOUR", "MAREA_CORES", "MAREA_MEMORY_MB",
    "MAREA_GPUS", "MAREA_GROUP",
)  # fmt: skip
#: the prefix of the placeholders that come from `[worker.variables]` (engine/runner.py)
VARIABLE_PREFIX = "MAREA_VAR_"


@dataclass(frozen=True)
class MasterContext:
    """What a master fragment is made from: the engine's configuration as the master will run it, the
    master's address, the join secrets made at create, and the cluster file's master-only settings."""

    cfg: MareaConfig
    master_ip: str
    joins: JoinSecrets
    #: `[master] slurm_conf` lines (Slurm only)
    slurm_conf: tuple[str, ...] = ()
    #: the add-ons the cluster file turned on
    addons: frozenset[str] = frozenset()


@dataclass(frozen=True)
class MasterFragment:
    """The system's part of the master's cloud-config, and what the master's engine configuration needs."""

    packages: list[str]
    write_files: list[dict[str, Any]]
    runcmd: list[Any]
    #: merged into `[batch.<system>]` of the master's marea.toml (where the engine finds the system)
    engine_settings: dict[str, Any] = field(default_factory=dict)
    #: `[worker.variables]` the worker template needs (exposed to it as MAREA_VAR_<NAME>)
    worker_variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchProfile:
    name: str
    #: the engine's driver for a configuration (imports the driver module when called)
    make_driver: Callable[[MareaConfig], BatchSystem]
    #: the worker cloud-config template (`#cloud-config`, `${MAREA_*}` placeholders) for clusters marea creates
    worker_template: Callable[[], str]
    #: the master's fragment
    master_fragment: Callable[[MasterContext], MasterFragment]
    #: TCP ports the master accepts from the cluster, and the workers accept from it
    master_ports: tuple[int, ...]
    worker_ports: tuple[int, ...]
    #: the names the driver's `join_variables(worker)` gives (the test holds the driver to it)
    join_variables: tuple[str, ...]
    #: UDP ports likewise (an overlay network's tunnel, for instance)
    master_udp_ports: tuple[int, ...] = ()
    worker_udp_ports: tuple[int, ...] = ()
    #: `[worker.variables]` names the worker template uses beyond those (MAREA_VAR_<NAME>)
    template_variables: tuple[str, ...] = ()
    #: the local-driver templates shipped in marea/batch/templates for this system
    local_templates: tuple[str, ...] = ()
    #: the cluster add-ons this system can have (`[addons]` of a cluster file)
    addons: frozenset[str] = frozenset()
    #: Debian's Prometheus on the master and node exporter on workers serve the monitoring add-on
    host_monitoring: bool = True
    #: extras for `pip install marea[...]` on a master of this system
    extras: tuple[str, ...] = ("openstack",)

    def available(self) -> str:
        """'' when the engine can drive this system in this build, else why not (one line)."""
        return unavailable(self.name)


_LOADED: dict[str, BatchProfile] = {}


def get(name: str) -> BatchProfile:
    """The profile of a registered system (ValueError naming the registered ones otherwise)."""
    if name not in SYSTEMS:
        raise ValueError(f"unknown batch system {name!r}: one of {', '.join(SYSTEMS)}")
    if name not in _LOADED:
        module = importlib.import_module(f"marea.profiles.{name}")
        _LOADED[name] = module.PROFILE
    return _LOADED[name]


def all_profiles() -> Mapping[str, BatchProfile]:
    return {name: get(name) for name in SYSTEMS}


__all__ = [
    "ENGINE_VARIABLES", "SYSTEMS", "VARIABLE_PREFIX", "BatchProfile", "MasterContext", "MasterFragment",
    "all_profiles", "get",
]  # fmt: skip
