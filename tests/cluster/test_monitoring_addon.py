"""The cluster maker's monitoring add-on: the master's and the workers' cloud-config with it, checked by the
real tools that will read them (cloud-init's schema, Debian's promtool for the Prometheus configuration)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from marea.cluster.cloudinit import master_marea_toml, master_user_data
from marea.cluster.config import parse_cluster
from marea.cluster.monitoring import RULES_PATH, AddonsSection
from marea.config import ConfigError, parse_config
from marea.engine.reconciler import render_user_data
from marea.monitoring import alert_rules_path
from marea.profiles.joins import make_join_secrets
from tests.cluster.test_cloudinit import cluster_file, schema_errors


def _cloud_config(text: str) -> dict[str, Any]:
    header, _, body = text.partition("\n")
    assert header == "#cloud-config"
    doc: dict[str, Any] = json.loads(body)
    return doc


def _with_addon(system: str = "slurm", **web: str) -> Any:
    cf = cluster_file(system)
    if web:
        cf = replace(cf, marea=cf.marea.model_copy(update={"web": cf.marea.web.model_copy(update=web)}))
    return replace(cf, addons=AddonsSection(monitoring=True))


def test_off_by_default_and_the_user_data_is_unchanged() -> None:
    cf = cluster_file("slurm")
    assert cf.addons.monitoring is False
    joins = make_join_secrets("slurm", "phys")
    on = replace(cf, addons=AddonsSection(monitoring=True))
    off_doc = _cloud_config(master_user_data(cf, joins, "10.10.0.5", "clouds: {}\n"))
    on_doc = _cloud_config(master_user_data(on, joins, "10.10.0.5", "clouds: {}\n"))
    assert "prometheus" not in off_doc["packages"]
    assert on_doc["packages"] == [*off_doc["packages"], "prometheus", "prometheus-node-exporter"]
    assert on_doc["runcmd"][: len(off_doc["runcmd"])] == off_doc["runcmd"]


@pytest.mark.parametrize("system", ["slurm", "htcondor"])
def test_master_and_rendered_worker_user_data_pass_cloud_init_schema(system: str, tmp_path: Path) -> None:
    cf = _with_addon(system)
    joins = make_join_secrets(system, "phys")
    assert schema_errors(tmp_path, master_user_data(cf, joins, "10.10.0.5", "clouds: {}\n")) == ""
    toml = master_marea_toml(cf, joins, "10.10.0.5")
    cfg = parse_config(__import__("tomllib").loads(toml))
    assert "[addons]" not in toml  # the master's engine gets a plain marea.toml
    worker = render_user_data(cfg.worker.user_data, {"MAREA_NAME": "phys-1", "MAREA_CORES": "1"})
    assert "prometheus-node-exporter" in _cloud_config(worker)["packages"]
    assert schema_errors(tmp_path, worker) == ""


def test_the_prometheus_config_passes_promtool_and_scrapes_marea_and_its_workers(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: run `bash testbeds/prometheus.sh install` (make testbeds does)")
    doc = _cloud_config(master_user_data(_with_addon(), make_join_secrets("slurm", "phys"), "10.1.0.5", "c: {}\n"))
    files = {f["path"]: f for f in doc["write_files"]}
    assert files[RULES_PATH]["content"] == alert_rules_path().read_text()
    assert "--web.listen-address=127.0.0.1:9090" in files["/etc/default/prometheus"]["content"]
    prom = json.loads(files["/etc/prometheus/prometheus.yml"]["content"])
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert jobs["marea"]["static_configs"] == [{"targets": ["127.0.0.1:9180"]}]
    assert jobs["marea-workers"]["http_sd_configs"][0]["url"] == "http://127.0.0.1:9180/api/sd/node-exporter"
    (tmp_path / "rules.yml").write_text(alert_rules_path().read_text())
    prom["rule_files"] = [str(tmp_path / "rules.yml")]
    (tmp_path / "prometheus.yml").write_text(json.dumps(prom))
    r = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_engine_listening_on_all_addresses_is_scraped_on_localhost_and_a_socket_is_refused() -> None:
    joins = make_join_secrets("slurm", "phys")
    doc = _cloud_config(master_user_data(_with_addon(listen="0.0.0.0:9444"), joins, "10.1.0.5", "c: {}\n"))
    prom = json.loads({f["path"]: f for f in doc["write_files"]}["/etc/prometheus/prometheus.yml"]["content"])
    assert prom["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:9444"]}]
    with pytest.raises(ConfigError, match=r"addons\.monitoring: needs the engine's web\.listen on TCP"):
        master_user_data(_with_addon(listen="unix:/run/marea.sock"), joins, "10.1.0.5", "c: {}\n")


def test_addons_errors_name_the_key() -> None:
    data: dict[str, Any] = {
        "cluster": {"name": "phys"},
        "cloud": {"driver": "openstack", "openstack": {"image": "debian-12", "network": "private"}},
        "master": {"flavour": "m1.medium", "floating_network": "public"},
        "addons": {"monitoring": True},
    }
    assert parse_cluster(data, "c.toml").addons.monitoring is True
    with pytest.raises(ConfigError, match=r"^c.toml: addons.grafana"):
        parse_cluster({**data, "addons": {"grafana": True}}, "c.toml")
