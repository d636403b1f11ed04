"""batch.system = "kubernetes" is refused in one line while this build has no elastic Kubernetes driver.

Refused when the file is read, so `marea config check` says so and `marea cluster create` makes nothing, rather
than a master booting an engine that cannot drive its cluster. The offload kubernetes backend is another
thing (pods sent to a remote cluster) and stays accepted.
"""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from marea.cli import app
from marea.cluster.config import parse_cluster
from marea.config import ConfigError, parse_config

#: the refusal comes from the profile registry (marea.profiles.registry): with the driver module, it is gone
without_driver = pytest.mark.skipif(
    importlib.util.find_spec("marea.batch.kubernetes") is not None, reason="this build has the Kubernetes driver"
)
REFUSAL = (
    "batch.system: 'kubernetes' is not supported yet: marea has no elastic Kubernetes driver (use slurm or htcondor)"
)
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


@without_driver
def test_parse_config_refuses_kubernetes_naming_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"batch": {"system": "kubernetes"}}, "marea.toml")
    assert str(info.value) == f"marea.toml: {REFUSAL}"


@pytest.mark.parametrize("system", ["slurm", "htcondor"])
def test_the_supported_systems_still_parse(system: str) -> None:
    assert parse_config({"batch": {"system": system}}).batch.system == system


def test_the_offload_kubernetes_backend_is_unaffected() -> None:
    cfg = parse_config({"offload": {"backend": "kubernetes", "kubernetes": {"context": "remote"}}})
    assert cfg.offload.backend == "kubernetes" and cfg.batch.system == "slurm"


@without_driver
def test_config_check_exits_2_with_one_line(tmp_path: Path) -> None:
    f = tmp_path / "marea.toml"
    f.write_text('[batch]\nsystem = "kubernetes"\n')
    r = CliRunner().invoke(app, ["config", "check", str(f)])
    assert r.exit_code == 2
    assert r.output.splitlines() == [f"error: {f}: {REFUSAL}"]


@without_driver
def test_cluster_create_exits_2_with_one_line_before_any_cloud_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import marea.cluster.maker

    def no_cloud(*args: object, **kw: object) -> None:
        raise AssertionError("a refused cluster file reached the cloud")

    monkeypatch.setattr(marea.cluster.maker.ClusterMaker, "__init__", no_cloud)
    f = tmp_path / "cluster.toml"
    f.write_text(CLUSTER)
    with pytest.raises(ConfigError, match="is not supported yet"):
        parse_cluster(tomllib.loads(CLUSTER))
    r = CliRunner().invoke(app, ["cluster", "create", "-c", str(f)])
    assert r.exit_code == 2
    assert r.output.splitlines() == [f"error: {f}: {REFUSAL}"]
