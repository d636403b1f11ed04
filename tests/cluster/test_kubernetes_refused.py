"""batch.system = "kubernetes" is accepted now that the engine has its elastic Kubernetes driver
(marea.batch.kubernetes; its tests are in tests/kube). It was refused in one line while there was none; these
tests keep the config check, the cluster file and the offload backend's independence honest.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from marea.cli import app
from marea.cluster.config import parse_cluster
from marea.config import parse_config, unsupported_batch

CLUSTER = """
[cluster]
name = "k8s"
[cloud]
driver = "openstack"
[cloud.openstack]
cloud = "demo"
image = "debian-12"
network = "private"
[batch]
system = "kubernetes"
[master]
flavour = "m1.medium"
floating_network = "public"
"""


def test_parse_config_accepts_kubernetes() -> None:
    assert unsupported_batch("kubernetes") == ""
    assert parse_config({"batch": {"system": "kubernetes"}}, "marea.toml").batch.system == "kubernetes"
    assert parse_cluster(tomllib.loads(CLUSTER)).marea.batch.system == "kubernetes"


@pytest.mark.parametrize("system", ["slurm", "htcondor"])
def test_the_other_systems_still_parse(system: str) -> None:
    assert parse_config({"batch": {"system": system}}).batch.system == system


def test_the_offload_kubernetes_backend_is_unaffected() -> None:
    cfg = parse_config({"offload": {"backend": "kubernetes", "kubernetes": {"context": "remote"}}})
    assert cfg.offload.backend == "kubernetes" and cfg.batch.system == "slurm"


def test_config_check_accepts_a_kubernetes_engine(tmp_path: Path) -> None:
    f = tmp_path / "marea.toml"
    f.write_text('[batch]\nsystem = "kubernetes"\n[batch.kubernetes]\nbootstrap_token_ttl_s = 900\n')
    r = CliRunner().invoke(app, ["config", "check", str(f)])
    assert r.exit_code == 0, r.output
    assert "kubernetes batch" in r.output


def test_a_bad_taint_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "marea.toml"
    f.write_text('[batch]\nsystem = "kubernetes"\n[batch.kubernetes]\nflavour_taints = {"g1" = ["gpu;rm -rf"]}\n')
    r = CliRunner().invoke(app, ["config", "check", str(f)])
    assert r.exit_code == 2 and len(r.output.splitlines()) == 1
    assert "batch.kubernetes.flavour_taints.g1.0" in r.output
