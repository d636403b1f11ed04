"""`marea dashboards grafana`: the Grafana dashboard of the engine's metrics, built in code.

Made with grafana-foundation-sdk (Grafana Labs' own typed builders, released with Grafana's schema) rather
than hand-written JSON or grafanalib (whose last release, 0.7.1, dates from 2023): a renamed panel option
fails at type-check time here, not at import time in Grafana. The queries name only metrics that
marea.engine.metrics exports; tests/ops/test_grafana.py checks that against a live engine's /metrics.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models.dashboard import DataSourceRef

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'job=~"$job", instance=~"$instance"'
UID = "marea-engine"


def _query(expr: str, legend: str, ref: str) -> prom_b.Dataquery:
    return prom_b.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def _timeseries(title: str, unit: str, queries: list[tuple[str, str]], *, stacked: bool = False,
                description: str = "", width: int = 12) -> ts_b.Panel:  # fmt: skip
    panel = (
        ts_b.Panel().title(title).description(description).unit(unit).min(0).datasource(DATASOURCE)
        .height(8).span(width).fill_opacity(30 if stacked else 10)
    )  # fmt: skip
    if stacked:
        panel = panel.stacking(common_b.StackingConfig().mode(common_m.StackingMode.NORMAL))
    for i, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_query(expr, legend, chr(ord("A") + i)))
    return panel


def _stat(title: str, expr: str, unit: str = "none") -> stat_b.Panel:
    return (
        stat_b.Panel().title(title).unit(unit).datasource(DATASOURCE).height(4).span(6)
        .with_target(_query(expr, title, "A"))
    )  # fmt: skip


def build() -> dict[str, Any]:
    """The dashboard as the JSON object Grafana imports."""
    rate = "$__rate_interval"
    board = (
        dash_b.Dashboard("marea engine").uid(UID).tags(["marea"]).refresh("30s").time("now-6h", "now")
        .timezone("browser").editable()
        .with_variable(dash_b.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            dash_b.QueryVariable("job").label("job").datasource(DATASOURCE)
            .query("label_values(marea_engine_info, job)").include_all(True).all_value(".*")
        )
        .with_variable(
            dash_b.QueryVariable("instance").label("engine").datasource(DATASOURCE)
            .query('label_values(marea_engine_info{job=~"$job"}, instance)').include_all(True).all_value(".*")
        )
        .with_row(dash_b.Row("Now"))
        .with_panel(_stat("Engine up", f"up{{{SEL}}}"))
        .with_panel(_stat("Workers", f"sum(marea_workers{{{SEL}}})"))
        .with_panel(_stat("Queued jobs", f"sum(marea_queued_jobs{{{SEL}}})"))
        .with_panel(_stat("Oldest queued job", f"max(marea_oldest_queued_job_seconds{{{SEL}}})", "s"))
        .with_row(dash_b.Row("Scaling"))
        .with_panel(_timeseries(
            "Workers by state", "none", [(f"sum by (state) (marea_workers{{{SEL}}})", "{{state}}")], stacked=True,
            description="Worker VMs in each state of their lifecycle (requested, booting, idle, busy, draining...)",
        ))
        .with_panel(_timeseries(
            "Demand against capacity (cores)", "none",
            [(f'sum(marea_demand{{{SEL}, resource="cores"}})', "queued cores"),
             (f'sum(marea_capacity{{{SEL}, resource="cores"}})', "cores of booting and joined workers")],
        ))
        .with_panel(_timeseries(
            "Boots and deletes", "none",
            [(f"sum(increase(marea_boots_total{{{SEL}}}[{rate}]))", "boots"),
             (f"sum(increase(marea_deletes_total{{{SEL}}}[{rate}]))", "deletes")],
        ))
        .with_panel(_timeseries(
            "Decisions by kind", "none",
            [(f"sum by (kind) (increase(marea_decisions_total{{{SEL}}}[{rate}]))", "{{kind}}")],
        ))
        .with_row(dash_b.Row("Trouble"))
        .with_panel(_timeseries(
            "Failed boots by reason", "none",
            [(f"sum by (reason) (increase(marea_failed_boots_total{{{SEL}}}[{rate}]))", "{{reason}}")],
        ))
        .with_panel(_timeseries(
            "Cloud errors by kind", "none",
            [(f"sum by (kind) (increase(marea_cloud_errors_total{{{SEL}}}[{rate}]))", "{{kind}}")],
        ))
        .with_panel(_timeseries(
            "Quota headroom", "none", [(f"marea_quota_headroom{{{SEL}}}", "{{resource}}")],
            description="What the cloud project still has room for (absent: no limit)",
        ))
        .with_panel(_timeseries(
            "Cycle duration", "s",
            [(f"histogram_quantile(0.5, sum by (le) (rate(marea_cycle_duration_seconds_bucket{{{SEL}}}[{rate}])))",
              "median"),
             (f"histogram_quantile(0.95, sum by (le) (rate(marea_cycle_duration_seconds_bucket{{{SEL}}}[{rate}])))",
              "95th percentile")],
        ))
    )  # fmt: skip
    data: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return data


def dumps() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"
