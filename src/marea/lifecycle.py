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

from collections.abc import Mapping

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
