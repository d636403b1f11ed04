"""The crash campaign, short form (the long form: benchmarks/chaos_crash.py): 10 trials of kill -9 of `marea run`
at random points of scale-up and scale-down on the real Slurm testbed; nothing leaks, no job is killed or
requeued, no boot goes over the maximum, no worker joins twice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .crash_campaign import run_campaign

pytestmark = pytest.mark.slurm


def test_random_kill_9_campaign_leaves_nothing_behind(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the Slurm tests need root (network namespaces)")
    result = run_campaign(10, seed=int(os.environ.get("MAREA_CHAOS_SEED", "14")), workdir=tmp_path)
    totals = result.totals()
    assert totals["trials"] == totals["completed"] == 10, totals
    assert totals["kills_scale_up"] > 0 and totals["kills_scale_down"] > 0, totals
    assert totals["leaked_vms"] == 0, totals
    assert totals["jobs_killed_or_requeued"] == 0, totals
    assert totals["boots_over_max"] == 0, totals
    assert totals["duplicate_joins"] == 0, totals
