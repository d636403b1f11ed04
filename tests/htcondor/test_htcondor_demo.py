"""`marea demo --batch htcondor` on the real HTCondor 23.9 pool: the same function the CLI runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from marea.htcondor_demo import run_htcondor_demo
from tests.htcondor.conftest import CondorTestbed, script

pytestmark = pytest.mark.htcondor


def test_demo_flow_grows_completes_every_job_once_and_shrinks_to_min(condor: CondorTestbed) -> None:
    result = run_htcondor_demo(jobs=8, job_seconds=6, max_workers=3, timeout_s=240, cluster="hcdemo")
    assert result.ok, result
    assert result.jobs_completed == result.jobs_submitted == 8 and result.jobs_killed == 0, result
    assert 1 <= result.workers_peak <= 3, result
    assert result.workers_at_end == 0 and result.leaked_vms == 0 and result.failed_boots == 0, result
    assert not [p.name for p in Path("/run/netns").iterdir() if p.name.startswith("mvm-hcdemo-")]
    assert script("status")  # a pool the demo did not start is left running
