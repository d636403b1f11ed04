"""The openstack driver against the real testbed: Keystone + Nova (fake virt driver) + Neutron + Glance."""

from __future__ import annotations

import base64
import http.server
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from marea.clouds.base import TAG_CLUSTER, TAG_INSTANCE, CloudError, CloudErrorKind, CloudVM, VMSpec, VMStatus
from marea.clouds.openstack import OpenStackCloud
from marea.config import OpenStackCloudSection
from marea.model import Flavour

from .conftest import NO_HOST_FLAVOUR, OpenStackTestbed, purge, wait_for

pytestmark = pytest.mark.openstack

TINY = Flavour("m1.tiny", 1, 512)


@pytest.fixture
def driver(testbed: OpenStackTestbed) -> Iterator[OpenStackCloud]:
    d = OpenStackCloud(OpenStackCloudSection(cloud="demo", image="debian-12", network="private"))
    yield d
    d.close()


def spec(cluster: str, n: int, flavour: Flavour = TINY, user_data: str = "#!/bin/sh\necho hi\n") -> VMSpec:
    iid = f"{cluster}-w{n}"
    return VMSpec(iid, iid, flavour, user_data, {TAG_CLUSTER: cluster, TAG_INSTANCE: iid})


def test_parallel_create_sets_ownership_user_data_and_no_floating_ip(
    driver: OpenStackCloud, admin: Any, demo: Any, cluster_name: str
) -> None:
    user_data = "#cloud-config\nruncmd:\n  - [echo, joined]\n"
    results = driver.create_many([spec(cluster_name, i, user_data=user_data) for i in range(3)])
    try:
        assert [r.error for r in results] == [None, None, None]
        vms = wait_for(
            lambda: (v := driver.list_owned(cluster_name)) and all(x.status is VMStatus.ACTIVE for x in v) and v
        )
        assert sorted(v.instance_id for v in vms) == sorted(f"{cluster_name}-w{i}" for i in range(3))
        for vm in vms:
            assert vm.tags[TAG_CLUSTER] == cluster_name
            assert vm.address and vm.address.startswith("10.10.0.")
            server = admin.compute.get_server(vm.cloud_id)  # user_data is readable by an admin only
            assert base64.b64decode(server.user_data).decode() == user_data
            ports = list(demo.network.ports(device_id=vm.cloud_id))
            assert not [ip for p in ports for ip in demo.network.ips(port_id=p.id)], "a worker got a floating IP"
    finally:
        purge(demo, cluster_name)


def test_list_owned_and_delete_never_touch_a_server_marea_does_not_own(
    driver: OpenStackCloud, demo: Any, cluster_name: str
) -> None:
    image = demo.image.find_image("debian-12")
    net = demo.network.find_network("private")
    flavor = demo.compute.find_flavor("m1.tiny")
    foreign = demo.compute.create_server(
        name=f"{cluster_name}-tenant", image_id=image.id, flavor_id=flavor.id, networks=[{"uuid": net.id}]
    )
    other = demo.compute.create_server(
        name=f"{cluster_name}-other", image_id=image.id, flavor_id=flavor.id, networks=[{"uuid": net.id}],
        metadata={TAG_CLUSTER: f"{cluster_name}-x", TAG_INSTANCE: "i"},
    )  # fmt: skip
    mine = driver.create(spec(cluster_name, 0))
    try:
        assert [v.cloud_id for v in driver.list_owned(cluster_name)] == [mine.cloud_id]
        for victim in (foreign, other):
            with pytest.raises(CloudError, match="not owned"):
                driver.delete(CloudVM(victim.id, victim.name, VMStatus.ACTIVE, {TAG_CLUSTER: cluster_name}))
        driver.delete(mine)
        driver.delete(mine)  # idempotent
        wait_for(lambda: not [v for v in driver.list_owned(cluster_name) if v.status is not VMStatus.DELETED])
        assert demo.compute.get_server(foreign.id).status in ("BUILD", "ACTIVE")
        assert demo.compute.get_server(other.id).status in ("BUILD", "ACTIVE")
    finally:
        for s in (foreign, other):
            demo.compute.delete_server(s, ignore_missing=True)
        purge(demo, cluster_name)


def test_flavours_read_gpus_from_extra_specs_and_quota_is_headroom(driver: OpenStackCloud, cluster_name: str) -> None:
    flavours = {f.name: f for f in driver.flavours()}
    assert flavours["m1.medium"] == Flavour("m1.medium", 2, 4096, 0)
    assert flavours["g1.large"].gpus == 1 and flavours["g1.large"].cores == 8
    before = driver.quota()
    vm = driver.create(spec(cluster_name, 0, Flavour("m1.medium", 2, 4096)))
    try:
        assert before.instances is not None
        after = driver.quota()  # at once: the new server counts even before Nova's own usage does
        assert after.instances == before.instances - 1
        assert before.cores is not None and after.cores == before.cores - 2
        assert before.memory_mb is not None and after.memory_mb == before.memory_mb - 4096
    finally:
        driver.delete(vm)
        purge(driver.conn, cluster_name)


def demo_usage_counted(driver: OpenStackCloud) -> bool:
    """Nova's own usage counts the servers (its create-time quota check uses that figure)."""
    limits = driver.conn.compute.get_limits().absolute
    return bool(limits.instances_used >= limits.instances)


def test_quota_exceeded_is_a_quota_error(driver: OpenStackCloud, demo_quota: Any, cluster_name: str) -> None:
    used = 100 - (driver.quota().instances or 0)
    demo_quota(instances=used + 1)
    try:
        driver.create(spec(cluster_name, 0))
        assert driver.quota().instances == 0
        wait_for(lambda: demo_usage_counted(driver))
        with pytest.raises(CloudError) as info:
            driver.create(spec(cluster_name, 1))
        assert info.value.kind is CloudErrorKind.QUOTA
        assert "quota" in info.value.reason.lower()
    finally:
        purge(driver.conn, cluster_name)


def test_no_valid_host_leaves_a_server_in_error_with_its_fault(driver: OpenStackCloud, cluster_name: str) -> None:
    driver.create(spec(cluster_name, 0, Flavour(NO_HOST_FLAVOUR, 1, 512)))
    try:
        vm = wait_for(lambda: next((v for v in driver.list_owned(cluster_name) if v.status is VMStatus.ERROR), None))
        assert vm.fault is not None and "no valid host" in vm.fault.lower()
    finally:
        purge(driver.conn, cluster_name)


def test_wrong_password_is_an_auth_error_and_the_password_is_never_shown(
    testbed: OpenStackTestbed, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-pass-7f3a"
    d = OpenStackCloud(
        OpenStackCloudSection(
            auth_url="http://127.0.0.1:5000/v3", username="demo", password=SecretStr(wrong), project_name="demo"
        )
    )
    with pytest.raises(CloudError) as info:
        d.quota()
    d.close()
    assert info.value.kind is CloudErrorKind.AUTH
    assert wrong not in info.value.reason and wrong not in str(info.value)
    assert wrong not in caplog.text


class _Unavailable(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": {"message": "maintenance", "code": 503}}')

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


def test_a_5xx_from_the_cloud_is_a_server_error() -> None:
    """A real HTTP server on a socket answering 503, as a cloud in maintenance does."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        d = OpenStackCloud(
            OpenStackCloudSection(
                auth_url=f"http://127.0.0.1:{server.server_port}/v3",
                auth_type="v3applicationcredential",
                application_credential_id="id",
                application_credential_secret=SecretStr("s3cret-ac"),
            )
        )
        with pytest.raises(CloudError) as info:
            d.quota()
        d.close()
        assert info.value.kind is CloudErrorKind.SERVER_ERROR, info.value.reason
        assert "s3cret-ac" not in info.value.reason
    finally:
        server.shutdown()


def test_an_unreachable_cloud_is_a_timeout() -> None:
    d = OpenStackCloud(OpenStackCloudSection(auth_url="http://127.0.0.1:9/v3", username="u",
                                             password=SecretStr("p"), project_name="p"))  # fmt: skip
    with pytest.raises(CloudError) as info:
        d.list_owned("c")
    d.close()
    assert info.value.kind is CloudErrorKind.TIMEOUT, info.value.reason
