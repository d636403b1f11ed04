"""Master and worker user-data for the three batch systems, validated by cloud-init's own schema.

`cloud-init schema -c FILE` is Debian's cloud-init (installed by `make testbeds`); it is what runs on the VMs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from marea.cluster.cloudinit import master_marea_toml, master_user_data
from marea.cluster.config import ClusterFile, MasterSection, parse_cluster
from marea.config import ConfigError, MareaConfig, parse_config
from marea.engine.reconciler import render_user_data
from marea.profiles.joins import make_join_secrets

SYSTEMS = ["slurm", "htcondor", "kubernetes"]
#: what each driver's join_variables() gives, as it would for a worker (tests/test_profiles.py holds the
#: drivers to these names)
DRIVER_VARIABLES = {
    "slurm": {
        "MAREA_SLURM_CONF": "/etc/slurm/slurm.conf",
        "MAREA_SLURM_FEATURE": "marea",
        "MAREA_SLURM_PARTITION": "marea",
    },
    "htcondor": {"MAREA_CONDOR_HOST": "10.10.0.5", "MAREA_CONDOR_IDTOKEN": "eyJhbGciOiJIUzI1NiJ9.e30.sig"},
    "kubernetes": {
        "MAREA_K8S_ENDPOINT": "10.10.0.5:6443",
        "MAREA_K8S_TOKEN": "abcdef.0123456789abcdef",
        "MAREA_K8S_CA_HASH": "sha256:" + "0" * 64,
    },
}


def cluster_file(system: str) -> ClusterFile:
    data: dict[str, Any] = {
        "cluster": {"name": "phys"},
        "flavours": [{"name": "m1.small", "cores": 1, "memory_mb": 2048}],
        "cloud": {"driver": "openstack", "openstack": {"cloud": "demo", "image": "debian-12", "network": "private"}},
        "batch": {"system": system},
        "master": {"flavour": "m1.medium", "floating_network": "public"},
    }
    if system == "kubernetes":
        # refused by parse_config (no elastic Kubernetes driver yet), but the user-data code exists and must stay
        # valid until the driver lands: build the file past the refusal, with the same models
        master = MasterSection.model_validate(data.pop("master"))
        return ClusterFile(master, MareaConfig.model_validate(data), data)
    return parse_cluster(data)


def schema_errors(tmp_path: Path, text: str) -> str:
    """'' when `cloud-init schema` accepts the document, its complaint otherwise."""
    if shutil.which("cloud-init") is None:
        pytest.skip("cloud-init is not installed (make testbeds installs it)")
    f = tmp_path / "user-data"
    f.write_text(text)
    r = subprocess.run(["cloud-init", "schema", "-c", str(f)], capture_output=True, text=True, timeout=60)
    return "" if r.returncode == 0 else (r.stdout + r.stderr)


def test_the_schema_check_can_fail(tmp_path: Path) -> None:
    assert schema_errors(tmp_path, "#cloud-config\npackages: 7\nruncmd: {a: 1}\n") != ""


@pytest.mark.parametrize("system", SYSTEMS)
def test_master_user_data_passes_cloud_init_schema(system: str, tmp_path: Path) -> None:
    joins = make_join_secrets(system, "phys")
    text = master_user_data(cluster_file(system), joins, "10.10.0.5", clouds_yaml="clouds: {}\n")
    assert text.startswith("#cloud-config\n")
    assert schema_errors(tmp_path, text) == ""


@pytest.mark.parametrize("system", SYSTEMS)
def test_rendered_worker_user_data_passes_cloud_init_schema(system: str, tmp_path: Path) -> None:
    cf = cluster_file(system)
    joins = make_join_secrets(system, "phys")
    toml = tomllib.loads(master_marea_toml(cf, joins, "10.10.0.5"))
    variables = {f"MAREA_VAR_{k.upper()}": v for k, v in toml["worker"]["variables"].items()}
    variables |= {"MAREA_NAME": "phys-ab12", "MAREA_CORES": "2", "MAREA_MEMORY_MB": "4096"}
    variables |= {"MAREA_CLUSTER": "phys", "MAREA_FLAVOUR": "m1.small"}
    variables |= DRIVER_VARIABLES[system]  # what the engine's driver adds (join_variables)
    text = render_user_data(toml["worker"]["user_data"], variables)
    assert "${" not in text, "a placeholder was left unfilled"
    assert schema_errors(tmp_path, text) == ""


def test_master_marea_toml_is_a_valid_marea_config_with_the_slurm_join_parameters() -> None:
    cf = cluster_file("slurm")
    joins = make_join_secrets("slurm", "phys")
    cfg = parse_config(tomllib.loads(master_marea_toml(cf, joins, "10.10.0.5")))
    assert cfg.cluster.state == "/var/lib/marea/state.db"
    assert cfg.worker.variables["slurm_controller"] == "10.10.0.5:6817"
    assert cfg.worker.variables["munge_key"] == joins.munge_key_b64
    assert "${MAREA_VAR_MUNGE_KEY}" in cfg.worker.user_data
    assert cfg.cloud.openstack.image == "debian-12"


def test_the_htcondor_master_points_its_engine_at_the_pool_and_the_token_it_makes() -> None:
    """The master's engine reads the pool at the master and mints each worker a token of its own;
    the workers' template takes both from the driver's join variables, and shares the pool's domain."""
    cf = cluster_file("htcondor")
    text = master_marea_toml(cf, make_join_secrets("htcondor", "phys"), "10.10.0.5")
    cfg = parse_config(tomllib.loads(text))
    assert cfg.batch.htcondor.collector == "10.10.0.5"
    assert cfg.batch.htcondor.token_file == ""  # no pool-wide worker token: one per worker, revocable
    assert cfg.batch.htcondor.token_command[:3] == ["condor_token_create", "-identity", "condor@phys.marea"]
    assert cfg.batch.htcondor.revocation_file == "/etc/condor/config.d/60-marea-revoked.conf"
    assert "${MAREA_CONDOR_IDTOKEN}" in cfg.worker.user_data and "${MAREA_CONDOR_HOST}" in cfg.worker.user_data
    assert "UID_DOMAIN = ${MAREA_VAR_CONDOR_DOMAIN}" in cfg.worker.user_data
    assert cfg.worker.variables["condor_domain"] == "phys.marea"
    master = master_user_data(cf, make_join_secrets("htcondor", "phys"), "10.10.0.5", clouds_yaml="clouds: {}\n")
    assert "UID_DOMAIN = phys.marea" in master and "worker.token" not in master
    # the engine's administrator token is the only one the master makes at boot
    assert master.count("condor_token_create") == 1 and "-authz ADMINISTRATOR" in master


def test_the_slurm_partition_has_a_drained_template_node_of_the_largest_flavour() -> None:
    """Slurm 24.11 refuses jobs for a partition without nodes: a drained node of the largest flavour's size
    makes it accept them (and refuse at once a job no flavour can hold); it has no feature, so it is no worker."""
    data = {
        "cluster": {"name": "phys"},
        "flavours": [{"name": "a", "cores": 1, "memory_mb": 2048}, {"name": "b", "cores": 8, "memory_mb": 1000}],
        "cloud": {"driver": "openstack", "openstack": {"cloud": "demo", "image": "img", "network": "net"}},
        "master": {"flavour": "m", "floating_network": "public", "slurm_conf": ["ProctrackType=proctrack/linuxproc"]},
    }
    text = master_user_data(parse_cluster(data), make_join_secrets("slurm", "phys"), "10.10.0.5", "clouds: {}\n")
    doc = json.loads(text.removeprefix("#cloud-config\n"))
    conf = next(f["content"] for f in doc["write_files"] if f["path"] == "/etc/slurm/slurm.conf").splitlines()
    template = next(line for line in conf if line.startswith("NodeName=marea-template"))
    assert "CPUs=8 RealMemory=2048" in template and "State=DRAIN" in template and "Feature" not in template
    assert "PartitionName=marea Nodes=marea,marea-template Default=YES MaxTime=INFINITE State=UP" in conf
    assert conf.index("ProctrackType=proctrack/linuxproc") < conf.index(template)
    assert doc["runcmd"][0] == "set -e", "a failed step must stop the script and show in cloud-init status"


def test_a_slurm_conf_line_with_a_newline_is_refused() -> None:
    data = {
        "cluster": {"name": "phys"},
        "cloud": {"driver": "openstack", "openstack": {"cloud": "demo", "image": "img", "network": "net"}},
        "master": {"flavour": "m", "floating_network": "public", "slurm_conf": ["A=1\nNodeName=evil"]},
    }
    with pytest.raises(ConfigError, match=r"master\.slurm_conf"):
        parse_cluster(data)


def test_kubernetes_needs_no_join_secret_at_create() -> None:
    """kubeadm makes the CA on the master and the engine a token per worker: nothing secret is made here."""
    joins = make_join_secrets("kubernetes", "phys")
    assert joins.secrets() == []


def test_cluster_file_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="master: required"):
        parse_cluster({"cloud": {"driver": "openstack"}})
    with pytest.raises(ConfigError, match=r"master\.floating_network"):
        parse_cluster({"master": {"flavour": "m1.small"}})
    with pytest.raises(ConfigError, match=r"cloud\.driver"):
        parse_cluster({"master": {"flavour": "m", "floating_network": "public"}})
