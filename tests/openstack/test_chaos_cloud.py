"""The cloud-fault campaign, short form (the long form: benchmarks/chaos_cloud.py): the engine converges to the
demand and back to 0 through a proxy that fails 30 % of the OpenStack calls, and leaks nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fault_proxy import Faults

from .chaos import run_campaign
from .conftest import OpenStackTestbed

pytestmark = pytest.mark.openstack


def test_engine_converges_and_leaks_nothing_through_a_faulty_cloud(
    testbed: OpenStackTestbed, demo: Any, tmp_path: Path
) -> None:
    result = run_campaign(demo, testbed.clouds_yaml, tmp_path, rounds=2, demand=3, faults=Faults(), seed=14)
    assert result.converged_up == result.converged_down == 2, result
    assert result.leaked_servers == 0 and result.servers_over_max == 0, result
    # the faults really happened, and the engine's retries and backoff show in its decisions
    assert result.proxy.get("error", 0) > 0 and result.proxy.get("requests", 0) > 20, result.proxy
    assert result.retries > 0 and result.retry_decisions > 0, result
