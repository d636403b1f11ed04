"""The HTCondor Python bindings, loaded and configured, and the small helpers every user of them needs.

Shared by the engine's batch driver (`marea.batch.htcondor`) and the offload server's htcondor backend, so that
neither reaches into the other's internals (an import-linter contract in `make lint` holds it).
"""

from __future__ import annotations

import os
from typing import Any

from marea.batch.base import BatchError
from marea.config import HTCondorSection


def load_bindings() -> Any:
    """Import htcondor2 lazily: the extra `htcondor` is needed only by clusters that use this plugin."""
    try:
        import htcondor2
    except ImportError:
        raise BatchError("htcondor plugin: install the bindings: pip install 'marea[htcondor]'") from None
    return htcondor2


def configured_bindings(cfg: HTCondorSection) -> Any:
    """htcondor2 reading `cfg.condor_config` when one is set (else the environment's or HTCondor's default)."""
    if cfg.condor_config:
        os.environ["CONDOR_CONFIG"] = cfg.condor_config
    htcondor = load_bindings()
    if cfg.condor_config:
        htcondor.reload_config()
    return htcondor


def schedd_ads(htcondor: Any, coll: Any, cfg: HTCondorSection) -> list[Any]:
    """The ad of the schedd `cfg.schedd` names, or of every schedd the collector knows when it names none."""
    constraint = f"Name == {classad_string(cfg.schedd)}" if cfg.schedd else None
    ads = list(coll.query(htcondor.AdType.Schedd, constraint=constraint))
    if cfg.schedd and not ads:
        raise BatchError(f"htcondor: schedd {cfg.schedd!r} is not in the collector")
    return ads


def classad_string(value: str) -> str:
    """A ClassAd string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
