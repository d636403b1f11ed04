"""`marea demo --web`: the demo's engine serves the live page, and the demo prints its address.

run_demo itself on a Slurm testbed of our own (namespace marea-slurm-dw, subnet 10.239.0), in a thread, while
the test reads the printed address and fetches the page and the status from it.
"""

from __future__ import annotations

import io
import os
import re
import threading
from typing import Any

import httpx
import pytest
from rich.console import Console

from marea.demo import SlurmTestbed, repo_root, run_demo
from tests.conftest import wait_until

pytestmark = pytest.mark.slurm


def test_demo_web_prints_the_address_and_serves_the_page_while_it_runs() -> None:
    if os.geteuid() != 0:
        pytest.fail("the demo needs root (network namespaces)")
    tb = SlurmTestbed(repo_root() / "testbeds" / "slurm.sh", base="/tmp/marea-slurm-dw", ns="marea-slurm-dw",
                      subnet="10.239.0")  # fmt: skip
    tb.run("stop", check=False)
    out = io.StringIO()
    results: list[Any] = []

    def run() -> None:
        results.append(
            run_demo(jobs=2, job_seconds=6, max_workers=1, timeout_s=240, testbed=tb, web_listen="127.0.0.1:19182",
                     console=Console(file=out, width=200))
        )  # fmt: skip

    demo = threading.Thread(target=run)
    demo.start()
    try:
        url = wait_until("the address printed", lambda: re.search(r"live page: (\S+)", out.getvalue()), 120)[1]
        assert url == "http://127.0.0.1:19182/"

        def status() -> Any:
            try:
                report = httpx.get(url + "api/status", timeout=5).json()
            except httpx.HTTPError:
                return None
            return report if report["workers"] else None

        report = wait_until("a worker on the demo's page", status, 120)
        assert report["cluster"] == "demo"
        page = httpx.get(url, timeout=5)
        assert page.status_code == 200 and 'id="workers-chart"' in page.text
    finally:
        demo.join(300)
    assert results and results[0].ok, results
    with pytest.raises(httpx.HTTPError):  # the demo's engine is gone, and its endpoint with it
        httpx.get(url, timeout=5)
