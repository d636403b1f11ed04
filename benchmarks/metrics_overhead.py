"""What the engine's metrics cost per cycle, and what a scrape costs, at 1,000 workers and 100 job shapes.

    .venv/bin/python benchmarks/metrics_overhead.py

cycle_seen runs once per reconcile cycle; the exposition once per scrape (and /api/history once per page
poll). Both must stay far below the cycle's own time (the planner's figures: `make bench`).
"""

from __future__ import annotations

import time

from marea.engine.metrics import EngineMetrics
from marea.engine.store import InstanceRecord
from marea.model import ClusterView, DemandGroup, InstanceState, Quota, Resources

FLAVOURS = {f"f{i}": 2 * (i + 1) for i in range(5)}
STATES = [InstanceState.BOOTING, InstanceState.IDLE, InstanceState.BUSY, InstanceState.DRAINING]


def main() -> None:
    workers = [InstanceRecord(f"c-{i}", "c", f"f{i % 5}", "", STATES[i % 4], 0.0, 0.0) for i in range(1000)]
    demand = tuple(DemandGroup(Resources(1 + i % 8, 1000 * (1 + i % 4)), 10, "", 1.0) for i in range(100))
    m = EngineMetrics("c", FLAVOURS)
    n = 1000
    t0 = time.perf_counter()
    for k in range(n):
        m.cycle_seen(ClusterView(float(k), (), demand, Quota(instances=10, cores=100)), workers, 1000)
    per_cycle = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(200):
        text = m.exposition()
    per_scrape = (time.perf_counter() - t0) / 200
    t0 = time.perf_counter()
    for _ in range(200):
        hist = m.history()
    per_history = (time.perf_counter() - t0) / 200
    print(f"cycle_seen, 1,000 workers, 100 shapes: {per_cycle * 1e3:.2f} ms")
    print(f"/metrics exposition: {per_scrape * 1e3:.2f} ms, {len(text):,} bytes")
    print(f"/api/history ({len(hist)} samples): {per_history * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
