"""Retries of idempotent cloud calls, with tenacity: a 503 or a dropped connection should cost a second, not a cycle.

What is retried: calls that may be repeated without effect (list, read limits, find, delete), when the error
is transient (HTTP 5xx, timeouts, connections refused or dropped). What is not: a create. A create whose answer
was lost may have made the server; sending it again would make a second one with the same instance tag. The
engine keeps such a create's record `requested` instead, and the next listing of owned servers decides
(adopted if it exists, closed if not): the same path as a crash between the intent and the answer.

Drivers do not decide, and they do not write the store: each retry is recorded in a `RetryLog` the engine
empties every cycle into one decision (and a counter), so `marea status --explain` shows what was retried.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from marea.clouds.base import CloudError, CloudErrorKind

T = TypeVar("T")

#: error kinds worth another try of the same call
TRANSIENT = frozenset({CloudErrorKind.SERVER_ERROR, CloudErrorKind.TIMEOUT})


@dataclass(frozen=True, slots=True)
class RetryEvent:
    what: str
    attempt: int
    wait_s: float
    reason: str


class RetryLog:
    """Retries since the engine last looked; filled from the driver's threads."""

    def __init__(self) -> None:
        self._events: list[RetryEvent] = []
        self._lock = threading.Lock()

    def record(self, event: RetryEvent) -> None:
        with self._lock:
            self._events.append(event)

    def drain(self) -> list[RetryEvent]:
        with self._lock:
            events, self._events = self._events, []
        return events


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, CloudError) and exc.kind in TRANSIENT


def with_retries(
    fn: Callable[[], T],
    what: str,
    log: RetryLog,
    *,
    attempts: int = 3,
    initial_s: float = 0.5,
    max_wait_s: float = 4.0,
) -> T:
    """Call `fn` (which raises CloudError), again after a transient error: exponential backoff with jitter,
    `attempts` calls in all; the last error is raised as it is."""

    def note(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        reason = exc.reason if isinstance(exc, CloudError) else str(exc)
        log.record(RetryEvent(what, state.attempt_number, float(wait), reason))

    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=initial_s, max=max_wait_s) + wait_random(0, initial_s),
        before_sleep=note,
        reraise=True,
    )
    return retrying(fn)


def summary(events: list[RetryEvent]) -> str:
    """One line for the decision log: how many calls were retried, which, and the backoff waited."""
    whats: dict[str, int] = {}
    for e in events:
        whats[e.what] = whats.get(e.what, 0) + 1
    listed = ", ".join(f"{w} x{n}" for w, n in sorted(whats.items()))
    waited = sum(e.wait_s for e in events)
    last = events[-1].reason if events else ""
    return (
        f"{len(events)} cloud call(s) retried after transient errors ({listed}); backoff {waited:.1f} s; last: {last}"
    )
