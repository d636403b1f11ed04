"""The recent arrival rate of queued work, from successive views of the queue: what headroom sizes itself on.

Batch systems report queued demand as counts per job shape, not as a stream of submissions, so arrivals are
measured as the growth of each shape's count between two observations (the engine's cycles, the simulator's
policy calls). Work that starts before an observation sees it queued is not counted: the rate is that of work
that found no free room, the work warm capacity would have served. The state is small and bounded whatever
the queue holds: the last count of each shape and at most BUCKETS + 1 time buckets of arrived work. The engine
keeps it in the store (a restart keeps the rate); the simulator keeps it in its controller. Pure: no clock, no
I/O; the caller passes `now`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from marea.model import ArrivalRate, DemandGroup

#: the window is cut into this many buckets: the rate steps down by at most 1/BUCKETS of it at a time
BUCKETS = 30

ShapeKey = tuple[str, float, float, int]  # group, cores, memory MiB, GPUs


@dataclass(frozen=True, slots=True)
class ArrivalLog:
    """What the tracker remembers between observations."""

    #: the last observed count of each demand shape
    queued: tuple[tuple[ShapeKey, int], ...] = ()
    #: (bucket start, cores, memory MiB) of work newly seen queued, oldest first
    buckets: tuple[tuple[float, float, float], ...] = ()


def _key(d: DemandGroup) -> ShapeKey:
    r = d.request
    return (d.group, r.cores, r.memory_mb, r.gpus)


def _width(window_s: float) -> float:
    return max(window_s, 1e-9) / BUCKETS


def _in_window(start: float, now: float, window_s: float) -> bool:
    return now - start <= window_s


def record(log: ArrivalLog, demand: tuple[DemandGroup, ...], now: float, window_s: float) -> ArrivalLog:
    """The log after observing `demand` at `now`: growth per shape is added to the bucket of `now`, buckets
    that left the window are dropped. The first observation of a shape counts all of it (a fresh tracker sees
    the whole queue arrive)."""
    counts: dict[ShapeKey, int] = {}
    for d in demand:
        counts[_key(d)] = counts.get(_key(d), 0) + max(0, d.count)
    before = dict(log.queued)
    cores = memory = 0.0
    for key, n in counts.items():
        grew = n - before.get(key, 0)
        if grew > 0:
            cores += grew * key[1]
            memory += grew * key[2]
    buckets = [b for b in log.buckets if _in_window(b[0], now, window_s)]
    if cores > 0 or memory > 0:
        w = _width(window_s)
        start = math.floor(now / w) * w
        if buckets and buckets[-1][0] == start:
            _, c, m = buckets[-1]
            buckets[-1] = (start, c + cores, m + memory)
        else:
            buckets.append((start, cores, memory))
    return ArrivalLog(tuple(sorted(counts.items())), tuple(buckets))


def rate(log: ArrivalLog, now: float, window_s: float) -> ArrivalRate:
    """The arrival rate over the window that ends at `now`."""
    if window_s <= 0:
        return ArrivalRate()
    inside = [b for b in log.buckets if _in_window(b[0], now, window_s)]
    return ArrivalRate(sum(b[1] for b in inside) / window_s, sum(b[2] for b in inside) / window_s, window_s)


def next_change(log: ArrivalLog, now: float, window_s: float) -> float | None:
    """The instant after which the oldest bucket still in the window leaves it (the rate drops), or None."""
    ends = [b[0] + window_s for b in log.buckets if _in_window(b[0], now, window_s)]
    return min(ends) if ends else None


def to_json(log: ArrivalLog) -> dict[str, Any]:
    return {"queued": [[*k, n] for k, n in log.queued], "buckets": [list(b) for b in log.buckets]}


def from_json(data: Any) -> ArrivalLog:
    """The log as the store kept it; anything unreadable starts an empty log (the rate restarts from zero)."""
    try:
        queued = tuple(((str(g), float(c), float(m), int(gp)), int(n)) for g, c, m, gp, n in data["queued"])
        buckets = tuple((float(s), float(c), float(m)) for s, c, m in data["buckets"])
    except (KeyError, TypeError, ValueError):
        return ArrivalLog()
    return ArrivalLog(queued, buckets)
