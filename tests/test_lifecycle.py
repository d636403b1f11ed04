"""The lifecycle table (marea/lifecycle.py) and the store that enforces it (a real SQLite file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from marea.engine.store import InstanceRecord, Store
from marea.lifecycle import LEGAL_MOVES, IllegalTransition, check_move, is_legal
from marea.model import InstanceState

S = InstanceState


def reachable(start: InstanceState) -> set[InstanceState]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in LEGAL_MOVES[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_state_has_a_row_and_every_state_can_end() -> None:
    assert set(LEGAL_MOVES) == set(InstanceState)
    for state in InstanceState:
        assert S.GONE in reachable(state), f"{state} can never be cleaned up"
        assert state not in LEGAL_MOVES[state], "staying put is implicit, not a move"


def test_the_safety_rules_are_in_the_table() -> None:
    # no job is killed by a scale-down: a busy worker is drained, never deleted at once
    assert not is_legal(S.BUSY, S.DELETING) and is_legal(S.BUSY, S.DRAINING)
    # a deleting or failed worker is never trusted again with work: its only way on is out
    assert LEGAL_MOVES[S.DELETING] == {S.GONE}
    assert LEGAL_MOVES[S.FAILED] == {S.DELETING, S.GONE}
    # a draining worker may be taken back (resumed) when new work fits it; it keeps its jobs either way
    assert LEGAL_MOVES[S.DRAINING] == {S.IDLE, S.BUSY, S.DELETING, S.FAILED, S.GONE}
    assert is_legal(S.DRAINING, S.IDLE) and is_legal(S.DRAINING, S.BUSY)
    # a closed record comes back only as a booting worker (an owned VM the cloud lists again), which must join
    assert LEGAL_MOVES[S.GONE] == {S.BOOTING}
    # a VM that vanishes from the cloud can be closed from any live state
    assert all(is_legal(s, S.GONE) for s in InstanceState)
    with pytest.raises(IllegalTransition, match=r"w1: busy -> deleting is not a legal move"):
        check_move("w1", S.BUSY, S.DELETING)


def record(iid: str) -> InstanceRecord:
    return InstanceRecord(iid, "c", "m1.small", "", S.REQUESTED, 0.0, 0.0)


def test_the_store_refuses_an_illegal_move_and_keeps_the_history_of_legal_ones(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}", "c")
    store.add_instance(record("w1"))
    rec = store.get("w1")
    assert rec is not None
    rec = store.set_state(rec, S.BOOTING, 1.0, cloud_id="vm-1")
    rec = store.set_state(rec, S.IDLE, 2.0, joined_at=2.0)
    rec = store.set_state(rec, S.BUSY, 3.0)
    with pytest.raises(IllegalTransition):
        store.set_state(rec, S.DELETING, 4.0)
    with pytest.raises(IllegalTransition):  # the other door to a state change is guarded too
        store.update_instance(rec, state=S.REQUESTED)
    stored = store.get("w1")
    assert stored is not None and stored.state is S.BUSY, "a refused move must change nothing"
    rec = store.set_state(rec, S.DRAINING, 5.0)
    rec = store.set_state(rec, S.DELETING, 6.0)
    store.set_state(rec, S.GONE, 7.0)
    assert store.state_history("w1") == [
        (1.0, S.REQUESTED, S.BOOTING),
        (2.0, S.BOOTING, S.IDLE),
        (3.0, S.IDLE, S.BUSY),
        (5.0, S.BUSY, S.DRAINING),
        (6.0, S.DRAINING, S.DELETING),
        (7.0, S.DELETING, S.GONE),
    ]
    # the history survives the process: a new store on the same file reads it
    assert len(Store(f"sqlite:///{tmp_path / 'state.db'}", "c").state_history("w1")) == 6
