"""The LPC-EGEE verdict: marea's default policy vs elastiq, static and the oracle, plus marea's idle-threshold
sweep; writes docs/simulator-lpc.json, docs/simulator-lpc.png and docs/simulator-lpc-sweep.png.

    .venv/bin/python benchmarks/simulate_lpc.py [TRACE] [-c examples/simulate-lpc.toml] [--out docs]

TRACE defaults to tests/data/LPC-EGEE-2004-1.2-cln.swf.gz (the Parallel Workloads Archive log, in the repo).
Every figure comes from one run of this script; the wall time of each simulation is reported with it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from marea.config import load_config
from marea.sim.plots import plot_results
from marea.sim.run import run_policy
from marea.sim.trace import read_trace

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS_S = (0.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace", nargs="?", default=str(ROOT / "tests/data/LPC-EGEE-2004-1.2-cln.swf.gz"))
    ap.add_argument("-c", "--config", default=str(ROOT / "examples/simulate-lpc.toml"))
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--prefix", default="simulator-lpc")
    ap.add_argument("--zoom", default="74,79", help="days FIRST,LAST of the zoomed workers plot")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config)
    t = time.perf_counter()
    trace = read_trace(args.trace, "auto", cfg.simulate.swf_memory, cfg.simulate.keep_failed_jobs)
    read_s = time.perf_counter() - t
    print(f"{trace.name}: {len(trace.jobs)} jobs ({trace.dropped} dropped), read in {read_s:.1f} s", flush=True)

    results = {}
    for name in ("marea", "elastiq", "static", "oracle"):
        results[name] = run_policy(name, trace, cfg)
        print(f"{name:8s} {json.dumps(results[name].as_dict())}", flush=True)
    elastiq = results["elastiq"]
    marea = results["marea"]
    oracle = results["oracle"]

    sweep = []
    for thr in THRESHOLDS_S:
        default = thr == cfg.policy.idle_threshold_s
        r = marea if default else run_policy("marea", trace, cfg, idle_threshold_s=thr)
        sweep.append({"idle_threshold_s": thr, **r.as_dict()})
        print(f"sweep idle_threshold_s={thr:6.0f} {json.dumps(r.as_dict())}", flush=True)
    eligible = [s for s in sweep if s["wait_p95_s"] <= elastiq.wait_p95_s]
    best = min(eligible, key=lambda s: s["idle_vm_hours"]) if eligible else None
    # idle VM-hours above the minimum: without the idle time of the min_workers VMs that every policy must
    # keep (the same floor for all; no policy can remove it)
    elastiq_above_min = elastiq.idle_vm_hours - elastiq.min_idle_vm_hours
    for s in sweep:
        s["idle_above_min_vm_hours"] = round(s["idle_vm_hours"] - s["min_idle_vm_hours"], 3)
    best_above = min(eligible, key=lambda s: s["idle_above_min_vm_hours"]) if eligible else None

    verdict = {
        "default_fewer_idle_vm_hours": marea.idle_vm_hours < elastiq.idle_vm_hours,
        "default_lower_p95_wait": marea.wait_p95_s < elastiq.wait_p95_s,
        "swept_best": best,
        "swept_idle_ratio_to_elastiq": (best["idle_vm_hours"] / elastiq.idle_vm_hours) if best else None,
        "swept_meets_half": bool(best and best["idle_vm_hours"] <= 0.5 * elastiq.idle_vm_hours),
        "elastiq_min_idle_vm_hours": elastiq.min_idle_vm_hours,
        "elastiq_idle_above_min_vm_hours": elastiq_above_min,
        "swept_best_above_min": best_above,
        "swept_idle_above_min_ratio_to_elastiq": (
            best_above["idle_above_min_vm_hours"] / elastiq_above_min if best_above else None
        ),
        "swept_meets_half_above_min": bool(
            best_above and best_above["idle_above_min_vm_hours"] <= 0.5 * elastiq_above_min
        ),
        "default_fewer_idle_above_min": (marea.idle_vm_hours - marea.min_idle_vm_hours) < elastiq_above_min,
        "marea_vm_hours_over_oracle": marea.vm_hours / oracle.vm_hours,
        "elastiq_vm_hours_over_oracle": elastiq.vm_hours / oracle.vm_hours,
    }
    doc = {
        "trace": {"name": trace.name, "jobs": len(trace.jobs), "dropped": trace.dropped},
        "config": str(Path(args.config).name),
        "policies": {n: r.as_dict() for n, r in results.items()},
        "sweep": sweep,
        "verdict": verdict,
    }
    (out / f"{args.prefix}.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(verdict, indent=2))

    plot_results(
        {n: results[n] for n in ("marea", "elastiq")},
        out / f"{args.prefix}.png",
        cfg.flavours[0].cores,
        title=f"{trace.name}: VMs over time (marea default vs elastiq)",
    )
    first, last = (float(x) for x in args.zoom.split(","))
    plot_results(
        {n: results[n] for n in ("marea", "elastiq")},
        out / f"{args.prefix}-zoom.png",
        cfg.flavours[0].cores,
        title=f"{trace.name}: days {first:g} to {last:g}",
        days=(first, last),
    )
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    ax.plot([s["wait_p95_s"] for s in sweep], [s["idle_vm_hours"] for s in sweep], "o-", label="marea, total idle")
    ax.plot(
        [s["wait_p95_s"] for s in sweep],
        [s["idle_above_min_vm_hours"] for s in sweep],
        "o--",
        color="C0",
        alpha=0.6,
        label="marea, idle above the minimum",
    )
    for s in sweep:
        ax.annotate(f"{s['idle_threshold_s']:g} s", (s["wait_p95_s"], s["idle_vm_hours"]), fontsize="small")
    ax.plot([elastiq.wait_p95_s], [elastiq.idle_vm_hours], "s", color="C3", label="elastiq, total idle")
    ax.plot([elastiq.wait_p95_s], [elastiq_above_min], "D", color="C3", alpha=0.6, label="elastiq, above min")
    ax.axhline(0.5 * elastiq.idle_vm_hours, color="C3", linestyle=":", label="0.5 x elastiq total idle")
    ax.axhline(0.5 * elastiq_above_min, color="C3", linestyle="-.", linewidth=0.8, label="0.5 x elastiq above min")
    ax.axvline(elastiq.wait_p95_s, color="C3", linestyle="--", linewidth=0.8, label="elastiq p95 wait")
    ax.set_xlabel("job wait p95 (s)")
    ax.set_ylabel("idle VM-hours")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{trace.name}: marea's idle threshold swept")
    ax.legend(fontsize="small", loc="center right")
    fig.savefig(out / f"{args.prefix}-sweep.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
