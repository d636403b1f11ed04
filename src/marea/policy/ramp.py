"""The adaptive parallel-boot limit: how many VMs may be booting at once, learnt from the cloud's answers.

Why: a fixed cap of 10 made a burst of hundreds of jobs climb to the maximum in steps of 10 per boot time,
while elastiq launched everything at once; a high fixed cap would instead hammer a cloud that answers 429 or
"quota exceeded". So the limit behaves like TCP's congestion window: it starts at `initial_parallel_boots`,
doubles after a cycle whose creates all succeeded and used at least half of it (up to `max_parallel_boots`,
the admin's bound; like a window that grows only while it is the bottleneck, a trickle of one VM per cycle
does not raise it, so a burst much later still starts at a tested size), and halves after a cycle with any
failed boot (an error, a 429, a quota answer, a VM in ERROR, a join timeout).

Pure: the engine and the simulator report what their creates did; the state lives in the store (the engine)
so that a restart keeps it.
"""

from __future__ import annotations

from marea.model import BootRamp, PolicySettings


def parallel_limit(ramp: BootRamp, settings: PolicySettings) -> int:
    """The number of VMs that may be booting at once now (at least 1, at most `max_parallel_boots`)."""
    start = ramp.limit if ramp.limit is not None else settings.initial_parallel_boots
    return max(1, min(settings.max_parallel_boots, start))


def next_ramp(ramp: BootRamp, settings: PolicySettings, created: int, failed: int) -> BootRamp:
    """The limit after a cycle in which `created` creates succeeded and `failed` boots failed.

    A cycle that tried nothing, or used less than half of the limit, leaves it as it is.
    """
    limit = parallel_limit(ramp, settings)
    if failed > 0:
        new = max(1, limit // 2)
    elif created > 0 and created * 2 >= limit:
        new = min(settings.max_parallel_boots, limit * 2)
    else:
        return ramp
    return BootRamp(new)
