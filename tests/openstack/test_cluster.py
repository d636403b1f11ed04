"""`marea cluster` against the real OpenStack testbed: the floating-IP rules, ownership, destroy, the CLI."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from marea.cli import app
from marea.clouds.base import TAG_CLUSTER, CloudError
from marea.cluster.config import load_cluster, parse_cluster
from marea.cluster.maker import ClusterMaker

from .conftest import REPO, OpenStackTestbed, purge

pytestmark = pytest.mark.openstack

EXAMPLE = REPO / "examples" / "cluster-slurm-testbed.toml"


def cluster_data(name: str) -> dict[str, Any]:
    data = tomllib.loads(EXAMPLE.read_text())
    data["cluster"]["name"] = name
    return data


def project_fips(conn: Any) -> list[Any]:
    ext = conn.network.find_network("public")
    return list(conn.network.ips(floating_network_id=ext.id))


def test_create_then_destroy_keeps_the_floating_ip_and_spares_foreign_servers(
    testbed: OpenStackTestbed, admin: Any, demo: Any, cluster_name: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    image, net = demo.image.find_image("debian-12"), demo.network.find_network("private")
    foreign = demo.compute.create_server(name=f"{cluster_name}-tenant-vm", image_id=image.id,
                                         flavor_id=demo.compute.find_flavor("m1.tiny").id,
                                         networks=[{"uuid": net.id}])  # fmt: skip
    maker = ClusterMaker(parse_cluster(cluster_data(cluster_name)))
    try:
        st = maker.create()
        assert st.master is not None and st.master.status.value == "active"
        # exactly one floating IP is in use by the cluster, and it is on the master's port
        used = [ip for ip in project_fips(demo) if ip.port_id]
        mine = [ip for ip in used if demo.network.get_port(ip.port_id).device_id == st.master.cloud_id]
        assert len(mine) == 1 and st.floating_ip == mine[0].floating_ip_address
        owned = [s for s in demo.compute.servers() if (s.metadata or {}).get(TAG_CLUSTER) == cluster_name]
        assert [s.id for s in owned] == [st.master.cloud_id]

        # the master's user-data is a valid #cloud-config that installs slurmctld and marea
        user_data = base64.b64decode(admin.compute.get_server(st.master.cloud_id).user_data).decode()
        assert user_data.startswith("#cloud-config") and "slurmctld" in user_data and "marea.service" in user_data
        if shutil.which("cloud-init"):
            f = tmp_path / "master-user-data"
            f.write_text(user_data)
            check = subprocess.run(["cloud-init", "schema", "-c", str(f)], capture_output=True, text=True)
            assert check.returncode == 0, check.stdout + check.stderr

        # no secret in the server metadata, the logs or the status output
        doc = json.loads(user_data.removeprefix("#cloud-config\n"))
        munge_key = next(f["content"] for f in doc["write_files"] if f["path"] == "/etc/munge/munge.key")
        assert len(munge_key) > 1000
        server = demo.compute.get_server(st.master.cloud_id)
        assert munge_key not in json.dumps(server.metadata)
        assert munge_key not in caplog.text and munge_key[:40] not in caplog.text
        assert munge_key[:40] not in repr(st)

        fip_address = st.floating_ip
        report = maker.destroy()
        assert report.floating_ips_kept == [fip_address] and report.servers == 1
        left = [s for s in demo.compute.servers() if (s.metadata or {}).get(TAG_CLUSTER) == cluster_name]
        assert all(s.status == "DELETED" for s in left)
        tag = f"{TAG_CLUSTER}={cluster_name}"
        assert list(demo.network.security_groups(tags=tag)) == []
        assert list(demo.network.ports(tags=tag)) == []
        kept = [ip for ip in project_fips(demo) if ip.floating_ip_address == fip_address]
        assert len(kept) == 1 and kept[0].port_id is None, "the floating IP must stay allocated to the project"
        assert demo.compute.get_server(foreign.id).status in ("BUILD", "ACTIVE")
        assert demo.compute.find_keypair(f"marea-{cluster_name}") is None
    finally:
        demo.compute.delete_server(foreign, ignore_missing=True)
        purge(demo, cluster_name)


def test_destroy_deletes_a_worker_the_engine_started_while_destroy_was_running(
    testbed: OpenStackTestbed, demo: Any, cluster_name: str
) -> None:
    """The race CI met: the master's engine booted a worker after destroy had listed the servers."""
    maker = ClusterMaker(parse_cluster(cluster_data(cluster_name)))
    image, net = demo.image.find_image("debian-12"), demo.network.find_network("private")
    late: list[Any] = []

    def engine_starts_a_worker(step: str, _fraction: float) -> None:
        if step.startswith("deleting server") and not late:  # the servers have been listed by now
            late.append(demo.compute.create_server(
                name=f"{cluster_name}-w-late", image_id=image.id, flavor_id=demo.compute.find_flavor("m1.tiny").id,
                networks=[{"uuid": net.id}], metadata={TAG_CLUSTER: cluster_name},
            ))  # fmt: skip

    try:
        maker.create()
        report = maker.destroy(progress=engine_starts_a_worker)
        assert late and report.servers == 2
        left = [s for s in demo.compute.servers() if (s.metadata or {}).get(TAG_CLUSTER) == cluster_name]
        assert all(s.status == "DELETED" for s in left), [(s.name, s.status) for s in left]
    finally:
        purge(demo, cluster_name)


def test_a_free_floating_ip_of_the_project_is_reused_and_released_only_on_request(
    testbed: OpenStackTestbed, demo: Any, cluster_name: str
) -> None:
    ext = demo.network.find_network("public")
    for ip in project_fips(demo):  # leave exactly one free floating IP in the project
        if not ip.port_id:
            demo.network.delete_ip(ip)
    free = demo.network.create_ip(floating_network_id=ext.id)
    before = len(project_fips(demo))
    maker = ClusterMaker(parse_cluster(cluster_data(cluster_name)))
    try:
        st = maker.create()
        assert st.floating_ip == free.floating_ip_address
        assert len(project_fips(demo)) == before, "a new floating IP was allocated although one was free"
        report = maker.destroy(release_floating_ips=True)
        assert report.floating_ips_released == [free.floating_ip_address]
        assert free.floating_ip_address not in [ip.floating_ip_address for ip in project_fips(demo)]
    finally:
        purge(demo, cluster_name)


def test_cli_example_file_works_as_is(testbed: OpenStackTestbed, demo: Any) -> None:
    name = load_cluster(EXAMPLE).marea.cluster.name
    runner = CliRunner()
    try:
        created = runner.invoke(app, ["cluster", "create", "-c", str(EXAMPLE)])
        assert created.exit_code == 0, created.output
        shown = runner.invoke(app, ["cluster", "status", "-c", str(EXAMPLE)])
        assert shown.exit_code == 0 and f"{name}-master active" in shown.output
        assert "floating IP 172.24.4." in shown.output

        refused = runner.invoke(app, ["cluster", "destroy", "-c", str(EXAMPLE)], input="n\n")
        assert refused.exit_code == 1
        assert runner.invoke(app, ["cluster", "status", "-c", str(EXAMPLE)]).output.count("active") == 1

        again = runner.invoke(app, ["cluster", "create", "-c", str(EXAMPLE)])
        assert again.exit_code == 1 and "already has a master" in again.output

        destroyed = runner.invoke(app, ["cluster", "destroy", "-c", str(EXAMPLE), "--yes"])
        assert destroyed.exit_code == 0, destroyed.output
        assert "floating IPs kept in the project: 172.24.4." in " ".join(destroyed.output.split())
    finally:
        purge(demo, name)


def test_cli_bad_cluster_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text('[cluster]\nname = "x"\n[master]\nflavour = "m1.small"\n')
    r = CliRunner().invoke(app, ["cluster", "create", "-c", str(bad)])
    assert r.exit_code == 2 and "master.floating_network" in r.output


@pytest.mark.parametrize(("system", "ports"), [("htcondor", {9618})])
def test_htcondor_master_opens_only_its_ports(
    testbed: OpenStackTestbed, admin: Any, demo: Any, cluster_name: str, system: str, ports: set[int]
) -> None:
    data = cluster_data(cluster_name)
    data["batch"] = {"system": system}
    maker = ClusterMaker(parse_cluster(data))
    try:
        st = maker.create()
        assert st.master is not None
        group = demo.network.find_security_group(f"marea-{cluster_name}-master")
        rules = list(demo.network.security_group_rules(security_group_id=group.id, direction="ingress"))
        opened = {r.port_range_min for r in rules if r.port_range_min}
        assert opened == ports | {22}
        ssh = [r for r in rules if r.port_range_min == 22]
        assert [r.remote_ip_prefix for r in ssh] == ["0.0.0.0/0"]
        assert all(r.remote_group_id for r in rules if r.port_range_min != 22), "batch ports open to the world"
        user_data = base64.b64decode(admin.compute.get_server(st.master.cloud_id).user_data).decode()
        assert "condor_token_create" in user_data
        report = maker.destroy(release_floating_ips=True)
        assert report.servers == 1 and report.security_groups == 2
    finally:
        purge(demo, cluster_name)


def test_a_kubernetes_cluster_file_is_accepted() -> None:
    """The engine has a Kubernetes driver now (tests/kube): the cluster file parses (no testbed needed)."""
    data = cluster_data("k8s-accepted")
    data["batch"] = {"system": "kubernetes"}
    assert parse_cluster(data).marea.batch.system == "kubernetes"


def test_a_failed_create_removes_what_it_made(testbed: OpenStackTestbed, demo: Any, cluster_name: str) -> None:
    data = cluster_data(cluster_name)
    data["master"]["flavour"] = "no-such-flavour"
    maker = ClusterMaker(parse_cluster(data))
    with pytest.raises(CloudError) as info:
        maker.create()
    assert "no-such-flavour" in info.value.reason and "removed" in info.value.reason
    tag = f"{TAG_CLUSTER}={cluster_name}"
    assert list(demo.network.security_groups(tags=tag)) == []
    assert list(demo.network.ports(tags=tag)) == []
    assert demo.compute.find_keypair(f"marea-{cluster_name}") is None
