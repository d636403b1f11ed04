"""Helpers for the simulator tests: small traces built in code, and the repository's recorded data."""

from __future__ import annotations

from pathlib import Path

from marea.model import Flavour, PolicySettings
from marea.sim.trace import Trace, TraceJob

DATA = Path(__file__).resolve().parent.parent / "data"
FOUR_CORES = Flavour("w4", 4, 8000)


def make_trace(*jobs: tuple[float, float] | tuple[float, float, float]) -> Trace:
    """Jobs as (submit, runtime[, cores])."""
    tj = [
        TraceJob(str(i), j[0], j[1], j[2] if len(j) > 2 else 1.0)  # type: ignore[misc]
        for i, j in enumerate(jobs)
    ]
    return Trace("test", tuple(sorted(tj, key=lambda j: (j.submit, j.id))))


def settings(**kw: object) -> PolicySettings:
    base: dict[str, object] = {"flavours": (FOUR_CORES,), "min_workers": 0, "max_workers": 100}
    base.update(kw)
    return PolicySettings(**base)  # type: ignore[arg-type]
