"""The registered batch systems, as plain data: the configuration validates `batch.system` against them.

A leaf (it imports nothing of marea), so the configuration, which everything imports, can use it without
pulling in a profile, a driver or the cluster maker. Each name is a module `marea.profiles.<name>`.
"""

from __future__ import annotations

import importlib.util

#: the registered batch systems, in the order documentation lists them
SYSTEMS: tuple[str, ...] = ("slurm", "htcondor", "kubernetes")
#: the engine's driver module of each system (a build may lack one: its client library is an extra)
DRIVER_MODULES: dict[str, str] = {
    "slurm": "marea.batch.slurm",
    "htcondor": "marea.batch.htcondor",
    "kubernetes": "marea.batch.kubernetes",
}
#: what to tell the user when a system's driver is missing from this build
MISSING_DRIVER: dict[str, str] = {
    "kubernetes": "marea has no elastic Kubernetes driver (use slurm or htcondor)",
}


def unavailable(system: str) -> str:
    """'' when this build can drive `system`, else why not (one line)."""
    if importlib.util.find_spec(DRIVER_MODULES[system]) is None:
        return MISSING_DRIVER.get(system, f"marea has no {system} driver in this build")
    return ""
