"""The adaptive parallel-boot limit: how many VMs may be booting at once, learnt from the cloud's answers.

Why: a fixed cap of 10 made a burst of hundreds of jobs climb to the maximum in steps of 10 per boot time,
while elastiq launched everything at once; a high fixed cap would instead hammer a cloud that answers 429 or
"quota exceeded". So the limit behaves like TCP's congestion window: it starts at `initial_parallel_boots`,
doubles when a round of boots the cloud confirmed used at least half of it (up to `max_parallel_boots`, the
admin's bound), and halves after a cycle with any failed boot (an error, a 429, a quota answer, a VM in ERROR,
a join timeout).

Growth waits for the cloud's confirmation, not for its acceptance: Nova accepts parallel creates that race
past its API quota check and its conductor puts the excess in ERROR a moment later, so counting accepted
creates grew the limit on the very answers that should have shrunk it. A *round* is one cycle's creates, all
accepted, asked at the current limit; a create is *confirmed* when the cloud lists its VM as ACTIVE or the
batch system shows it joined. The round "used at least half of the limit" when its size is at least half the
limit in force when it was asked, and it counts once every VM of it is confirmed, in whichever later cycle
that happens. Any change of the limit forgets the rounds in flight: they were asked at another limit, and
like a window that grows only while it is the bottleneck, one doubling must be earned at the new size. A
round that loses a VM without a failure (deleted or forgotten before it was confirmed) is dropped; a round
smaller than half the limit is kept only when it brought the boots in flight up to the limit (a burst that
trickles in over many cycles fills the limit a few VMs at a time and waits on it: the limit is then the
bottleneck, and such a round counts as half the limit). A trickle that never fills the limit (one VM per cycle
on a quiet cluster) never raises it, so a burst much later still starts at a tested size.

Pure: the engine and the simulator report what their creates did and what they saw confirmed; the state (the
limit and the rounds in flight) lives in the store (the engine), so that a restart keeps it and counts no
confirmation twice.
"""

from __future__ import annotations

from collections.abc import Collection

from marea.model import BootRamp, BootRound, PolicySettings


def parallel_limit(ramp: BootRamp, settings: PolicySettings) -> int:
    """The number of VMs that may be booting at once now (at least 1, at most `max_parallel_boots`)."""
    start = ramp.limit if ramp.limit is not None else settings.initial_parallel_boots
    return max(1, min(settings.max_parallel_boots, start))


def _fills_limit(accepted: Collection[str], in_flight: int, limit: int) -> bool:
    """Whether this cycle's creates brought the boots in flight up to the limit: the limit was the bottleneck.

    Why: a burst that trickles in over many cycles asks a few VMs per cycle, never half the limit at once, yet
    fills the limit and waits on it (seen in the simulator: on a 10-day workload of 1-core bursts the limit never
    doubled). Like a congestion window that grows while it is full, such a round counts as a full one.
    """
    return len(accepted) + in_flight >= limit


def next_ramp(
    ramp: BootRamp,
    settings: PolicySettings,
    *,
    accepted: Collection[str] = (),
    confirmed: Collection[str] = (),
    failed: int = 0,
    booting: Collection[str] | None = None,
    in_flight: int = 0,
) -> BootRamp:
    """The ramp after one cycle.

    `accepted`: the instances whose create the cloud accepted in this cycle (a new round). `confirmed`:
    instances the cycle saw ACTIVE in the cloud or joined (any; those of no round are ignored). `failed`: the
    cycle's failed boots (refused creates included). `booting`: the instances the cycle saw still on their way
    (neither confirmed nor failed); a round waiting for an instance in none of these lost it and is dropped.
    None: the cycle saw nothing (the cloud could not be listed), so no round is dropped. `in_flight`: the VMs
    the cycle found on their way before its creates (those the parallel-boot limit counts).
    """
    limit = parallel_limit(ramp, settings)
    if failed > 0:
        return BootRamp(max(1, limit // 2))
    confirmed_set = frozenset(confirmed)
    present = None if booting is None else confirmed_set | frozenset(booting) | frozenset(accepted)
    rounds: list[BootRound] = []
    grow = False
    for r in ramp.rounds:
        waiting = r.waiting - confirmed_set
        if present is not None and not waiting <= present:
            continue  # a VM of it went without being confirmed or failing: the round proves nothing
        if waiting:
            rounds.append(BootRound(r.size, waiting))
        elif r.size * 2 >= limit:
            grow = True
    if grow and limit < settings.max_parallel_boots:
        return BootRamp(min(settings.max_parallel_boots, limit * 2))
    if accepted and (len(accepted) * 2 >= limit or _fills_limit(accepted, in_flight, limit)):
        rounds.append(BootRound(max(len(accepted), -(-limit // 2)), frozenset(accepted)))
    return BootRamp(ramp.limit, tuple(rounds))
