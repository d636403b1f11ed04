"""The engine's web endpoint on real sockets: a real reconciler (local cloud driver, real processes as VMs,
SQLite store) feeds EngineMetrics; uvicorn serves /metrics, /api/status and the page; httpx reads them.

The batch side is tests/fixed_queue.py (a constant queue), because the subject here is what the endpoint
shows of the engine's events, not scaling; tests/ops/test_monitoring_slurm.py does the real Slurm scale-up.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from marea.clouds.local import LocalCloud
from marea.engine.metrics import EngineMetrics
from marea.engine.reconciler import Reconciler
from marea.engine.store import Store
from marea.model import Flavour, PolicySettings
from marea.web.app import make_app
from marea.web.server import Listen, ListenError, WebServer, bind, parse_listen
from tests.conftest import run_cli
from tests.fixed_queue import FixedQueue

FLAVOUR = Flavour("w.2c", 2, 2000)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[Reconciler, EngineMetrics, Path]]:
    """Two cycles of a reconciler: 5 one-core jobs queued, a quota of 2 VMs, 2-core flavour."""
    state = tmp_path / "state.db"
    cloud = LocalCloud(tmp_path / "vms", max_instances=2)
    metrics = EngineMetrics("web1", {FLAVOUR.name: FLAVOUR.cores})
    rec = Reconciler(
        cluster="web1", store=Store(f"sqlite:///{state}", "web1"), cloud=cloud, batch=FixedQueue(5, 1.0, 500.0),
        settings=PolicySettings(flavours=(FLAVOUR,), max_workers=4, join_timeout_s=600),
        user_data_template="#!/bin/sh\nsleep 300\n", clock=time.time, recorder=metrics,
    )  # fmt: skip
    rec.cycle()
    rec.cycle()
    (tmp_path / "marea.toml").write_text(f'[cluster]\nname = "web1"\nstate = "{state}"\n')
    try:
        yield rec, metrics, tmp_path
    finally:
        for vm in cloud.list_owned("web1"):
            cloud.delete(vm)
        rec.store.close()


@pytest.fixture
def served(engine: tuple[Reconciler, EngineMetrics, Path]) -> Iterator[tuple[str, Path]]:
    rec, metrics, tmp_path = engine
    store = Store(rec.store.url, "web1")
    server = WebServer(make_app(store, metrics), Listen(host="127.0.0.1", port=0))
    server.start()
    host, port = server.sock.getsockname()[:2]
    try:
        yield f"http://{host}:{port}", tmp_path
    finally:
        server.stop()
        store.close()


def test_metrics_count_what_the_reconciler_did(served: tuple[str, Path]) -> None:
    base, _ = served
    r = httpx.get(f"{base}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    s = _samples(r.text)
    # the quota allows 2 of the 3 VMs 5 cores need: 2 boots, then 2 booting workers, no room left
    assert s[("marea_boots_total", ())] == 2
    assert s[("marea_decisions_total", (("kind", "boot"),))] == 1
    assert s[("marea_decisions_total", (("kind", "wait"),))] >= 1
    assert s[("marea_workers", (("flavour", "w.2c"), ("state", "booting")))] == 2
    assert s[("marea_workers", (("flavour", "w.2c"), ("state", "busy")))] == 0
    assert s[("marea_demand", (("resource", "cores"),))] == 5
    assert s[("marea_demand", (("resource", "memory_mb"),))] == 2500
    assert s[("marea_demand", (("resource", "jobs"),))] == 5
    assert s[("marea_capacity", (("resource", "cores"),))] == 4
    assert s[("marea_quota_headroom", (("resource", "instances"),))] == 0
    assert s[("marea_failed_boots_total", (("reason", "join_timeout"),))] == 0
    assert s[("marea_deletes_total", ())] == 0
    assert ("marea_cycle_duration_seconds_count", ()) in s


def test_api_status_is_the_json_of_marea_status(served: tuple[str, Path]) -> None:
    base, tmp_path = served
    api = httpx.get(f"{base}/api/status").json()
    cli = run_cli("status", "--json", "-c", str(tmp_path / "marea.toml"))
    assert cli.returncode == 0, cli.stderr
    want = json.loads(cli.stdout)
    for report in (api, want):
        report.pop("at")
        for w in report["workers"]:
            w.pop("age_s"), w.pop("in_state_s")
    assert api == want
    assert len(api["workers"]) == 2 and api["queued_jobs"] == 5
    assert httpx.get(f"{base}/api/status?decisions=0").status_code == 400
    assert httpx.get(f"{base}/api/status?decisions=x;rm").status_code == 400


def test_history_page_and_assets_are_served_and_nothing_else(served: tuple[str, Path]) -> None:
    base, _ = served
    hist = httpx.get(f"{base}/api/history").json()
    # one sample per cycle, with the workers as the cycle left them: booting from the first cycle on
    assert [s["workers"]["booting"] for s in hist["samples"]] == [2, 2]
    assert hist["samples"][-1]["demand_cores"] == 5 and hist["samples"][-1]["capacity_cores"] == 4
    page = httpx.get(f"{base}/")
    assert page.status_code == 200 and 'id="workers-chart"' in page.text
    assert "http" not in page.text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # no CDN
    for asset in ("app.js", "style.css"):
        assert httpx.get(f"{base}/static/{asset}").status_code == 200
    assert httpx.get(f"{base}/static/../app.py").status_code == 404
    assert httpx.get(f"{base}/static/%2e%2e/app.py").status_code == 404
    assert httpx.post(f"{base}/api/status").status_code == 405


def test_node_exporter_discovery_lists_the_live_workers(served: tuple[str, Path]) -> None:
    """Prometheus' http_sd format: one target group per worker, at the node exporter's port."""
    base, _ = served
    targets = httpx.get(f"{base}/api/sd/node-exporter").json()
    workers = httpx.get(f"{base}/api/status").json()["workers"]
    assert len(targets) == len(workers) == 2
    assert {t["labels"]["marea_instance"] for t in targets} == {w["id"] for w in workers}
    assert all(t["targets"] == ["127.0.0.1:9100"] and t["labels"]["marea_flavour"] == "w.2c" for t in targets)


def test_unix_socket(engine: tuple[Reconciler, EngineMetrics, Path]) -> None:
    rec, metrics, tmp_path = engine
    path = tmp_path / "web.sock"
    path.write_text("not a socket")
    with pytest.raises(ListenError, match="exists and is not a socket"):
        WebServer(make_app(rec.store, metrics), parse_listen(f"unix:{path}"))
    path.unlink()
    server = WebServer(make_app(rec.store, metrics), parse_listen(f"unix:{path}"))
    server.start()
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
            assert "marea_boots_total 2.0" in client.get("http://marea/metrics").text
    finally:
        server.stop()
    assert not path.exists()


def test_a_port_in_use_is_one_line_and_the_engine_runs_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "marea")
    taken = bind(Listen(host="127.0.0.1", port=0))
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ListenError, match=f"cannot listen on http://127.0.0.1:{port}/"):
            bind(Listen(host="127.0.0.1", port=port))
        (tmp_path / "w.sh").write_text("#!/bin/sh\nsleep 300\n")
        (tmp_path / "marea.toml").write_text(
            f'[cluster]\nname = "web2"\n[web]\nlisten = "127.0.0.1:{port}"\n'
            '[worker]\nuser_data_file = "w.sh"\n[cloud.local]\nbase_dir = "vms"\n'
            '[batch.slurm]\ncommand_prefix = ["false"]\n'
        )
        from marea.config import load_config
        from marea.engine.runner import run_forever

        run_forever(load_config(tmp_path / "marea.toml"), max_cycles=1)
        log = caplog.text
        assert f"web.listen: cannot listen on http://127.0.0.1:{port}/" in log
        assert "the engine runs on without its web endpoint" in log and "engine stopped" in log
    finally:
        taken.close()


@pytest.mark.parametrize("value", ["9180", "unix:relative", "a b:80", "host:port"])
def test_bad_listen_is_a_config_error_naming_the_key(tmp_path: Path, value: str) -> None:
    (tmp_path / "marea.toml").write_text(f'[web]\nlisten = "{value}"\n')
    r = run_cli("config", "check", str(tmp_path / "marea.toml"))
    assert r.returncode == 2 and "web.listen" in r.stderr and r.stderr.count("\n") == 1


def test_listen_parsing() -> None:
    assert parse_listen("[::1]:9180").url == "http://[::1]:9180/"
    assert parse_listen("0.0.0.0:80").port == 80
    with pytest.raises(ListenError, match="port from 1 to 65535"):
        parse_listen("localhost:70000")
    assert socket.AF_UNIX  # unix sockets exist here (Linux)


def test_a_refused_create_is_a_failed_boot_and_a_cloud_error_of_its_kind(tmp_path: Path) -> None:
    """The local driver refuses #cloud-config user-data (kind `other`), as a cloud refuses a bad request."""
    cloud = LocalCloud(tmp_path / "vms")
    metrics = EngineMetrics("web3", {FLAVOUR.name: FLAVOUR.cores})
    rec = Reconciler(
        cluster="web3", store=Store(f"sqlite:///{tmp_path / 's.db'}", "web3"), cloud=cloud,
        batch=FixedQueue(2, 1.0, 500.0), settings=PolicySettings(flavours=(FLAVOUR,), max_workers=4),
        user_data_template="#cloud-config\nruncmd: []\n", clock=time.time, recorder=metrics,
    )  # fmt: skip
    try:
        report = rec.cycle()
        s = _samples(metrics.exposition().decode())
        assert report.errors and "not #cloud-config" in report.errors[0]
        assert s[("marea_failed_boots_total", (("reason", "create_failed"),))] == 1
        assert s[("marea_cloud_errors_total", (("kind", "other"),))] == 1
        assert s[("marea_boots_total", ())] == 0
        assert s[("marea_decisions_total", (("kind", "failed"),))] == 1
        assert s[("marea_workers", (("flavour", "w.2c"), ("state", "booting")))] == 0
    finally:
        rec.store.close()
