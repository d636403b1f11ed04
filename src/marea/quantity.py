"""Kubernetes resource quantities ("500m", "2", "128Mi", "1G") and a pod's effective request (shared by the
offload backends and the Kubernetes batch driver).

A pod's request is what Kubernetes' scheduler uses: the larger of the sum over app containers and the largest
init container (init containers run one at a time, before the apps). The Slurm backend turns it into
`sbatch -c/--mem`, which is what makes a pending offloaded pod visible to the elastic engine as demand.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

_SUFFIX = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}
_RE = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")


class QuantityError(ValueError):
    pass


def parse_quantity(value: Any) -> float:
    """A quantity as a float in base units (cores, bytes)."""
    if isinstance(value, bool):
        raise QuantityError(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise QuantityError(f"not a quantity: {value!r}")
    m = _RE.match(value.strip())
    if not m:
        raise QuantityError(f"not a quantity: {value!r}")
    try:
        number = float(m.group(1))
    except ValueError:
        raise QuantityError(f"not a quantity: {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise QuantityError(f"not a quantity: {value!r}")
    return number * _SUFFIX[m.group(2) or ""]


@dataclass(frozen=True)
class PodRequest:
    cpus: float
    memory_bytes: float
    gpus: int

    @property
    def slurm_cpus(self) -> int:
        return max(1, math.ceil(self.cpus - 1e-9))

    @property
    def slurm_mem_mb(self) -> int:
        return max(1, math.ceil(self.memory_bytes / 2**20))


def _container_request(c: dict[str, Any]) -> tuple[float, float, int]:
    res = c.get("resources") if isinstance(c.get("resources"), dict) else {}
    assert isinstance(res, dict)
    req = res.get("requests") if isinstance(res.get("requests"), dict) else {}
    lim = res.get("limits") if isinstance(res.get("limits"), dict) else {}
    assert isinstance(req, dict) and isinstance(lim, dict)

    def pick(key: str) -> float:
        # Kubernetes defaults a missing request to the limit
        raw = req.get(key, lim.get(key))
        return 0.0 if raw is None else parse_quantity(raw)

    gpus = int(pick("nvidia.com/gpu"))
    return pick("cpu"), pick("memory"), gpus


def pod_request(pod: dict[str, Any]) -> PodRequest:
    """Raise QuantityError on a malformed quantity (the server answers 422 with it)."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    apps = [_container_request(c) for c in spec.get("containers") or [] if isinstance(c, dict)]
    inits = [_container_request(c) for c in spec.get("initContainers") or [] if isinstance(c, dict)]
    cpu = max([sum(a[0] for a in apps), *[i[0] for i in inits]])
    mem = max([sum(a[1] for a in apps), *[i[1] for i in inits]])
    gpu = max([sum(a[2] for a in apps), *[i[2] for i in inits]])
    return PodRequest(cpus=cpu, memory_bytes=mem, gpus=gpu)
