"""The change detector between two reconcile cycles: a new queued job starts the next cycle at once.

Why: a full cycle reads the whole queue and node table (Slurm: `squeue --json` and `sinfo --json`) and the cloud,
so it runs every `engine.interval_s` (5 s); a job submitted just after a cycle waited up to that long before its
VM was asked for. Between cycles the engine now asks only for the ids of the pending jobs (one light call:
`squeue --noheader --states=PENDING --partition=P --format=%i` on Slurm; on HTCondor one schedd query of the
idle jobs projected to ClusterId/ProcId; on Kubernetes one LIST of the unbound pending pods, of which the
Unschedulable count) every `engine.watch_interval_s`, and wakes the cycle when an id appears that the previous
poll did not show. Jobs leaving the queue wake nothing. A driver without a cheap call (`pending_jobs()` None)
and a failed call fall back to waiting the interval.
"""

from __future__ import annotations

import logging
import threading
import time

from marea.batch.base import BatchError, BatchSystem

log = logging.getLogger("marea.engine")


class QueueWatch:
    def __init__(self, batch: BatchSystem, every_s: float) -> None:
        self.batch = batch
        self.every_s = every_s
        self._last: frozenset[str] | None = None
        #: light calls made, and early wakes they caused (for `marea run`'s log and the benchmark)
        self.polls = 0
        self.wakes = 0

    def _new_jobs(self) -> bool:
        try:
            current = self.batch.pending_jobs()
        except BatchError as exc:
            log.debug("queue watch: %s", exc)
            return False
        self.polls += 1
        if current is None:
            self.every_s = 0.0  # no detector: stop asking
            return False
        new = self._last is not None and bool(current - self._last)
        self._last = current
        return new

    def wait(self, stop: threading.Event, deadline: float) -> None:
        """Sleep until `deadline` (time.monotonic()), `stop`, or a new queued job, whichever comes first."""
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self.every_s <= 0:
                stop.wait(left)
                return
            if stop.wait(min(left, self.every_s)):
                return
            if time.monotonic() < deadline and self._new_jobs():
                self.wakes += 1
                log.debug("queue watch: new queued job, cycle starts early")
                return
