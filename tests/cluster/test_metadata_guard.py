"""The metadata guard that opens every marea user-data, run for real in a network namespace of its own.

A namespace gets the metadata address on its loopback and an HTTP server there (standing in for the cloud's
metadata service, which the OpenStack journey reaches for real); the guard runs inside with only the tools
the image would have (nft, or iptables, or neither). Then an unprivileged process and root each try to read the
"user-data". Needs root (namespaces, nft/iptables): CI runs as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from marea.cluster.cloudinit import METADATA_GUARD, METADATA_V4

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

#: sh and ip are in every image; the firewall tools are what the three paths differ by
BASE_TOOLS = ("sh", "ip", "setpriv")
#: the system's Python, which an unprivileged user can run (a venv's may live under /root)
PYTHON = "/usr/bin/python3"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


@pytest.fixture
def netns() -> Iterator[str]:
    """The VM's namespace; the metadata address is in a second one (the cloud's), reached through a gateway
    as on a real cloud (a local address would bypass the routing table the last-resort guard uses)."""
    tag = uuid.uuid4().hex[:6]
    vm, cloud = f"mguard-vm-{tag}", f"mguard-cl-{tag}"
    _ip("netns", "add", vm)
    _ip("netns", "add", cloud)
    _ip("link", "add", f"mg{tag}a", "netns", vm, "type", "veth", "peer", "name", f"mg{tag}b", "netns", cloud)
    for ns, dev, addr in ((vm, f"mg{tag}a", "10.99.0.2/24"), (cloud, f"mg{tag}b", "10.99.0.1/24")):
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "addr", "add", addr, "dev", dev)
        _ip("-n", ns, "link", "set", dev, "up")
    _ip("-n", cloud, "addr", "add", f"{METADATA_V4}/32", "dev", "lo")
    _ip("-n", vm, "route", "add", "default", "via", "10.99.0.1")
    server = subprocess.Popen(
        ["ip", "netns", "exec", cloud, PYTHON, "-m", "http.server", "--bind", METADATA_V4, "80"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(50):
            if reads_metadata(vm, 0):
                break
            time.sleep(0.1)
        yield vm
    finally:
        server.kill()
        server.wait()
        subprocess.run(["ip", "netns", "del", vm], check=False)
        subprocess.run(["ip", "netns", "del", cloud], check=False)


def toolbox(tmp_path: Path, *tools: str) -> Path:
    """A PATH holding only the base tools and `tools`, as an image with just those installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for tool in (*BASE_TOOLS, *tools):
        found = shutil.which(tool)
        assert found, f"{tool} is not installed here (make testbeds installs nftables and iptables)"
        (bin_dir / tool).symlink_to(found)
    return bin_dir


def reads_metadata(netns: str, uid: int) -> bool:
    """Can a process of `uid` in the namespace read from the metadata address?"""
    fetch = f"import urllib.request; urllib.request.urlopen('http://{METADATA_V4}/', timeout=3).read()"
    as_user = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if uid else []
    r = subprocess.run(["ip", "netns", "exec", netns, *as_user, PYTHON, "-c", fetch], capture_output=True)
    return r.returncode == 0


def guard(netns: str, path: Path) -> None:
    r = subprocess.run(
        ["ip", "netns", "exec", netns, "sh", "-c", METADATA_GUARD],
        env={"PATH": str(path)}, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


NOBODY = 65534


def test_without_the_guard_anyone_reads_the_metadata(netns: str) -> None:
    """The control: the checks below fail for the guard's reason, not the namespace's."""
    assert reads_metadata(netns, NOBODY) and reads_metadata(netns, 0)


@pytest.mark.parametrize("firewall", ["nft", "iptables"])
def test_with_a_firewall_only_root_reaches_the_metadata_service(netns: str, tmp_path: Path, firewall: str) -> None:
    guard(netns, toolbox(tmp_path, firewall))
    assert not reads_metadata(netns, NOBODY), "an unprivileged process read the metadata service"
    assert not reads_metadata(netns, 1000)
    assert reads_metadata(netns, 0), "root (cloud-init) must keep the metadata service"
    # at every boot again: running it twice leaves one rule, not two
    guard(netns, toolbox(tmp_path / "again", firewall))
    listing = ["nft", "list", "ruleset"] if firewall == "nft" else ["iptables", "-S", "OUTPUT"]
    rules = subprocess.run(["ip", "netns", "exec", netns, *listing], capture_output=True, text=True).stdout
    assert rules.count(METADATA_V4) == 1, rules


def test_an_image_without_a_firewall_shuts_everyone_out(netns: str, tmp_path: Path) -> None:
    guard(netns, toolbox(tmp_path))
    assert not reads_metadata(netns, NOBODY)
    assert not reads_metadata(netns, 0)
