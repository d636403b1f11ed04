"""HTCondor's benchmark: a trace mixing 1-core and 4-core jobs through marea's policy and the elastiq baseline.

    .venv/bin/python benchmarks/simulate_htcondor_mixed.py [--jobs 3000] [--seed 1] [--out docs]

elastiq counted idle jobs (n_jobs_per_vm per VM) whatever they asked for; marea bin-packs the cores and memory
jobs request. The trace is synthetic and deterministic (seeded): bursts of jobs over three days, 70 % one-core
jobs (2000 MiB) and 30 % four-core jobs (6000 MiB), log-normal run times (median 40 min), written as
`condor_history -json` (the simulator's HTCondor input) to a temporary file. Workers are the 4-core / 8000 MiB
flavour of the CloudVeneto comparison, 420 s boots, min 2 / max 60 workers, marea at its default knobs.
Every figure printed comes from this one run; ratios are marea / elastiq.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

from marea.config import parse_config
from marea.sim.run import run_policy
from marea.sim.trace import read_trace

ROOT = Path(__file__).resolve().parent.parent
CONFIG = {
    "cluster": {"name": "htcondor-mixed-sim"},
    "policy": {"min_workers": 2, "max_workers": 60},
    "flavours": [{"name": "cloudveneto.4c8g", "cores": 4, "memory_mb": 8000}],
    "simulate": {
        "boot_time_s": 420,
        "horizon_s": 7 * 86400,
        "elastiq": {
            "check_queue_every_s": 240,
            "check_vms_every_s": 300,
            "waiting_jobs_threshold": 0,
            "waiting_jobs_time_s": 600,
            "n_jobs_per_vm": 4,
            "idle_for_time_s": 600,
            "estimated_vm_deploy_time_s": 420,
        },
    },
}


def make_trace(n: int, seed: int) -> list[dict[str, object]]:
    """condor_history -json ads: bursts (a burst every ~40 min on average, 1-60 jobs each) over 3 days."""
    rng = random.Random(seed)
    t0 = 1_700_000_000
    ads: list[dict[str, object]] = []
    t = 0.0
    while len(ads) < n:
        t += rng.expovariate(1 / 2400)
        if t > 3 * 86400:
            t = rng.uniform(0, 3 * 86400)
        for _ in range(min(rng.randint(1, 60), n - len(ads))):
            four = rng.random() < 0.3
            runtime = max(60, int(rng.lognormvariate(math.log(2400), 0.8)))
            qdate = int(t0 + t + rng.uniform(0, 60))
            ads.append(
                {
                    "ClusterId": len(ads) + 1,
                    "ProcId": 0,
                    "JobStatus": 4,
                    "QDate": qdate,
                    "JobCurrentStartDate": qdate,  # only the run time matters to the replay
                    "CompletionDate": qdate + runtime,
                    "RemoteWallClockTime": float(runtime),
                    "RequestCpus": 4 if four else 1,
                    "RequestMemory": 6000 if four else 2000,
                }
            )
    ads.sort(key=lambda a: int(str(a["QDate"])))
    return ads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trace_path = Path(tempfile.mkdtemp(prefix="marea-bench-")) / "htcondor-mixed-history.json"
    trace_path.write_text(json.dumps(make_trace(args.jobs, args.seed)))
    cfg = parse_config(CONFIG)
    trace = read_trace(trace_path, "condor-json", cfg.simulate.swf_memory, cfg.simulate.keep_failed_jobs)
    four = sum(1 for j in trace.jobs if j.cores == 4)
    print(f"{trace.name}: {len(trace.jobs)} jobs ({four} four-core), dropped {trace.dropped}", flush=True)
    results = {}
    for name in ("marea", "elastiq", "static", "oracle", "instant"):
        t = time.perf_counter()
        results[name] = run_policy(name, trace, cfg).as_dict()
        print(f"{name:8s} {json.dumps(results[name])} ({time.perf_counter() - t:.1f} s)", flush=True)
    m, e = results["marea"], results["elastiq"]
    ratios = {
        key: round(float(m[key]) / float(e[key]), 3) if float(e[key]) else None
        for key in ("vm_hours", "idle_vm_hours", "wait_p95_s")
        if key in m and key in e
    }
    print("marea / elastiq:", json.dumps(ratios))
    (out / "simulator-htcondor-mixed.json").write_text(
        json.dumps({"jobs": len(trace.jobs), "seed": args.seed, "results": results, "ratios": ratios}, indent=1)
    )


if __name__ == "__main__":
    main()
