"""The cluster maker's monitoring add-on (`[addons] monitoring = true` in the cluster file).

The master gets Debian's prometheus and prometheus-node-exporter; Prometheus scrapes the engine's /metrics,
the master's node exporter, and the workers' node exporters, which it finds through the engine's
/api/sd/node-exporter (Prometheus' HTTP service discovery: workers come and go, the engine knows them). It
loads marea's alerting rules and listens on 127.0.0.1:9090 only: reach it through `ssh -L 9090:...` (it has
no authentication). Every worker gets prometheus-node-exporter, whose port the workers' security group
already opens to the master (workers accept every TCP port from the cluster).

Kept apart from cloudinit.py, which calls `add_to_master` and `add_to_worker` and knows nothing else of it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from marea import profiles
from marea.config import ConfigError, _Strict
from marea.monitoring import NODE_EXPORTER_PORT, alert_rules_path

if TYPE_CHECKING:
    from marea.cluster.config import ClusterFile

PROMETHEUS_LISTEN = "127.0.0.1:9090"
RULES_PATH = "/etc/prometheus/marea-alerts.yml"


class AddonsSection(_Strict):
    """Optional extras installed on the cluster's machines (each batch profile says which it can have)."""

    #: Slurm, HTCondor: Prometheus + node exporter (Debian's packages) on the master scraping marea, node
    #: exporter on workers. Kubernetes: kube-prometheus-stack (Prometheus, node exporters, Grafana), pinned
    monitoring: bool = False
    #: Kubernetes only: the Kubeflow Spark operator (SparkApplication), pinned chart version
    spark_operator: bool = False
    #: Kubernetes only: Strimzi, the Kafka operator, pinned chart version
    strimzi: bool = False

    def enabled(self) -> frozenset[str]:
        """The keys of the add-ons turned on."""
        return frozenset(name for name in type(self).model_fields if getattr(self, name))


def prometheus_config(engine_listen: str) -> dict[str, Any]:
    """The master's prometheus.yml: the engine, the master's node exporter, the workers' node exporters."""
    return {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": [RULES_PATH],
        "scrape_configs": [
            {"job_name": "marea", "static_configs": [{"targets": [engine_listen]}]},
            {"job_name": "prometheus", "static_configs": [{"targets": [PROMETHEUS_LISTEN]}]},
            {"job_name": "node", "static_configs": [{"targets": [f"127.0.0.1:{NODE_EXPORTER_PORT}"]}]},
            {
                "job_name": "marea-workers",
                "http_sd_configs": [{"url": f"http://{engine_listen}/api/sd/node-exporter", "refresh_interval": "30s"}],
                "relabel_configs": [{"source_labels": ["marea_instance"], "target_label": "instance"}],
            },
        ],
    }


def _engine_listen(cf: ClusterFile) -> str:
    listen = cf.marea.web.listen
    if not listen or listen.startswith("unix:"):
        raise ConfigError(f"addons.monitoring: needs the engine's web.listen on TCP (got {listen!r})")
    host, _, port = listen.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "[::]") else listen


def add_to_master(cf: ClusterFile, body: dict[str, Any]) -> dict[str, Any]:
    """The master's cloud-config with the add-on (unchanged when it is off, or when the batch profile brings
    its own monitoring)."""
    if not cf.addons.monitoring or not profiles.get(cf.marea.batch.system).host_monitoring:
        return body
    files = [
        # deferred: after the package wrote its own, so that dpkg never asks about a changed conffile
        {"path": "/etc/prometheus/prometheus.yml", "content": json.dumps(prometheus_config(_engine_listen(cf)),
         indent=2), "permissions": "0644", "defer": True},
        {"path": RULES_PATH, "content": alert_rules_path().read_text(), "permissions": "0644", "defer": True},
        {"path": "/etc/default/prometheus", "content": f'ARGS="--web.listen-address={PROMETHEUS_LISTEN}"\n',
         "permissions": "0644", "defer": True},
    ]  # fmt: skip
    return {
        **body,
        "packages": [*body["packages"], "prometheus", "prometheus-node-exporter"],
        "write_files": [*body["write_files"], *files],
        "runcmd": [*body["runcmd"], ["systemctl", "enable", "prometheus", "prometheus-node-exporter"],
                   ["systemctl", "restart", "prometheus"]],
    }  # fmt: skip


def add_to_worker(cf: ClusterFile, template: str) -> str:
    """The worker template with the node exporter (unchanged when the add-on is off, or when the batch profile
    brings its own monitoring)."""
    if not cf.addons.monitoring or not profiles.get(cf.marea.batch.system).host_monitoring:
        return template
    header, _, doc = template.partition("\n")
    body = json.loads(doc)
    body["packages"] = [*body.get("packages", []), "prometheus-node-exporter"]
    return header + "\n" + json.dumps(body, indent=2) + "\n"
