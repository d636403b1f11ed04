"""The Grafana dashboard from `marea dashboards grafana`: valid JSON whose panels query the metrics that the
engine really exports (names read from a live EngineMetrics registry, not from a list kept by hand)."""

from __future__ import annotations

import json
import re

from prometheus_client.parser import text_string_to_metric_families

from marea.engine.metrics import EngineMetrics
from marea.model import ClusterView, DemandGroup, Quota, Resources
from tests.conftest import run_cli

#: the metrics issue #13 asks for, each of which must be on the dashboard
REQUIRED = {
    "marea_workers", "marea_demand", "marea_boots_total", "marea_failed_boots_total", "marea_deletes_total",
    "marea_decisions_total", "marea_cloud_errors_total", "marea_quota_headroom", "marea_cycle_duration_seconds",
}  # fmt: skip


def _exported() -> set[str]:
    """Every sample name a busy engine exports (counters with _total, histograms with _bucket...)."""
    m = EngineMetrics("g", {"f": 2})
    m.cycle_seen(ClusterView(100.0, (), (DemandGroup(Resources(1, 100), 3, "", 50.0),), Quota(instances=4)), [], 3)
    m.cloud_error("quota")
    m.booted(1)
    m.deleted()
    m.cycle_duration(0.2)
    return {s.name for fam in text_string_to_metric_families(m.exposition().decode()) for s in fam.samples}


def _dashboard() -> dict[str, object]:
    r = run_cli("dashboards", "grafana")
    assert r.returncode == 0, r.stderr
    board: dict[str, object] = json.loads(r.stdout)
    return board


def test_every_query_names_an_exported_metric_and_every_required_metric_has_a_panel() -> None:
    board = _dashboard()
    panels = [p for p in board["panels"] if p["type"] != "row"]  # type: ignore[attr-defined]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\b(marea_[a-z_]+|up)\b", e)}
    exported = _exported() | {"up"}
    assert used <= exported, used - exported
    missing = {r for r in REQUIRED if not any(n == r or n.startswith(r + "_") for n in used)}
    assert not missing, missing
    titles = {p["title"] for p in panels}
    assert {"Workers by state", "Demand against capacity (cores)", "Failed boots by reason"} <= titles
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)


def test_panels_are_laid_out_without_overlap() -> None:
    board = _dashboard()
    cells: set[tuple[int, int]] = set()
    for p in board["panels"]:  # type: ignore[attr-defined]
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))
        assert g["x"] + g["w"] <= 24
