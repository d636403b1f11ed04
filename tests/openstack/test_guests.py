"""The testbed's booting servers (testbeds/openstack/guestvirt): what a tenant's VM gets from the cloud, for real.

A server of the debian-13-base image boots as a systemd-nspawn guest running its own systemd and cloud-init:
user-data, SSH key and hostname from Nova's config drive, the Neutron port's MAC and fixed IP, the floating IP
reachable from the host (the testbed's L3 stand-in), the cloud's endpoints and the metadata service (at
169.254.169.254, with the server's own user-data) reachable, nothing outside; Nova's
stop/start and the power-state sync see the real guest; delete leaves nothing on the host.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import STATE, OpenStackTestbed, wait_for
from .journey import API_IP, BASE_IMAGE

pytestmark = [pytest.mark.openstack, pytest.mark.timeout(600)]

USER_DATA = """#cloud-config
write_files:
  - path: /var/lib/marea-test/written
    content: "from user-data\\n"
runcmd:
  - [sh, -c, "id debian > /var/lib/marea-test/user"]
"""


def ssh(key: Path, host: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    options = ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "BatchMode=yes", "ConnectTimeout=5"]
    argv = ["ssh", "-i", str(key), *(f"-o{o}" for o in options), "-oLogLevel=ERROR", f"debian@{host}", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def test_a_server_boots_as_a_real_guest_with_what_nova_and_neutron_give_it(
    testbed: OpenStackTestbed, demo: Any, tmp_path: Path, cluster_name: str
) -> None:
    image = demo.image.find_image(BASE_IMAGE)
    if image is None:
        pytest.skip(f"guest image {BASE_IMAGE} not in Glance: run 'testbeds/guests.sh install', then restart")
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    keypair = demo.compute.create_keypair(name=f"{cluster_name}-k", public_key=(tmp_path / "key.pub").read_text())
    net = demo.network.find_network("private")
    server = demo.compute.create_server(
        name=f"{cluster_name}-vm", image_id=image.id, flavor_id=demo.compute.find_flavor("m1.small").id,
        networks=[{"uuid": net.id}], key_name=keypair.name,
        user_data=base64.b64encode(USER_DATA.encode()).decode(),
    )  # fmt: skip
    fip = None
    guest_dir = STATE / "data" / "nova" / "instances" / server.id
    try:
        server = demo.compute.wait_for_server(server, wait=120)
        port = next(demo.network.ports(device_id=server.id))
        fixed = port.fixed_ips[0]["ip_address"]
        fip = demo.network.create_ip(floating_network_id=demo.network.find_network("public").id, port_id=port.id)
        assert guest_dir.is_dir(), "no guest was started for a root-filesystem image"

        # reachable at the floating IP, with the keypair's key; cloud-init ran the user-data
        wait_for(lambda: ssh(key, fip.floating_ip_address, "cloud-init status --wait").returncode == 0, timeout=180)
        out = ssh(key, fip.floating_ip_address, "hostname; cat /var/lib/marea-test/written; ip -o -4 addr; "
                  "cat /sys/class/net/eth0/address; cat /var/lib/marea-test/user").stdout  # fmt: skip
        assert out.splitlines()[0] == server.name
        assert "from user-data" in out and "uid=" in out
        assert f"inet {fixed}/24" in out and port.mac_address in out

        # the cloud's endpoints are reachable from the guest; nothing beyond this machine is
        reach = ssh(key, fixed, f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' http://{API_IP}:5000/v3; echo; "
                    "curl -s -m 5 -o /dev/null -w '%{http_code}' http://192.0.2.1/; echo")  # fmt: skip
        keystone, outside = reach.stdout.split()
        assert keystone == "200" and outside == "000", reach.stdout
        # the metadata service answers at its link-local address with this server's own user-data, as on a cloud
        meta = ssh(key, fixed, "curl -s -m 5 http://169.254.169.254/openstack/latest/user_data")
        assert meta.stdout == USER_DATA, meta.stdout + meta.stderr

        # Nova's stop and start really stop and start the guest
        demo.compute.stop_server(server)
        wait_for(lambda: demo.compute.get_server(server.id).status == "SHUTOFF", timeout=120)
        assert ssh(key, fixed, "true").returncode != 0
        demo.compute.start_server(server)
        wait_for(lambda: demo.compute.get_server(server.id).status == "ACTIVE", timeout=120)
        wait_for(lambda: ssh(key, fixed, "true").returncode == 0, timeout=120)

        # a guest that halts itself is seen by Nova's power-state sync
        ssh(key, fixed, "sudo systemctl poweroff", timeout=30)
        wait_for(lambda: demo.compute.get_server(server.id).status == "SHUTOFF", timeout=120, interval=2)
    finally:
        demo.compute.delete_server(server, ignore_missing=True)
        if fip is not None:
            demo.network.delete_ip(fip, ignore_missing=True)
        demo.compute.delete_keypair(keypair, ignore_missing=True)
    deadline = time.monotonic() + 60  # Nova's delete reaches the driver a moment after the API answers
    while guest_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not guest_dir.exists(), "the guest's files outlived the server"
    assert f"mg-{server.id[:8]}" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(server.id in line for line in Path("/proc/mounts").read_text().splitlines())
    assert os.path.exists(STATE / "data" / "nova" / "instances")
