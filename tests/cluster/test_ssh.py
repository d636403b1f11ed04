"""`marea cluster ssh` and the engine part of `marea cluster status`, without a cloud.

The ssh argument vector and the login-user guess are pure functions; the commands run against an
openstacksdk-shaped fake connection (real `Server` and `Image` resources) with `subprocess.run` and `os.execvp`
replaced, so nothing leaves the machine. The real cluster against the testbed is in tests/openstack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from marea.cli import app
from marea.clouds.base import TAG_CLUSTER, TAG_INSTANCE
from marea.clouds.openstack import OpenStackCloud
from marea.cluster import cli as cluster_cli
from marea.cluster.config import load_cluster
from marea.cluster.maker import TAG_ROLE, ClusterMaker, DestroyReport
from marea.cluster.ssh import (
    ENGINE_STATUS,
    SshError,
    engine_status_command,
    forget_host_keys,
    known_hosts_file,
    login_user,
    master_target,
    run_on_master,
    ssh_command,
)

sdk_server = pytest.importorskip("openstack.compute.v2.server")
sdk_image = pytest.importorskip("openstack.image.v2.image")
pytestmark = pytest.mark.filterwarnings("ignore:The _compute_attributes method is deprecated")

FIP = "172.24.4.7"
CLUSTER_TOML = """
[cluster]
name = "phys"
[[flavours]]
name = "m1.small"
cores = 1
memory_mb = 2048
[cloud]
driver = "openstack"
[cloud.openstack]
cloud = "demo"
image = "debian-12"
network = "private"
[batch]
system = "slurm"
[master]
flavour = "m1.medium"
floating_network = "public"
"""
ENGINE_REPORT = {
    "cluster": "phys",
    "at": 1000.0,
    "last_cycle_at": 995.0,
    "workers": [
        {"id": "phys-a", "state": "busy"},
        {"id": "phys-b", "state": "idle"},
        {"id": "phys-c", "state": "busy"},
    ],
    "queued_jobs": 4,
    "errors": [],
}


# -- pure: the argument vector ------------------------------------------------------------------------------
def test_interactive_login_pins_host_keys_per_cluster_and_allows_prompts(tmp_path: Path) -> None:
    argv = ssh_command(FIP, "debian", "", tmp_path / "kh", [])
    assert argv[0] == "ssh" and argv[-3:] == ["-l", "debian", FIP]
    options = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    assert options == ["StrictHostKeyChecking=accept-new", f"UserKnownHostsFile={tmp_path / 'kh'}", "ConnectTimeout=10"]
    assert "--" not in argv and "-i" not in argv


def test_a_command_runs_in_batch_mode_with_its_words_as_separate_items_after_the_separator(tmp_path: Path) -> None:
    command = ["echo", "two words", "$HOME;rm -rf /", "-V"]
    argv = ssh_command(FIP, "rocky", "", tmp_path / "kh", command)
    assert "BatchMode=yes" in argv
    sep = argv.index("--")
    assert argv[sep - 3 : sep] == ["-l", "rocky", FIP]
    assert argv[sep + 1 :] == command, "command words must reach ssh verbatim, one argv item each"


def test_the_key_file_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    argv = ssh_command(FIP, "debian", "~/.ssh/cluster", tmp_path / "kh", ["true"])
    assert argv[argv.index("-i") + 1] == str(tmp_path / ".ssh" / "cluster")


def test_a_known_hosts_path_with_blanks_or_percent_signs_stays_one_literal_file() -> None:
    argv = ssh_command(FIP, "debian", "", "/home/a b/100%/phys", [])
    assert 'UserKnownHostsFile="/home/a b/100%%/phys"' in argv


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client")
def test_real_ssh_reads_the_percent_sign_back_literally() -> None:
    # `ssh -G` prints the configuration it would use (joining a list of files with blanks, so it cannot show
    # the quoting); an unescaped % fails there with "unknown key"
    argv = ssh_command(FIP, "debian", "", "/home/a b/100%/phys", [])
    r = subprocess.run(["ssh", "-G", *argv[1:]], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert "userknownhostsfile /home/a b/100%/phys" in r.stdout.splitlines(), r.stderr


def test_a_host_that_looks_like_an_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a host"):
        ssh_command("-oProxyCommand=sh", "debian", "", tmp_path / "kh", [])


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client")
def test_real_ssh_does_not_read_command_words_as_its_own_options(tmp_path: Path) -> None:
    # `ssh ... host -V` prints ssh's version and exits 0; after `--`, -V is the remote command instead, so ssh
    # must try to connect (refused, timed out or denied: any failure is fine, the version banner is not)
    argv = ssh_command("127.0.0.1", "nobody", "", tmp_path / "kh", ["-V"])
    argv[argv.index("ConnectTimeout=10")] = "ConnectTimeout=3"
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and not r.stderr.startswith("OpenSSH_"), r.stderr


def test_the_engine_status_goes_through_non_interactive_sudo_except_for_root() -> None:
    assert engine_status_command("debian") == ["sudo", "-n", *ENGINE_STATUS]
    assert engine_status_command("root") == list(ENGINE_STATUS)


# -- pure: the login user -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("configured", "properties", "user"),
    [
        ("admin", {"os_admin_user": "cloud", "os_distro": "ubuntu"}, "admin"),
        ("", {"os_admin_user": "cloud", "os_distro": "ubuntu"}, "cloud"),
        ("", {"os_distro": "debian"}, "debian"),
        ("", {"os_distro": "Ubuntu"}, "ubuntu"),
        ("", {"os_distro": "centos"}, "centos"),
        ("", {"os_distro": "rocky"}, "rocky"),
        ("", {"os_distro": "almalinux"}, "almalinux"),
        ("", {"os_distro": "fedora"}, "fedora"),
        ("", {"os_distro": "arch"}, "root"),
        ("", {"os_admin_user": "  ", "os_distro": ""}, "root"),
        ("", {}, "root"),
    ],
)
def test_login_user(configured: str, properties: dict[str, str], user: str) -> None:
    assert login_user(configured, properties) == user


# -- pure: the per-cluster known_hosts ----------------------------------------------------------------------
def test_known_hosts_live_in_the_xdg_state_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert known_hosts_file("phys") == tmp_path / "state" / "marea" / "known_hosts" / "phys"
    for unusable in ("", "relative/dir"):  # the XDG spec: ignore a relative path
        monkeypatch.setenv("XDG_STATE_HOME", unusable)
        assert known_hosts_file("phys") == tmp_path / "home" / ".local" / "state" / "marea" / "known_hosts" / "phys"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert known_hosts_file("phys") == tmp_path / "home" / ".local" / "state" / "marea" / "known_hosts" / "phys"


def test_forgetting_host_keys_deletes_only_that_clusters_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    for name in ("phys", "chem"):
        known_hosts_file(name).parent.mkdir(parents=True, exist_ok=True)
        known_hosts_file(name).write_text(f"{FIP} ssh-ed25519 AAAA\n")
    assert forget_host_keys("phys") is True
    assert not known_hosts_file("phys").exists() and known_hosts_file("chem").exists()
    assert forget_host_keys("phys") is False


# -- the master, through a fake connection ------------------------------------------------------------------
def server(name: str, role: str = "", status: str = "ACTIVE", image: str = "img-1", addr: str = "10.10.0.5") -> Any:
    metadata = {TAG_CLUSTER: "phys", TAG_ROLE: "master"} if role == "master" else {TAG_CLUSTER: "phys"}
    if role == "worker":
        metadata[TAG_INSTANCE] = name
    return sdk_server.Server(
        id=f"id-{name}", name=name, status=status, metadata=metadata, image={"id": image},
        addresses={"private": [{"addr": addr, "OS-EXT-IPS:type": "fixed"}]},
    )  # fmt: skip


class FakeConn:
    """What ClusterMaker.status() and the login-user guess call, nothing else."""

    def __init__(self, servers: list[Any], fips: Sequence[str] = (FIP,), image: Any = None) -> None:
        self.image_reads: list[str] = []
        self._image = image if image is not None else sdk_image.Image(id="img-1", os_distro="debian")
        self.compute = SimpleNamespace(servers=lambda details=True: list(servers))
        self.network = SimpleNamespace(ips=lambda **kw: [SimpleNamespace(floating_ip_address=a) for a in fips])
        self.image = SimpleNamespace(get_image=self._get_image)

    def _get_image(self, image_id: str) -> Any:
        self.image_reads.append(image_id)
        return self._image


def cluster_path(tmp_path: Path, extra_master: str = "") -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(CLUSTER_TOML + extra_master)
    return path


def make(tmp_path: Path, conn: FakeConn, extra_master: str = "") -> ClusterMaker:
    cf = load_cluster(cluster_path(tmp_path, extra_master))
    return ClusterMaker(cf, OpenStackCloud(cf.marea.cloud.openstack, connection=conn))


@pytest.fixture(autouse=True)
def state_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Never touch the real ~/.local/state."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


def test_the_login_user_comes_from_the_masters_image(tmp_path: Path) -> None:
    conn = FakeConn([server("phys-master", "master", image="img-7")])
    target = master_target(make(tmp_path, conn))
    assert (target.host, target.user, target.key_file) == (FIP, "debian", "")
    assert conn.image_reads == ["img-7"]
    assert target.known_hosts == known_hosts_file("phys") and target.known_hosts.parent.is_dir()


def test_os_admin_user_from_glance_properties_wins_over_the_distro(tmp_path: Path) -> None:
    image = sdk_image.Image(id="img-1", os_distro="ubuntu", os_admin_user="cloud-user")
    conn = FakeConn([server("phys-master", "master")], image=image)
    assert master_target(make(tmp_path, conn)).user == "cloud-user"


def test_a_configured_user_and_key_skip_the_image(tmp_path: Path) -> None:
    conn = FakeConn([server("phys-master", "master")])
    target = master_target(make(tmp_path, conn, 'ssh_user = "admin"\nssh_key_file = "/keys/phys"\n'))
    assert (target.user, target.key_file) == ("admin", "/keys/phys")
    assert conn.image_reads == []


@pytest.mark.parametrize(
    ("servers", "fips", "message"),
    [
        ([], (FIP,), "cluster phys has no master"),
        ([server("phys-master", "master")], (), "cluster phys: the master has no floating IP"),
    ],
)
def test_nothing_to_reach_is_one_line(tmp_path: Path, servers: list[Any], fips: tuple[str, ...], message: str) -> None:
    with pytest.raises(SshError, match=message):
        master_target(make(tmp_path, FakeConn(servers, fips)))


def test_run_on_master_captures_output_and_never_uses_a_shell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[list[str], dict[str, Any]]] = []

    def fake_run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append((argv, kw))
        return subprocess.CompletedProcess(argv, 3, "out\n", "err\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    maker = make(tmp_path, FakeConn([server("phys-master", "master")]))
    proc = run_on_master(maker, ["hostname", "-f"], timeout=5)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
    argv, kw = calls[0]
    assert argv[-6:] == ["-l", "debian", FIP, "--", "hostname", "-f"] and "BatchMode=yes" in argv
    assert kw["capture_output"] and kw["timeout"] == 5 and not kw.get("shell")
    with pytest.raises(ValueError, match="needs a command"):
        run_on_master(maker, [], timeout=5)


# -- the commands -------------------------------------------------------------------------------------------
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, conn: FakeConn) -> tuple[CliRunner, Path]:
    path = cluster_path(tmp_path)
    maker = make(tmp_path, conn)
    monkeypatch.setattr(cluster_cli, "_maker", lambda _: maker)
    return CliRunner(), path


def fake_ssh(monkeypatch: pytest.MonkeyPatch, rc: int, stdout: str = "", stderr: str = "") -> list[list[str]]:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, rc, stdout, stderr)

    monkeypatch.setattr(subprocess, "run", fake_run)
    return calls


def test_status_json_has_the_clouds_view_and_the_engines_own_status(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    servers = [
        server("phys-master", "master"),
        server("phys-b", "worker", status="BUILD", addr="10.10.0.9"),
        server("phys-a", "worker", addr="10.10.0.8"),
        server("phys-other"),  # the cluster's, but neither master nor worker: not listed
    ]
    runner, path = cli(monkeypatch, tmp_path, FakeConn(servers))
    calls = fake_ssh(monkeypatch, 0, json.dumps(ENGINE_REPORT))
    r = runner.invoke(app, ["cluster", "status", "-c", str(path), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc == {
        "cluster": "phys",
        "master": {"name": "phys-master", "id": "id-phys-master", "status": "active", "address": "10.10.0.5",
                   "floating_ip": FIP},
        "workers": [
            {"name": "phys-a", "id": "id-phys-a", "status": "active", "address": "10.10.0.8", "fault": None},
            {"name": "phys-b", "id": "id-phys-b", "status": "building", "address": "10.10.0.9", "fault": None},
        ],
        "engine": ENGINE_REPORT,
        "engine_error": None,
    }  # fmt: skip
    assert calls[0][-8:] == ["--", "sudo", "-n", *ENGINE_STATUS]


@pytest.mark.parametrize(
    ("rc", "stdout", "stderr", "reason"),
    [
        (255, "", "ssh: connect to host 172.24.4.7 port 22: Connection refused\n",
         "ssh to debian@172.24.4.7 failed: ssh: connect to host 172.24.4.7 port 22: Connection refused"),
        (1, "", "sudo: a password is required\n", "the engine's status failed (exit 1): sudo: a password is required"),
        (0, "Traceback (most recent call last):\n", "", "the engine's status is not JSON"),
    ],
)  # fmt: skip
def test_status_json_says_in_one_line_why_the_engine_was_not_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rc: int, stdout: str, stderr: str, reason: str
) -> None:
    runner, path = cli(monkeypatch, tmp_path, FakeConn([server("phys-master", "master")]))
    fake_ssh(monkeypatch, rc, stdout, stderr)
    r = runner.invoke(app, ["cluster", "status", "-c", str(path), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["engine"] is None and doc["engine_error"] == reason and "\n" not in reason


def test_status_json_without_a_master_does_not_try_ssh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runner, path = cli(monkeypatch, tmp_path, FakeConn([server("phys-a", "worker")], fips=()))
    calls = fake_ssh(monkeypatch, 0, "{}")
    doc = json.loads(runner.invoke(app, ["cluster", "status", "-c", str(path), "--json"]).output)
    assert doc["master"] is None and doc["engine"] is None and doc["engine_error"] == "no master"
    assert [w["name"] for w in doc["workers"]] == ["phys-a"] and calls == []


def test_status_table_adds_the_engines_summary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runner, path = cli(monkeypatch, tmp_path, FakeConn([server("phys-master", "master")]))
    fake_ssh(monkeypatch, 0, json.dumps(ENGINE_REPORT))
    r = runner.invoke(app, ["cluster", "status", "-c", str(path)])
    assert r.exit_code == 0, r.output
    assert "master phys-master active" in r.output
    assert "engine: workers 2 busy, 1 idle; queued jobs 4; last cycle 5 s ago" in r.output


def test_status_table_survives_a_failed_ssh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runner, path = cli(monkeypatch, tmp_path, FakeConn([server("phys-master", "master")]))
    fake_ssh(monkeypatch, 255, "", "debian@172.24.4.7: Permission denied (publickey).\n")
    r = runner.invoke(app, ["cluster", "status", "-c", str(path)])
    assert r.exit_code == 0, r.output
    assert "engine: not readable: ssh to debian@172.24.4.7 failed: debian@172.24.4.7: Permission denied" in r.output


def test_status_of_a_building_master_does_not_wait_for_ssh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runner, path = cli(monkeypatch, tmp_path, FakeConn([server("phys-master", "master", status="BUILD")]))
    calls = fake_ssh(monkeypatch, 0, "{}")
    r = runner.invoke(app, ["cluster", "status", "-c", str(path)])
    assert r.exit_code == 0 and "engine: not readable: the master is building" in r.output and calls == []


def test_ssh_runs_a_command_and_exits_with_its_code(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runner, path = cli(monkeypatch, tmp_path, FakeConn([server("phys-master", "master")]))
    calls = fake_ssh(monkeypatch, 7)
    r = runner.invoke(app, ["cluster", "ssh", "-c", str(path), "--", "ls", "-la", "/tmp dir"])
    assert r.exit_code == 7, r.output
    assert calls[0][-7:] == ["-l", "debian", FIP, "--", "ls", "-la", "/tmp dir"] and "BatchMode=yes" in calls[0]
    # without the separator, words after the first positional ones are not marea's options either
    r = runner.invoke(app, ["cluster", "ssh", "-c", str(path), "uptime", "-p"])
    assert r.exit_code == 7 and calls[1][-3:] == ["--", "uptime", "-p"]


def test_ssh_without_a_command_replaces_marea_with_an_interactive_ssh(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runner, path = cli(monkeypatch, tmp_path, FakeConn([server("phys-master", "master")]))
    execs: list[tuple[str, list[str]]] = []

    def fake_exec(file: str, argv: list[str]) -> None:
        execs.append((file, argv))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execvp", fake_exec)
    r = runner.invoke(app, ["cluster", "ssh", "-c", str(path)])
    assert r.exit_code == 0, r.output
    file, argv = execs[0]
    assert file == "ssh" and argv[-3:] == ["-l", "debian", FIP] and "BatchMode=yes" not in argv


def test_ssh_without_a_master_fails_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runner, path = cli(monkeypatch, tmp_path, FakeConn([]))
    r = runner.invoke(app, ["cluster", "ssh", "-c", str(path), "--", "true"])
    assert r.exit_code == 1 and r.output.strip() == "error: cluster phys has no master"


def test_destroy_forgets_the_clusters_host_keys_only_once_destroyed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runner, path = cli(monkeypatch, tmp_path, FakeConn([]))
    monkeypatch.setattr(ClusterMaker, "destroy", lambda self, release, progress: DestroyReport())
    known = known_hosts_file("phys")
    known.parent.mkdir(parents=True)
    known.write_text(f"{FIP} ssh-ed25519 AAAA\n")
    assert runner.invoke(app, ["cluster", "destroy", "-c", str(path)], input="n\n").exit_code == 1
    assert known.exists(), "a refused destroy must keep the host keys"
    r = runner.invoke(app, ["cluster", "destroy", "-c", str(path), "--yes"])
    assert r.exit_code == 0, r.output
    assert not known.exists()
