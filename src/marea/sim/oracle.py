"""Two yardsticks computed from the trace alone (no simulation): the oracle, a true lower bound on the VM-hours of
any policy, and the instant cluster, the cheapest cluster that starts every job when it is submitted.

**The oracle** (`lower_bound`): no policy, however clever or however long it lets jobs wait, can use fewer
VM-hours. Every simulated policy keeps at least `min_workers` VMs from the first submission T0 until the last job
has ended, which is no earlier than T1 = max(submit + run time). In [T0, T1] those VMs can do at most what a fluid
queue of capacity min_workers x C cores serves (jobs split at will and run as soon as submitted, the most any
schedule can do by T1); the rest, B(T1), needs other VM time, at C cores per VM-second. So

    VM-time >= min_workers x (T1 - T0) + B(T1) / C          (and + one boot, if min_workers = 0)

for cores, and the same for memory and GPUs; the oracle is the largest. It allows any wait, so a policy with short
waits is above it by what its waits save it from: the gap is an upper bound on what a better policy could gain.

**The instant cluster** (`instant`), the former oracle: every job starts at its submit time, as long as
max_workers allows; work beyond max_workers is delayed (a fluid backlog served as soon as capacity frees), never
dropped. The fluid VMs needed at t, f(t) = max(L_cores/C, L_mem/M, L_gpus/G), are served up to max_workers, and
n(t) = ceil(served), at least min_workers. VMs are stacked in levels (level k is needed while n(t) >= k); a level's
VM is booted just in time (its boot, paid, ends when the level is needed) and deleted the moment it is not needed,
unless the level is needed again within one boot (+ its price), when keeping it is cheaper. Per level: needed time
+ one boot (+ price) + min(gap, boot + price) per gap; levels 1..min_workers are there from the start. It is the
cost of zero waits, not a bound on policies that let jobs wait: one VM running two jobs that arrive apart one
after the other (the second queued meanwhile) can cost less than the instant cluster's gap.
"""

from __future__ import annotations

import math

from marea.model import Flavour
from marea.sim.simulator import PolicyResult
from marea.sim.trace import Trace, TraceJob

_EPS = 1e-9


def _dims(flavour: Flavour, jobs: tuple[TraceJob, ...]) -> list[tuple[int, float]]:
    """(index in a job's (cores, memory, gpus), the flavour's capacity) for every dimension the jobs use."""
    dims = [(0, float(flavour.cores))]
    if flavour.memory_mb and any(j.memory_mb > 0 for j in jobs):
        dims.append((1, float(flavour.memory_mb)))
    if flavour.gpus and any(j.gpus > 0 for j in jobs):
        dims.append((2, float(flavour.gpus)))
    return dims


def _deltas(jobs: tuple[TraceJob, ...]) -> tuple[list[float], dict[float, list[float]]]:
    deltas: dict[float, list[float]] = {}
    for j in jobs:
        for t, sign in ((j.submit, 1.0), (j.submit + j.runtime, -1.0)):
            d = deltas.setdefault(t, [0.0, 0.0, 0.0])
            d[0] += sign * j.cores
            d[1] += sign * j.memory_mb
            d[2] += sign * j.gpus
    return sorted(deltas), deltas


def lower_bound_s(trace: Trace, flavour: Flavour, min_workers: int, boot_s: float) -> tuple[float, float]:
    """(VM-seconds no policy can go below, the work in VM-seconds of the binding dimension); see the module doc.
    `boot_s` is one boot's cost (boot time + price), paid once when the minimum is 0."""
    jobs = trace.jobs
    if not jobs:
        return 0.0, 0.0
    times, deltas = _deltas(jobs)
    t0, t1 = times[0], times[-1]
    best, best_work = 0.0, 0.0
    for k, cap in _dims(flavour, jobs):
        rate_cap = min_workers * cap  # what the minimum workers serve per second
        load, backlog, work = 0.0, 0.0, 0.0
        prev = t0
        for t in times:
            dt = t - prev
            # in [prev, t) the arrival rate is `load`: the fluid queue serves min(rate_cap, load + backlog)
            backlog = max(0.0, backlog + (load - rate_cap) * dt)
            prev = t
            load = max(0.0, load + deltas[t][k])
        work = sum(j.runtime * (j.cores, j.memory_mb, float(j.gpus))[k] for j in jobs) / cap
        need = min_workers * (t1 - t0) + backlog / cap
        if need > best:
            best, best_work = need, work
    if min_workers == 0 and best > 0:
        best += boot_s
    return best, best_work


def oracle(
    trace: Trace, flavour: Flavour, min_workers: int, max_workers: int, boot_time_s: float, boot_price_s: float = 0.0
) -> PolicyResult:
    """The lower bound as a result row: VM-hours no policy goes below; its idle part is what is not work."""
    vm_s, work_s = lower_bound_s(trace, flavour, min_workers, boot_time_s + boot_price_s)
    boots = 1 if min_workers == 0 and vm_s > 0 else 0
    return _zero_wait_result("oracle", vm_s, vm_s - work_s, len(trace.jobs), boots, boot_time_s + boot_price_s)


def _zero_wait_result(
    name: str, vm_s: float, idle_s: float, jobs: int, boots: int, boot_cost_s: float, min_idle_s: float = 0.0
) -> PolicyResult:
    """A yardstick's result row: no waits, every job started, no failed boot; times in seconds, the row in hours."""
    return PolicyResult(
        name=name,
        vm_hours=vm_s / 3600.0,
        idle_vm_hours=max(0.0, idle_s) / 3600.0,
        wait_p50_s=0.0,
        wait_p95_s=0.0,
        wait_max_s=0.0,
        jobs=jobs,
        jobs_never_started=0,
        boots=boots,
        failed_boots=0,
        booting_vm_hours=boots * boot_cost_s / 3600.0,
        min_idle_vm_hours=min_idle_s / 3600.0,
    )


def _served_levels(
    times: list[float], deltas: dict[float, list[float]], flavour: Flavour, max_workers: int
) -> list[tuple[float, float]]:
    """(t, fluid VMs served from t on): the load, with the part above max_workers delayed as a fluid backlog."""
    C, M, G = float(flavour.cores), float(flavour.memory_mb), float(flavour.gpus)
    cap = float(max_workers)
    out: list[tuple[float, float]] = []
    load = [0.0, 0.0, 0.0]
    backlog = 0.0  # VM-seconds of delayed work
    f = 0.0
    for i, t in enumerate(times):
        d = deltas[t]
        load = [load[0] + d[0], load[1] + d[1], load[2] + d[2]]
        # (jobs that do not fit the flavour were taken out before: runnable())
        f = max(load[0] / C, load[1] / M if M else 0.0, load[2] / G if G else 0.0, 0.0)
        nxt = times[i + 1] if i + 1 < len(times) else t
        dt = nxt - t
        if backlog <= _EPS and f <= cap:
            out.append((t, f))
            continue
        # served at full capacity while the backlog lasts
        out.append((t, cap))
        grow = (f - cap) * dt
        if backlog + grow > _EPS:
            backlog += grow
        else:  # the backlog empties within [t, nxt): back to the load from then on
            t_empty = t + backlog / (cap - f)
            backlog = 0.0
            if t_empty < nxt:
                out.append((t_empty, f))
    if backlog > _EPS:  # after the last job ended: what is still delayed runs at capacity
        last = times[-1]
        out.append((last + backlog / cap, 0.0))
    return out


def instant(
    trace: Trace, flavour: Flavour, min_workers: int, max_workers: int, boot_time_s: float, boot_price_s: float = 0.0
) -> PolicyResult:
    """The instant cluster (see the module doc): VM-hours of zero waits (delays only beyond max_workers)."""
    if not trace.jobs:
        return _zero_wait_result("instant", 0.0, 0.0, 0, 0, 0.0)
    times, deltas = _deltas(trace.jobs)
    served = _served_levels(times, deltas, flavour, max_workers)
    start, end = served[0][0], served[-1][0]
    boot_cost = boot_time_s + boot_price_s
    busy_s = 0.0  # sum over levels of the time they are needed
    extra_s = 0.0  # boots and bridged gaps
    loaded_s = 0.0  # VM time with load on the VM (fluid packing: ceil(f) VMs carry the load)
    boots = 0
    since: dict[int, float] = {k: start for k in range(1, min_workers + 1)}
    last_end: dict[int, float] = {}
    level = min_workers
    idle_min_s = 0.0  # minimum workers kept with no load on them
    prev_t, prev_loaded = start, 0
    for t, f in served:
        loaded_s += prev_loaded * (t - prev_t)
        idle_min_s += max(0, min_workers - prev_loaded) * (t - prev_t)
        raw = min(max_workers, math.ceil(f - _EPS))
        prev_t, prev_loaded = t, raw
        n = max(min_workers, raw)
        if n > level:
            for k in range(level + 1, n + 1):
                released = last_end.get(k)
                if released is None or t - released > boot_cost:
                    extra_s += boot_cost
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
    vm_s = busy_s + extra_s
    return _zero_wait_result("instant", vm_s, vm_s - loaded_s, len(trace.jobs), boots, boot_cost, idle_min_s)
