"""The oracle: a lower bound on the VM-hours of any policy that starts every job the moment it is submitted.

How it is computed (no simulation; from the trace alone):
1. Every job runs from its submit time for its run time (zero wait). The load L(t) is the sum of the cores
   (and memory, GPUs) of the jobs running at t.
2. The VMs needed at t are n(t) = max(ceil(L_cores/C), ceil(L_mem/M), ceil(L_gpus/G)) for the flavour's
   C cores, M MiB, G GPUs, clamped to [min_workers, max_workers]. This assumes jobs could be packed as a fluid
   (moved between VMs at no cost), so no real packing can need fewer VMs.
3. VMs are stacked in levels: level k is needed while n(t) >= k. A VM is booted exactly in time (its boot
   time, during which it is paid for, ends when level k is first needed) and deleted the moment it is no
   longer needed, except when level k is needed again within one boot time: keeping it is then cheaper than
   rebooting, so the oracle keeps it. Per level the cost is the needed time + one boot time + for each gap
   min(gap, boot time); the sum over levels is the minimum, as the levels are independent.
Idle VM-hours of the oracle are its boot times, the gaps it bridges and the time the minimum workers carry no
load at all (with fluid packing, a needed VM is never idle). Levels 1..min_workers are needed for
the whole span and pay no boot (the cluster starts with them, as it does for every simulated policy).
"""

from __future__ import annotations

import math

from marea.model import Flavour
from marea.sim.simulator import PolicyResult
from marea.sim.trace import Trace


def oracle(trace: Trace, flavour: Flavour, min_workers: int, max_workers: int, boot_time_s: float) -> PolicyResult:
    """VM-hours and idle VM-hours of the oracle (waits are zero by construction; see the module doc)."""
    if not trace.jobs:
        return PolicyResult("oracle", 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0)
    deltas: dict[float, list[float]] = {}
    for j in trace.jobs:
        for t, sign in ((j.submit, 1.0), (j.submit + j.runtime, -1.0)):
            d = deltas.setdefault(t, [0.0, 0.0, 0.0])
            d[0] += sign * j.cores
            d[1] += sign * j.memory_mb
            d[2] += sign * j.gpus
    times = sorted(deltas)
    start, end = times[0], times[-1]

    def raw_needed(cores: float, mem: float, gpus: float) -> int:
        n = math.ceil(cores / flavour.cores - 1e-9)
        if flavour.memory_mb and mem > 0:
            n = max(n, math.ceil(mem / flavour.memory_mb - 1e-9))
        if gpus > 0:
            n = max(n, math.ceil(gpus / flavour.gpus) if flavour.gpus else max_workers)
        return n

    busy_s = 0.0  # sum over levels of the time they are needed
    extra_s = 0.0  # boots and bridged gaps
    boots = 0
    since: dict[int, float] = {}  # level -> when it became needed (current interval)
    last_end: dict[int, float] = {}  # level -> when it was last released
    level = min_workers
    for k in range(1, min_workers + 1):
        since[k] = start
    load = [0.0, 0.0, 0.0]
    idle_min_s = 0.0  # minimum workers kept with no load on them
    raw, prev_t = 0, start
    for t in times:
        idle_min_s += max(0, min_workers - raw) * (t - prev_t)
        prev_t = t
        d = deltas[t]
        load = [load[0] + d[0], load[1] + d[1], load[2] + d[2]]
        raw = raw_needed(max(load[0], 0.0), max(load[1], 0.0), max(load[2], 0.0))
        n = min(max_workers, max(min_workers, raw))
        if n > level:
            for k in range(level + 1, n + 1):
                released = last_end.get(k)
                if released is None or t - released > boot_time_s:
                    extra_s += boot_time_s
                    boots += 1
                else:
                    extra_s += t - released
                since[k] = t
        elif n < level:
            for k in range(n + 1, level + 1):
                busy_s += t - since.pop(k)
                last_end[k] = t
        level = n
    for k in list(since):
        busy_s += end - since.pop(k)
    vm_hours = (busy_s + extra_s) / 3600.0
    return PolicyResult(
        name="oracle",
        vm_hours=vm_hours,
        idle_vm_hours=(extra_s + idle_min_s) / 3600.0,
        wait_p50_s=0.0,
        wait_p95_s=0.0,
        wait_max_s=0.0,
        jobs=len(trace.jobs),
        jobs_never_started=0,
        boots=boots,
        failed_boots=0,
        booting_vm_hours=boots * boot_time_s / 3600.0,
        min_idle_vm_hours=idle_min_s / 3600.0,
    )
