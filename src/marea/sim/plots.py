"""Plots of a simulation (matplotlib, headless): workers over time against demand, and wait distributions."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from marea.sim.simulator import PolicyResult


def plot_results(
    results: Mapping[str, PolicyResult],
    out: str | Path,
    cores_per_worker: int,
    title: str = "",
    days: tuple[float, float] | None = None,
) -> None:
    """Two panels: VMs alive per policy over time with the demand (running + queued cores / cores per
    worker) of the first simulated policy (only `days` = (first, last) when given); and the complementary CDF
    of job waits per policy.
    """
    simulated = {n: r for n, r in results.items() if r.timeline is not None and r.timeline.t}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), constrained_layout=True)
    if simulated:
        first = next(iter(simulated.values()))
        assert first.timeline is not None
        t0 = first.timeline.t[0]
        tl = first.timeline
        x = (np.asarray(tl.t) - t0) / 86400.0
        demand = (np.asarray(tl.running_cores) + np.asarray(tl.queued_cores)) / cores_per_worker
        top.fill_between(x, demand, step="post", color="0.85", label=f"demand ({first.name}'s queue)")
        for name, r in simulated.items():
            assert r.timeline is not None
            d = (np.asarray(r.timeline.t) - t0) / 86400.0
            top.step(d, r.timeline.alive, where="post", linewidth=0.8, label=f"{name} VMs")
    if days is not None:
        top.set_xlim(*days)
    top.set_xlabel("days since the first submission")
    top.set_ylabel(f"workers ({cores_per_worker} cores each)")
    top.set_title(title or "workers over time")
    top.legend(loc="upper right", fontsize="small")

    for name, r in simulated.items():
        waits = np.sort(np.asarray(r.waits, dtype=float))
        if waits.size == 0:
            continue
        frac = 1.0 - np.arange(waits.size) / waits.size
        bottom.step(np.maximum(waits, 1.0), frac, where="post", label=f"{name} (p95 {r.wait_p95_s:.0f} s)")
    bottom.set_xscale("log")
    bottom.set_yscale("log")
    bottom.set_xlabel("job wait (s, waits under 1 s drawn at 1 s)")
    bottom.set_ylabel("fraction of jobs waiting longer")
    bottom.set_title("wait distribution")
    bottom.legend(loc="lower left", fontsize="small")
    fig.savefig(out, dpi=110)
    plt.close(fig)
