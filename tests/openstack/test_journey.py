"""The tenant's whole journey on real guests (issue 10): create, contextualise, scale up, run, scale down, destroy.

Real components throughout: the testbed's OpenStack (Keystone, Nova, Neutron, Glance), servers that boot as
systemd-nspawn guests running the image's own systemd and cloud-init, Slurm 24.11 and HTCondor 23.9 from
Debian 13 inside them, marea installed on the master from a wheel of this checkout and running under systemd
with an application credential. What the testbed stands in for: Neutron's L3 agent (DNAT for floating IPs) and a
package index (the wheelhouse); guests share the host kernel, so Slurm jobs run without cgroups
(journey.CONTAINER_SLURM_CONF).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from marea.clouds.base import TAG_CLUSTER

from .conftest import OpenStackTestbed, purge
from .journey import (
    BASE_IMAGE,
    BATCH_IMAGE,
    PROBE_PATH,
    Journey,
    build_wheelhouse,
    cluster_toml,
    htcondor_done,
    install_probe,
    probe_htcondor,
    probe_htcondor_result,
    probe_slurm,
    probe_slurm_result,
    slurm_done,
    submit_htcondor,
    submit_slurm,
)

pytestmark = [pytest.mark.openstack, pytest.mark.timeout(1500)]

#: per system: submit the jobs, all done?, submit the secrets probe, the probe's result
SYSTEMS: dict[str, tuple[Any, Any, Any, Any]] = {
    "slurm": (submit_slurm, slurm_done, probe_slurm, probe_slurm_result),
    "htcondor": (submit_htcondor, htcondor_done, probe_htcondor, probe_htcondor_result),
}

JOBS = 6
JOB_SECONDS = 15
MAX_WORKERS = 3


@pytest.fixture(scope="session")
def booting_cloud(testbed: OpenStackTestbed) -> str:
    conn = testbed.connect("demo")
    try:
        for image in (BATCH_IMAGE, BASE_IMAGE):
            if conn.image.find_image(image) is None:
                pytest.skip(f"guest image {image} not in Glance: run 'testbeds/guests.sh install', then restart")
    finally:
        conn.close()
    return build_wheelhouse()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


@pytest.fixture
def journey_demo(demo: Any, cluster_name: str) -> Iterator[Any]:
    """The demo project with no floating IP of its own, so that "exactly one left" is checkable; cleaned after
    (by `cluster destroy` when a test stopped half-way, so that its groups do not eat the project's quota)."""
    ext = demo.network.find_network("public")
    for ip in demo.network.ips(floating_network_id=ext.id):
        if not ip.port_id:
            demo.network.delete_ip(ip)
    demo.marea_foreign_fips = {ip.id for ip in demo.network.ips(floating_network_id=ext.id)}  # others' servers'
    yield demo
    purge(demo, cluster_name)


@pytest.fixture
def journeys() -> Iterator[list[Journey]]:
    """Journeys a test started: a test that stopped half-way has its cluster destroyed, so that what it made
    (security groups, ports, the credential) does not eat the project's quota for the next test."""
    made: list[Journey] = []
    yield made
    for journey in made:
        if "destroyed" not in journey.marks:
            journey.cli("cluster", "destroy", "--yes", timeout=600)


def worker_servers(conn: Any, cluster: str) -> list[Any]:
    return [
        s
        for s in conn.compute.servers()
        if (s.metadata or {}).get(TAG_CLUSTER) == cluster
        and (s.metadata or {}).get("marea-role") != "master"
        and s.status != "DELETED"
    ]


def assert_nothing_left(conn: Any, cluster: str, destroyed: str) -> None:
    tag = f"{TAG_CLUSTER}={cluster}"
    left = [s.name for s in conn.compute.servers() if (s.metadata or {}).get(TAG_CLUSTER) == cluster]
    assert all(s.status == "DELETED" for s in conn.compute.servers() if s.name in left), left
    assert list(conn.network.ports(tags=tag)) == []
    assert list(conn.network.security_groups(tags=tag)) == []
    ext = conn.network.find_network("public")
    fips = [ip for ip in conn.network.ips(floating_network_id=ext.id) if ip.id not in conn.marea_foreign_fips]
    assert len(fips) == 1 and fips[0].port_id is None, "exactly the master's floating IP, kept, on no port"
    assert f"floating IPs kept in the project: {fips[0].floating_ip_address}" in destroyed
    creds = [c.name for c in conn.identity.application_credentials(user=conn.current_user_id)]
    assert f"marea-{cluster}" not in creds, "the master's application credential outlived the cluster"


def assert_master_keeps_its_secrets(journey: Journey) -> None:
    """A user logged in on the master reads no secret and not the user-data; root still reaches the metadata
    service (the guard is the user's, not a broken network: the probe's refusals mean something)."""
    install_probe(journey)
    r = journey.on_master(PROBE_PATH)
    assert r.returncode == 0, f"a user on the master read secrets: {r.stdout}{r.stderr}"
    as_root = journey.ok_on_master("sudo curl -sf -m 5 http://169.254.169.254/openstack/latest/user_data | head -c 13")
    assert as_root == "#cloud-config", as_root


def run_journey(
    journey: Journey, conn: Any, cluster: str, system: str, restart_during_scale_up: bool
) -> dict[str, Any]:
    submit, done, probe, probe_result = SYSTEMS[system]
    journey.create()
    st = journey.status()
    assert st["master"] is not None and st["master"]["floating_ip"], st
    assert st["workers"] == []
    journey.wait_master_ready()
    # the master's marea runs with an application credential, never the admin's password
    clouds = journey.ok_on_master("sudo cat /etc/marea/clouds.yaml")
    assert "v3applicationcredential" in clouds and "password" not in clouds
    assert journey.ok_on_master("sudo stat -c %a /etc/marea/clouds.yaml").strip() == "600"
    # and in the sandbox of the unit shipped in the package (src/marea/systemd/marea.service), as systemd set it up
    pid = "$(systemctl show -p MainPID --value marea)"
    creds = journey.ok_on_master(f"sudo grep -E '^(NoNewPrivs|CapEff|CapBnd):' /proc/{pid}/status")
    assert re.search(r"NoNewPrivs:\s+1\b", creds) and re.search(r"CapEff:\s+0+\n", creds), creds
    assert re.search(r"CapBnd:\s+0+\n", creds), creds
    sandbox = journey.on_master(f"sudo nsenter -t {pid} -m touch /etc/marea-sandbox-probe")
    assert sandbox.returncode != 0 and "Read-only file system" in sandbox.stderr, sandbox.stdout + sandbox.stderr

    assert_master_keeps_its_secrets(journey)

    submit(journey, JOBS, JOB_SECONDS)
    probe(journey)  # one more job: on a worker, it tries to read the join secrets and the user-data
    journey.mark("jobs submitted")
    seen: set[str] = set()

    def some_workers() -> list[Any]:
        workers = worker_servers(conn, cluster)
        seen.update(s.id for s in workers)
        return workers

    journey.wait("first worker created", some_workers, timeout=120, step=1)
    if restart_during_scale_up:
        journey.ok_on_master("sudo systemctl restart marea")
        journey.mark("marea restarted")

    def probed() -> str | None:
        some_workers()
        return probe_result(journey)

    result = journey.wait("the probe job ran", probed, timeout=600, step=3)
    read_nothing = result == "COMPLETED 0:0" or (result.startswith("exit 0:") and result.endswith("readable:"))
    assert read_nothing, f"a job on a worker read secrets: {result}"

    def all_done() -> bool:
        some_workers()
        return bool(done(journey, JOBS + 1))

    journey.wait("all jobs done", all_done, timeout=600, step=3)
    joined = {w["id"] for w in journey.engine()["workers"]}
    journey.wait("back at the minimum", lambda: not some_workers(), timeout=300, step=3)
    engine = journey.engine()
    assert engine["workers"] == []
    kinds = [d["kind"] for d in engine["decisions"]]
    assert "boot" in kinds and "joined" in kinds, engine["decisions"]  # marea saw its workers join
    assert engine["boot_failures"]["total"] == 0, engine["boot_failures"]
    assert 1 <= len(seen) <= MAX_WORKERS, f"{len(seen)} workers booted (max {MAX_WORKERS}): duplicates?"
    if system == "htcondor":  # each removed worker's own token is revoked at the central manager
        revoked = journey.ok_on_master("sudo cat /etc/condor/config.d/60-marea-revoked.conf")
        assert revoked.count('"') >= 2 * len(seen) and "SEC_TOKEN_REVOCATION_EXPR = member(jti," in revoked, revoked
    final = journey.status()
    assert final["master"] is not None and final["workers"] == [] and final["engine"] is not None
    destroyed = journey.destroy()
    journey.mark("destroyed")
    assert_nothing_left(conn, cluster, destroyed)
    return {"workers_booted": len(seen), "joined_seen": sorted(joined), "marks": journey.marks}


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_the_journey_with_a_restart_in_the_middle_of_the_scale_up(
    system: str,
    booting_cloud: str,
    journey_demo: Any,
    cluster_name: str,
    key_file: Path,
    tmp_path: Path,
    journeys: list[Journey],
) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(cluster_toml(cluster_name, system, key_file, max_workers=MAX_WORKERS))
    journey = Journey(config)
    journeys.append(journey)
    result = run_journey(journey, journey_demo, cluster_name, system, restart_during_scale_up=True)
    assert result["workers_booted"] >= 1


def test_a_worker_image_without_the_batch_software_never_joins_and_is_explained(
    booting_cloud: str,
    journey_demo: Any,
    cluster_name: str,
    key_file: Path,
    tmp_path: Path,
    journeys: list[Journey],
) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(
        cluster_toml(cluster_name, "slurm", key_file, max_workers=1, worker_image=BASE_IMAGE, join_timeout_s=45)
    )
    journey = Journey(config)
    journeys.append(journey)
    journey.create()
    journey.wait_master_ready()
    submit_slurm(journey, 1, 5)

    def failed_boot() -> dict[str, Any] | None:
        engine = journey.engine()
        return engine if engine["boot_failures"]["total"] >= 1 else None

    engine = journey.wait("a failed boot", failed_boot, timeout=300, step=5)
    assert "join" in (engine["boot_failures"]["last_reason"] or ""), engine["boot_failures"]
    explained = journey.ok_on_master("sudo marea status -c /etc/marea/marea.toml --explain")
    assert "failed boots: " in explained and "join" in explained
    assert "backoff" in explained.lower() or "back off" in explained.lower(), explained
    # the job is still waiting: nothing ran on a worker that never joined
    assert journey.ok_on_master("squeue -h -o %T").split() == ["PENDING"]
    destroyed = journey.destroy()
    assert_nothing_left(journey_demo, cluster_name, destroyed)
