"""The daemon's credentials: an application credential made by the demo user on the testbed's real Keystone,
used by the OpenStack driver for everything the engine does (flavours, quota, create, list, delete)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from marea.clouds.base import TAG_CLUSTER, TAG_INSTANCE, CloudError, CloudErrorKind, VMSpec
from marea.clouds.openstack import OpenStackCloud
from marea.config import OpenStackCloudSection
from marea.model import Flavour

from .conftest import OpenStackTestbed, purge, wait_for

pytestmark = pytest.mark.openstack


def test_the_driver_runs_on_an_application_credential_of_the_demo_user(
    testbed: OpenStackTestbed, demo: Any, caplog: pytest.LogCaptureFixture
) -> None:
    auth_url = yaml.safe_load(testbed.clouds_yaml.read_text())["clouds"]["demo"]["auth"]["auth_url"]
    cluster = f"ac{uuid.uuid4().hex[:6]}"
    cred = demo.identity.create_application_credential(user=demo.current_user_id, name=f"marea-{cluster}")
    caplog.set_level(logging.DEBUG)  # from here on: the SDK logs the creation's answer, secret included
    section = OpenStackCloudSection(
        auth_url=auth_url,
        auth_type="v3applicationcredential",
        application_credential_id=cred.id,
        application_credential_secret=SecretStr(cred.secret),
        image="debian-12",
        network="private",
    )
    driver = OpenStackCloud(section)
    try:
        assert "m1.small" in {f.name for f in driver.flavours()}
        assert driver.quota().instances is not None
        iid = f"{cluster}-1"
        vm = driver.create(VMSpec(iid, iid, Flavour("m1.small", 1, 2048), "#!/bin/sh\ntrue\n",
                                  {TAG_CLUSTER: cluster, TAG_INSTANCE: iid}))  # fmt: skip
        listed = wait_for(lambda: driver.list_owned(cluster), timeout=60)
        assert [v.cloud_id for v in listed] == [vm.cloud_id]
        driver.delete(listed[0])
        wait_for(lambda: not driver.list_owned(cluster), timeout=60)

        # a wrong secret: an auth error that names no secret, in its text or in the logs
        bad = OpenStackCloud(section.model_copy(update={"application_credential_secret": SecretStr("wrong-s3cret")}))
        with pytest.raises(CloudError) as info:
            bad.list_owned(cluster)
        bad.close()
        assert info.value.kind is CloudErrorKind.AUTH, info.value.reason
        for text in (info.value.reason, caplog.text):
            assert cred.secret not in text and "wrong-s3cret" not in text
    finally:
        driver.close()
        purge(demo, cluster)
        demo.identity.delete_application_credential(demo.current_user_id, cred.id)
