"""Prometheus alerting rules and the Grafana dashboard for the metrics of marea.engine.metrics."""

from __future__ import annotations

from pathlib import Path

#: the port of Debian's prometheus-node-exporter, which the cluster maker's monitoring add-on puts on workers
NODE_EXPORTER_PORT = 9100


def alert_rules_path() -> Path:
    """The alerting rules file shipped with the package (checked by `promtool check rules` in the tests)."""
    return Path(__file__).parent / "marea-alerts.yml"
