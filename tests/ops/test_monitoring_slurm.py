"""Monitoring end to end on the real Slurm testbed: Debian's Prometheus scrapes a running `marea run` during a
scale-up, and Debian's Chromium (headless, driven by selenium through chromium-driver) watches the live page.

One scenario serves both tests, because the scale-up is the slow part: a Slurm 22.05 controller of our own
(namespace marea-slurm-mon, subnet 10.238.0, so it runs beside tests/slurm), the engine with the local cloud
driver (each VM a real slurmd in its own namespace) and `[web] listen` on 127.0.0.1:19181, Prometheus on
127.0.0.1:19190 with a fresh data directory, scraping every second and loading the shipped alerting rules.
Four one-core jobs of 15 s on two-core workers: the engine boots two workers, they run the jobs, then they
are drained and deleted. The browser polls the page while that happens; Prometheus is queried afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from marea.config import load_config
from marea.demo import EngineProcess, SlurmTestbed, repo_root, submit_jobs, write_demo_config
from marea.engine.store import Store
from marea.monitoring import alert_rules_path
from marea.templates import worker_template
from tests.conftest import wait_until
from tests.slurm.conftest import cleanup_vms

pytestmark = pytest.mark.slurm

WEB = "127.0.0.1:19181"
PROM = "127.0.0.1:19190"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",  # containers give /dev/shm 64 MB, which a renderer can outgrow
    "--window-size=412,1400",  # a phone's width
]  # fmt: skip


@dataclass
class Scenario:
    """What the browser saw, and what is left to query once the scale-up is over."""

    store: Store
    prometheus: str
    workers_seen: list[str] = field(default_factory=list)  # the chart's latest sample, each time it changed
    kinds_seen: list[set[str]] = field(default_factory=list)  # the decisions table's kinds, each time it changed
    counts_seen: list[int] = field(default_factory=list)
    areas_seen: list[frozenset[str]] = field(default_factory=list)  # the states the chart draws an area for
    screenshot: Path | None = None
    jobs_done: bool = False


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is missing: run `bash testbeds/prometheus.sh install` (make testbeds does)")
    return path


def _start_prometheus(workdir: Path) -> subprocess.Popen[bytes]:
    workdir.mkdir()
    (workdir / "prometheus.yml").write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(alert_rules_path())],
                "scrape_configs": [{"job_name": "marea", "static_configs": [{"targets": [WEB]}]}],
            }
        )
    )
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        [
            _need("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address={PROM}",
        ],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def _browser(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # selenium must use the system's browser and driver, never download one
    opts = webdriver.ChromeOptions()
    opts.binary_location = _need("chromium")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=_need("chromedriver")), options=opts)


def _page_state(driver: Any) -> tuple[str, set[str], int, frozenset[str]]:
    """The chart's latest sample, the decision kinds in the table, the worker count: read in one script, so
    that a redraw between reads cannot mix two polls."""
    chart, kinds, count, areas = driver.execute_script(
        "return [document.getElementById('workers-chart').dataset.latest || '',"
        " Array.from(document.querySelectorAll('#decisions tbody tr')).map((r) => r.dataset.kind),"
        " document.getElementById('worker-count').textContent,"
        " Array.from(document.querySelectorAll('#workers-chart polygon')).map((p) => p.dataset.state)]"
    )
    return str(chart), set(kinds), int(count) if str(count).isdigit() else -1, frozenset(areas)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    if os.geteuid() != 0:
        pytest.fail("the monitoring test needs root (network namespaces for Slurm and the worker VMs)")
    _need("slurmctld")
    tmp = tmp_path_factory.mktemp("monitoring")
    tb = SlurmTestbed(repo_root() / "testbeds" / "slurm.sh", base="/tmp/marea-slurm-mon", ns="marea-slurm-mon",
                      subnet="10.238.0")  # fmt: skip
    tb.run("stop", check=False)
    tb.run("start")
    # a VM that boots in 4 s, as a cloud's do in minutes: a local one joins within a cycle, and the booting
    # state would then be too short for a scrape or a poll to see
    user_data = worker_template("slurm-worker.sh").replace("#!/bin/sh\n", "#!/bin/sh\nsleep 4\n", 1)
    cfg_path = write_demo_config(tmp, tb, cluster="mon", max_workers=2, idle_threshold_s=4, interval_s=1,
                                 web_listen=WEB, user_data=user_data)  # fmt: skip
    cfg = load_config(cfg_path)
    engine = EngineProcess(cfg_path)
    prom: subprocess.Popen[bytes] | None = None
    driver: Any = None
    store = Store(cfg.state_url(), cfg.cluster.name)
    try:
        prom = _start_prometheus(tmp / "prometheus")
        engine.start()
        wait_until("the engine's /metrics", lambda: _get(f"http://{WEB}/metrics"), 60)
        wait_until("Prometheus ready", lambda: _get(f"http://{PROM}/-/ready"), 60)
        driver = _browser(tmp / "chromium-profile")
        driver.get(f"http://{WEB}/")
        sc = Scenario(store, f"http://{PROM}")
        wait_until("the page's first poll", lambda: _page_state(driver)[2] == 0, 30)
        ids = submit_jobs(tb, 4, 15)

        def watch() -> bool:
            chart, kinds, count, areas = _page_state(driver)
            if not sc.areas_seen or sc.areas_seen[-1] != areas:
                sc.areas_seen.append(areas)
            if not sc.workers_seen or sc.workers_seen[-1] != chart:
                sc.workers_seen.append(chart)
            if not sc.kinds_seen or sc.kinds_seen[-1] != kinds:
                sc.kinds_seen.append(kinds)
            sc.counts_seen.append(count)
            if "busy=2" in chart and not (tmp / "marea-web-busy.png").exists():
                driver.save_screenshot(str(tmp / "marea-web-busy.png"))
            jobs = {str(j["job_id"]): str(j["job_state"]) for j in tb.jobs() if str(j["job_id"]) in ids}
            sc.jobs_done = len(jobs) == 4 and all(s == "COMPLETED" for s in jobs.values())
            return sc.jobs_done and count == 0 and "delete" in kinds

        wait_until("jobs done, workers drained and deleted, as the page shows", watch, 300, step=1.0)
        sc.screenshot = tmp / "marea-web.png"  # the test's artefact (docs/operate-web.png is one of them)
        driver.save_screenshot(str(sc.screenshot))
        yield sc
    finally:
        if driver is not None:
            driver.quit()
        engine.stop()
        if prom is not None:
            prom.terminate()
            prom.wait(30)
        store.close()
        cleanup_vms(cfg.path("vms"), "mon")
        tb.run("stop", check=False)


def _get(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _query(sc: Scenario, expr: str) -> dict[str, float]:
    """An instant query; each series' value keyed by its labels (job and instance dropped)."""
    r = httpx.get(f"{sc.prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert r["status"] == "success", r
    out = {}
    for s in r["data"]["result"]:
        labels = ",".join(
            f"{k}={v}" for k, v in sorted(s["metric"].items()) if k not in ("__name__", "job", "instance")
        )
        out[labels] = float(s["value"][1])
    return out


def test_prometheus_scraped_the_scale_up_with_the_expected_values(scenario: Scenario) -> None:
    sc = scenario
    decisions = sc.store.recent_decisions(10_000)
    boots = sum(d.count for d in decisions if d.kind == "boot")
    drains = sum(1 for d in decisions if d.kind == "drain")
    deletes = sum(1 for d in decisions if d.kind == "delete")
    assert boots == 2 and deletes == 2, [(d.kind, d.reason) for d in decisions]
    # the last scrape may be a second behind the store: wait for it, then compare exactly
    wait_until("the deletes scraped", lambda: _query(sc, "marea_deletes_total").get("") == deletes, 30)
    assert _query(sc, "up") == {"": 1.0}
    assert _query(sc, "marea_boots_total") == {"": boots}
    assert _query(sc, 'marea_decisions_total{kind="drain"}') == {"kind=drain": drains}
    assert _query(sc, 'marea_decisions_total{kind="boot"}') == {"kind=boot": 1.0}
    assert sum(_query(sc, "marea_failed_boots_total").values()) == 0
    assert sum(_query(sc, "marea_cloud_errors_total").values()) == 0
    # over the scale-up: all four jobs queued at once (4 cores, 4 x 200 MiB), both workers busy at once
    window = "[10m]"
    assert _query(sc, f'max_over_time(marea_demand{{resource="cores"}}{window})') == {"resource=cores": 4.0}
    assert _query(sc, f'max_over_time(marea_demand{{resource="memory_mb"}}{window})') == {"resource=memory_mb": 800}
    assert _query(sc, f'max_over_time(marea_workers{{state="busy"}}{window})') == {"flavour=local.2c,state=busy": 2}
    assert _query(sc, f'max_over_time(marea_workers{{state="booting"}}{window})')["flavour=local.2c,state=booting"] >= 1
    assert _query(sc, f'max_over_time(marea_capacity{{resource="cores"}}{window})') == {"resource=cores": 4.0}
    assert _query(sc, f"max_over_time(marea_oldest_queued_job_seconds{window})")[""] > 0
    # ... and at the end: no worker, no demand
    assert set(_query(sc, "marea_workers").values()) == {0.0}
    assert _query(sc, 'marea_demand{resource="cores"}') == {"resource=cores": 0.0}
    assert _query(sc, "marea_cycle_duration_seconds_count")[""] >= 10
    # the shipped alerting rules load in a real Prometheus, and none fires on a healthy scale-up
    groups = httpx.get(f"{sc.prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 5 and all(r["health"] == "ok" for r in rules), rules
    assert all(r["state"] == "inactive" for r in rules), [(r["name"], r["state"]) for r in rules]


def test_the_page_in_chromium_follows_the_workers_as_they_boot_and_drain(scenario: Scenario) -> None:
    sc = scenario
    seen = " | ".join(sc.workers_seen)
    # the workers chart's latest sample went through booting and busy, and back to no worker ...
    assert any("booting=1" in s or "booting=2" in s for s in sc.workers_seen), seen
    assert any("busy=2" in s for s in sc.workers_seen), seen
    assert "busy=0" in sc.workers_seen[-1] and "idle=0" in sc.workers_seen[-1], seen
    # ... and its areas grew with each state, draining included (a drain lasts a cycle here: between two polls)
    assert sc.areas_seen[0] == frozenset(), sc.areas_seen
    assert any(a == {"booting"} for a in sc.areas_seen), sc.areas_seen
    assert {"booting", "busy", "draining"} <= sc.areas_seen[-1], sc.areas_seen
    # the decisions table gained the boot, then the drains and deletes, with their reasons
    assert "boot" not in sc.kinds_seen[0]
    assert any("boot" in k and "delete" not in k for k in sc.kinds_seen)
    assert {"boot", "joined", "drain", "delete"} <= sc.kinds_seen[-1]
    assert max(sc.counts_seen) == 2 and sc.counts_seen[-1] == 0
    assert sc.screenshot is not None and sc.screenshot.stat().st_size > 10_000
    assert (sc.screenshot.parent / "marea-web-busy.png").stat().st_size > 10_000
