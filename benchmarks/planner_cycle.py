"""One planner cycle (`marea.policy.decide`) for N queued jobs, 1,000 workers and 10 flavours.

The cycle includes grouping the queued jobs into shapes (what a batch driver does with `squeue --json`
output), because that is the part that grows with the number of jobs. Jobs are drawn with a fixed seed from a
realistic mix: 1, 2, 4 or 8 cores, memory per core from a few typical values, a few GPU jobs. Run:

    .venv/bin/python benchmarks/planner_cycle.py            # 10k, 100k, 1M jobs
    .venv/bin/python benchmarks/planner_cycle.py --jobs 100000
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter

from marea.model import ClusterView, DemandGroup, Flavour, InstanceState, InstanceView, PolicySettings, Resources
from marea.policy import decide

FLAVOURS = tuple(
    Flavour(f"f{i}", cores, mem, gpus)
    for i, (cores, mem, gpus) in enumerate(
        [(1, 2000, 0), (2, 4000, 0), (4, 8000, 0), (8, 16000, 0), (16, 32000, 0), (4, 16000, 0),
         (8, 32000, 0), (16, 64000, 0), (8, 32000, 1), (16, 64000, 2)]
    )
)  # fmt: skip


def make_jobs(n: int, rng: random.Random) -> list[tuple[int, int, int]]:
    jobs = []
    for _ in range(n):
        cores = rng.choice((1, 1, 1, 1, 2, 4, 8))
        jobs.append((cores, cores * rng.choice((500, 1000, 2000, 3000)), 1 if rng.random() < 0.01 else 0))
    return jobs


def make_workers(rng: random.Random, now: float) -> tuple[InstanceView, ...]:
    workers = []
    for i in range(1000):
        f = rng.choice(FLAVOURS[:8])
        used = rng.randint(0, f.cores)
        state = InstanceState.BUSY if used else InstanceState.IDLE
        workers.append(
            InstanceView(
                f"w{i}", f.name, state, now - 3600, now - 7200,
                free=Resources(f.cores - used, f.memory_mb * (f.cores - used) / f.cores),
                idle_since=None if used else now - rng.uniform(0, 900),
            )
        )  # fmt: skip
    return tuple(workers)


def one_cycle(
    jobs: list[tuple[int, int, int]], workers: tuple[InstanceView, ...], s: PolicySettings
) -> tuple[int, float]:
    """Group + decide; returns the boots planned and the time spent in `decide` alone (ms)."""
    shapes = Counter(jobs)
    demand = tuple(DemandGroup(Resources(c, m, g), n) for (c, m, g), n in shapes.items())
    t0 = time.perf_counter()
    boots = decide(ClusterView(10_000.0, workers, demand), s).boots
    return boots, (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(42)
    s = PolicySettings(FLAVOURS, min_workers=0, max_workers=1500, max_parallel_boots=200, idle_threshold_s=600)
    workers = make_workers(rng, 10_000.0)
    print(f"{'jobs':>10} {'cycle ms (median)':>18} {'decide ms':>10} {'boots':>6}  growth")
    base = None
    for n in args.jobs:
        jobs = make_jobs(n, rng)
        times, decide_times, boots = [], [], 0
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            boots, in_decide = one_cycle(jobs, workers, s)
            times.append((time.perf_counter() - t0) * 1000)
            decide_times.append(in_decide)
        med = statistics.median(times)
        base = base or med
        print(
            f"{n:>10} {med:>18.1f} {statistics.median(decide_times):>10.1f} {boots:>6}  "
            f"x{med / base:.1f} of the first row"
        )


if __name__ == "__main__":
    main()
