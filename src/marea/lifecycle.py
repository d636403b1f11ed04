"""The worker lifecycle in one table: every state a worker VM can be in, and the states it may move to.

Why one table: the moves are made in several places (the reconciler's observation of the cloud and the batch
system, the policy's drains and deletes, the boot path), and a reader should learn the whole lifecycle from one
screen, as in Ray's autoscaler v2 (`instance_manager/common.py`). The store checks every change of state
against it and refuses an illegal one, so a bug that would, say, delete a busy worker or put a deleting one
back to work stops there instead of acting on the cloud; each accepted move is kept in the instance's history.

    requested --create accepted--> booting --joined--> idle <--> busy
        |                            |                  |         |
        +--create failed, lost-------+--> failed --> deleting --> gone
                                     |                  ^
    idle/busy --policy--> draining --drained-------------+   (a VM that vanishes: any state --> gone)
                   <--resumed--'   (new work fits a draining worker: taken back instead of booting a VM)

Pure: imports only the model.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from marea.model import InstanceState

S = InstanceState

#: state -> the states it may move to (and why, in the comment)
LEGAL_MOVES: Mapping[InstanceState, frozenset[InstanceState]] = {
    # the cloud accepted the create (or the VM was found after a restart) / the create failed or never landed
    S.REQUESTED: frozenset({S.BOOTING, S.GONE}),
    # joined idle or busy / the cloud reported an error / the policy gave up waiting (join timeout) / vanished
    S.BOOTING: frozenset({S.IDLE, S.BUSY, S.FAILED, S.DELETING, S.GONE}),
    # work started / scale-down drains, or deletes at once (the batch system refuses if work arrived) /
    # left the batch system, or the cloud reports an error / vanished
    S.IDLE: frozenset({S.BUSY, S.DRAINING, S.DELETING, S.FAILED, S.GONE}),
    # work ended / drained for scale-down / lost by the batch system / vanished. Never straight to deleting:
    # a busy worker is drained first, so no job is killed by a scale-down
    S.BUSY: frozenset({S.IDLE, S.DRAINING, S.FAILED, S.GONE}),
    # drained: deleted / lost while draining / vanished / resumed (new work fits it: taken back, idle or
    # busy as the batch system shows it, before any new VM boots)
    S.DRAINING: frozenset({S.IDLE, S.BUSY, S.DELETING, S.FAILED, S.GONE}),
    # the batch system forgot it and the cloud deleted it
    S.DELETING: frozenset({S.GONE}),
    # deleted from the batch system and the cloud / vanished on its own
    S.FAILED: frozenset({S.DELETING, S.GONE}),
    # closed for good, but for one case: the cloud lists an owned VM whose record was closed (its create's answer
    # was lost and the next listing did not show it yet). The VM is the truth: adopted again, it must join
    # within the join timeout like any booting worker, or it is deleted (a VM marea deleted is never adopted)
    S.GONE: frozenset({S.BOOTING}),
}


class IllegalTransition(Exception):
    """A move the lifecycle table forbids: a bug in the caller, refused before anything is acted on."""

    def __init__(self, instance_id: str, old: InstanceState, new: InstanceState) -> None:
        allowed = ", ".join(sorted(s.value for s in LEGAL_MOVES[old])) or "nothing"
        super().__init__(f"{instance_id}: {old.value} -> {new.value} is not a legal move ({old.value} -> {allowed})")
        self.instance_id, self.old, self.new = instance_id, old, new


def is_legal(old: InstanceState, new: InstanceState) -> bool:
    """True for a move the table allows; staying in the same state is always allowed."""
    return old is new or new in LEGAL_MOVES[old]


def check_move(instance_id: str, old: InstanceState, new: InstanceState) -> None:
    if not is_legal(old, new):
        raise IllegalTransition(instance_id, old, new)


# -- observation: what the cloud and the batch system say -> the next state ----------------------------------------
#
# The engine's reconciler and the simulator both move a worker on what they observe through `observe` below, so
# the simulator follows the engine's lifecycle rules by construction, not by imitation.


class Cloud(enum.Enum):
    """What the cloud's listing says of the worker's VM (the engine maps its driver's VMStatus onto these)."""

    MISSING = "missing"  # not listed, or listed as deleted
    ERROR = "error"  # listed in an error state
    UP = "up"  # listed: building, active, deleting on its way out, unknown


class Batch(enum.Enum):
    """What the batch system says of the worker."""

    ABSENT = "absent"  # not in the batch system
    LOST = "lost"  # present but lost (Slurm DOWN / NOT_RESPONDING, an HTCondor ad past lost_after_s)
    LOST_BUSY = "lost busy"  # lost, and its last word was that jobs run on it
    IDLE = "idle"  # present, running nothing
    BUSY = "busy"  # present, running at least one job


class Rule(enum.Enum):
    """What an observation does, beyond the next state the table gives."""

    NONE = "none"
    #: a record whose create was in flight: the VM exists, so it is booting; observed again as booting
    ADOPT = "adopt"
    #: a failed boot is counted (`failed_boot` kind below), then the worker moves
    FAILED_BOOT = "failed boot"
    #: the cloud reports an error: failed (a failed boot when the worker never joined)
    CLOUD_ERROR = "cloud error"
    #: the cloud reports an error but jobs still run: jobs come first, the worker is kept (with a warning)
    ERROR_BUT_BUSY = "error but busy"
    #: a joined worker missing from (or lost by) the batch system: failed once the absent grace has passed
    ABSENT_GRACE = "absent grace"
    #: the worker joined the batch system
    JOINED = "joined"


@dataclass(frozen=True, slots=True)
class Row:
    """One row of the table: the next state and the rule that goes with it."""

    next: InstanceState
    rule: Rule = Rule.NONE
    failure: str | None = None


_ANY_CLOUD = tuple(Cloud)
_ANY_BATCH = tuple(Batch)
_JOINED = (S.IDLE, S.BUSY, S.DRAINING)
_PRESENT = (Batch.IDLE, Batch.BUSY)
_GONE_FROM_BATCH = (Batch.ABSENT, Batch.LOST, Batch.LOST_BUSY)


def _rows() -> list[tuple[tuple[InstanceState, ...], tuple[Cloud, ...], tuple[Batch, ...], Row]]:
    """The table as written by hand: (states, cloud says, batch says) -> row. Every combination appears once."""
    gone = "VM disappeared from the cloud"
    rows: list[tuple[tuple[InstanceState, ...], tuple[Cloud, ...], tuple[Batch, ...], Row]] = [
        # a create whose answer never came: no VM -> closed; a VM -> booting (then observed as booting)
        ((S.REQUESTED,), (Cloud.MISSING,), _ANY_BATCH, Row(S.GONE, failure="create interrupted; no VM exists")),
        ((S.REQUESTED,), (Cloud.ERROR, Cloud.UP), _ANY_BATCH, Row(S.BOOTING, Rule.ADOPT)),
        # closed or on its way out: nothing an observation says changes it
        ((S.DELETING,), _ANY_CLOUD, _ANY_BATCH, Row(S.DELETING)),
        ((S.GONE,), _ANY_CLOUD, _ANY_BATCH, Row(S.GONE)),
        # the VM vanished: gone (a failed boot when it never joined)
        ((S.BOOTING,), (Cloud.MISSING,), _ANY_BATCH, Row(S.GONE, Rule.FAILED_BOOT, gone)),
        ((*_JOINED, S.FAILED), (Cloud.MISSING,), _ANY_BATCH, Row(S.GONE, failure=gone)),
        # the cloud reports an error: failed, unless jobs still run on it
        (
            (S.BOOTING, *_JOINED),
            (Cloud.ERROR,),
            (Batch.ABSENT, Batch.LOST, Batch.IDLE),
            Row(S.FAILED, Rule.CLOUD_ERROR),
        ),
        ((S.BOOTING,), (Cloud.ERROR,), (Batch.BUSY,), Row(S.BUSY, Rule.ERROR_BUT_BUSY)),
        # ... a lost worker that said jobs run on it is not failed by the error, only by the absent grace
        ((S.BOOTING,), (Cloud.ERROR,), (Batch.LOST_BUSY,), Row(S.BOOTING, Rule.ERROR_BUT_BUSY)),
        ((S.IDLE, S.BUSY), (Cloud.ERROR,), (Batch.LOST_BUSY,), Row(S.FAILED, Rule.ABSENT_GRACE)),
        ((S.DRAINING,), (Cloud.ERROR,), (Batch.LOST_BUSY,), Row(S.DRAINING, Rule.ERROR_BUT_BUSY)),
        ((S.IDLE, S.BUSY), (Cloud.ERROR,), (Batch.BUSY,), Row(S.BUSY, Rule.ERROR_BUT_BUSY)),
        ((S.DRAINING,), (Cloud.ERROR,), (Batch.BUSY,), Row(S.DRAINING, Rule.ERROR_BUT_BUSY)),
        # failed: waits for the policy to delete it
        ((S.FAILED,), (Cloud.ERROR, Cloud.UP), _ANY_BATCH, Row(S.FAILED)),
        # not (or no longer) in the batch system: a booting VM waits (the policy's join timeout ends it), an
        # idle or busy one is failed after the grace, a draining one counts as drained (the policy deletes it)
        ((S.BOOTING,), (Cloud.UP,), _GONE_FROM_BATCH, Row(S.BOOTING)),
        ((S.IDLE, S.BUSY), (Cloud.UP,), _GONE_FROM_BATCH, Row(S.FAILED, Rule.ABSENT_GRACE)),
        ((S.DRAINING,), (Cloud.UP,), _GONE_FROM_BATCH, Row(S.DRAINING)),
        # in the batch system
        ((S.BOOTING,), (Cloud.UP,), (Batch.IDLE,), Row(S.IDLE, Rule.JOINED)),
        ((S.BOOTING,), (Cloud.UP,), (Batch.BUSY,), Row(S.BUSY, Rule.JOINED)),
        ((S.IDLE, S.BUSY), (Cloud.UP,), (Batch.IDLE,), Row(S.IDLE)),
        ((S.IDLE, S.BUSY), (Cloud.UP,), (Batch.BUSY,), Row(S.BUSY)),
        ((S.DRAINING,), (Cloud.UP,), _PRESENT, Row(S.DRAINING)),
    ]
    return rows


def build_table(
    rows: list[tuple[tuple[InstanceState, ...], tuple[Cloud, ...], tuple[Batch, ...], Row]],
) -> dict[tuple[InstanceState, Cloud, Batch], Row]:
    """Expand the hand-written rows into one entry per (state, cloud, batch). Refuses a combination written twice
    or missing, and a row whose move `LEGAL_MOVES` forbids: a table that breaks the lifecycle cannot load."""
    table: dict[tuple[InstanceState, Cloud, Batch], Row] = {}
    for states, clouds, batches, row in rows:
        for state in states:
            for cloud in clouds:
                for batch in batches:
                    key = (state, cloud, batch)
                    if key in table:
                        raise ValueError(
                            f"lifecycle table: {state.value} x {cloud.value} x {batch.value} written twice"
                        )
                    # (an ABSENT_GRACE row stays until the grace is over, then moves: staying is always legal)
                    check_move(f"table {state.value} x {cloud.value} x {batch.value}", state, row.next)
                    table[key] = row
    missing = [(s, c, b) for s in InstanceState for c in Cloud for b in Batch if (s, c, b) not in table]
    if missing:
        s, c, b = missing[0]
        raise ValueError(f"lifecycle table: {s.value} x {c.value} x {b.value} has no row ({len(missing)} missing)")
    return table


#: (state, what the cloud says, what the batch system says) -> the next state and its rule
OBSERVE: Mapping[tuple[InstanceState, Cloud, Batch], Row] = build_table(_rows())


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of one observation: what the caller writes (the store, or the simulated worker)."""

    state: InstanceState
    #: the worker's idle-since after the observation (None: not idle)
    idle_since: float | None
    #: the joined worker's absent-since timer after the observation (None: no timer)
    absent_since: float | None
    rule: Rule = Rule.NONE
    failure: str | None = None
    #: a failed boot to count, by kind (metrics.FAILED_BOOT_KINDS): "vanished" or "cloud_error"
    failed_boot: str | None = None
    #: True when the worker joined the batch system at this observation
    joined: bool = False
    #: the cloud reports an error but jobs still run on the worker: kept, and worth a warning
    jobs_despite_error: bool = False


def observe(
    state: InstanceState,
    cloud: Cloud,
    batch: Batch,
    *,
    now: float,
    idle_since: float | None = None,
    absent_since: float | None = None,
    ever_joined: bool = False,
    absent_grace_s: float = 120.0,
    fault: str = "",
) -> Transition:
    """The next state of a worker in `state` when the cloud says `cloud` and the batch system says `batch`.

    Pure: the caller persists the result (the engine through the store, which checks the move again; the
    simulator on its worker). `idle_since` is kept while the worker stays idle, set to `now` when it becomes idle
    (or is seen idle with none), cleared when it runs work; `absent_since` is the persisted grace timer of a joined
    worker missing from the batch system. `ever_joined`: a cloud error before the first join is a failed boot.
    """
    row = OBSERVE[(state, cloud, batch)]
    rule = row.rule
    if rule is Rule.ADOPT:
        return Transition(S.BOOTING, idle_since, absent_since, rule)
    if state in (S.DELETING, S.GONE, S.FAILED) or row.next is S.GONE:
        failed_boot = "vanished" if rule is Rule.FAILED_BOOT else None
        return Transition(row.next, idle_since, absent_since, rule, row.failure, failed_boot)
    if rule is Rule.CLOUD_ERROR:
        failed_boot = None if ever_joined else "cloud_error"
        return Transition(S.FAILED, idle_since, absent_since, rule, f"cloud: {fault or 'ERROR'}", failed_boot)
    if rule is Rule.ABSENT_GRACE:
        since = now if absent_since is None else absent_since
        if now - since > absent_grace_s:
            failure = "worker left the batch system" if batch is Batch.ABSENT else "the batch system lost the worker"
            return Transition(S.FAILED, idle_since, None, rule, failure, jobs_despite_error=cloud is Cloud.ERROR)
        return Transition(state, idle_since, since, rule, jobs_despite_error=cloud is Cloud.ERROR)
    warn = rule is Rule.ERROR_BUT_BUSY
    if batch in _GONE_FROM_BATCH:  # booting (not joined yet) or draining: nothing changes
        return Transition(row.next, idle_since, absent_since, rule, jobs_despite_error=warn)
    # present in the batch system: the absent timer is over
    busy = batch is Batch.BUSY
    if rule is Rule.JOINED or (warn and state is S.BOOTING):
        return Transition(row.next, None if busy else now, None, Rule.JOINED, joined=True, jobs_despite_error=warn)
    if busy:  # only the move idle -> busy clears it
        new_idle = None if state is S.IDLE else idle_since
    else:
        new_idle = now if (state is S.BUSY or idle_since is None) else idle_since
    return Transition(row.next, new_idle, None, rule, jobs_despite_error=warn)
