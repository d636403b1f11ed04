"""The ec2 driver (boto3) and the elastic engine through it, against moto's EC2 served on a real socket."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import boto3
import pytest
from pydantic import SecretStr

from marea.clouds.base import TAG_CLUSTER, TAG_INSTANCE, CloudError, CloudErrorKind, CloudVM, VMSpec, VMStatus
from marea.clouds.ec2 import Ec2Cloud
from marea.clouds.factory import make_cloud
from marea.config import Ec2CloudSection, parse_config
from marea.engine.reconciler import Reconciler
from marea.engine.store import Store
from marea.model import ActionKind, Flavour
from tests.fixed_queue import FixedQueue

SMALL = Flavour("t3.small", 2, 2048)


def raw_client(s: Ec2CloudSection) -> Any:
    return boto3.client(
        "ec2", endpoint_url=s.endpoint_url, region_name=s.region_name, aws_access_key_id="x", aws_secret_access_key="y"
    )


def spec(cluster: str, n: int, user_data: str = "#!/bin/sh\necho hi\n") -> VMSpec:
    iid = f"{cluster}-w{n}"
    return VMSpec(iid, iid, SMALL, user_data, {TAG_CLUSTER: cluster, TAG_INSTANCE: iid})


def terminate_all(s: Ec2CloudSection) -> None:
    c = raw_client(s)
    ids = [i["InstanceId"] for r in c.describe_instances()["Reservations"] for i in r["Instances"]]
    if ids:
        c.terminate_instances(InstanceIds=ids)


@pytest.fixture
def settings(ec2_settings: Ec2CloudSection) -> Any:
    yield ec2_settings
    terminate_all(ec2_settings)


def test_create_many_tags_ownership_and_keeps_user_data(settings: Ec2CloudSection) -> None:
    d = Ec2Cloud(settings)
    user_data = "#cloud-config\nruncmd: [[echo, joined]]\n"
    results = d.create_many([spec("ec", i, user_data) for i in range(4)])
    assert [r.error for r in results] == [None] * 4
    vms = d.list_owned("ec")
    assert sorted(v.instance_id or "" for v in vms) == [f"ec-w{i}" for i in range(4)]
    c = raw_client(settings)
    for vm in vms:
        assert vm.tags[TAG_CLUSTER] == "ec" and vm.name == vm.instance_id
        got = c.describe_instance_attribute(InstanceId=vm.cloud_id, Attribute="userData")["UserData"]["Value"]
        assert base64.b64decode(got).decode() == user_data
        assert vm.status in (VMStatus.BUILDING, VMStatus.ACTIVE)
    d.close()


def test_foreign_instances_are_never_listed_or_deleted(settings: Ec2CloudSection) -> None:
    d = Ec2Cloud(settings)
    c = raw_client(settings)
    foreign = c.run_instances(ImageId=settings.image_id, InstanceType="t3.micro", MinCount=1, MaxCount=1)
    fid = foreign["Instances"][0]["InstanceId"]
    mine = d.create(spec("own", 0))
    assert [v.cloud_id for v in d.list_owned("own")] == [mine.cloud_id]
    with pytest.raises(CloudError, match="not owned"):
        d.delete(CloudVM(fid, "x", VMStatus.ACTIVE, {TAG_CLUSTER: "own"}))
    d.delete(mine)
    d.delete(mine)  # idempotent
    state = c.describe_instances(InstanceIds=[fid])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state in ("pending", "running")
    assert [v.status for v in d.list_owned("own")] in ([VMStatus.DELETED], [VMStatus.DELETING])
    d.close()


def test_flavours_with_gpus_and_quota_headroom(settings: Ec2CloudSection) -> None:
    d = Ec2Cloud(settings)
    flavours = {f.name: f for f in d.flavours()}
    assert flavours["t3.small"].cores == 2 and flavours["t3.small"].memory_mb == 2048
    assert flavours["g4dn.12xlarge"].gpus == 4 and flavours["t3.small"].gpus == 0
    before = d.quota().instances
    assert before is not None
    d.create(spec("q", 0))
    assert d.quota().instances == before - 1
    d.close()


def test_errors_are_mapped_and_carry_no_secret(settings: Ec2CloudSection, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    d = Ec2Cloud(settings)
    d.delete(CloudVM("i-0000000000000000a", "gone", VMStatus.ACTIVE, {TAG_CLUSTER: "e"}))  # NotFound: done
    from botocore.exceptions import ClientError

    try:
        d.client.terminate_instances(InstanceIds=["i-0000000000000000a"])
    except ClientError as exc:
        assert d.error(exc, "delete").kind is CloudErrorKind.NOT_FOUND
    else:
        raise AssertionError("moto accepted an unknown instance id")
    d.close()
    down = Ec2CloudSection(endpoint_url="http://127.0.0.1:9", aws_access_key_id="AKIA",
                           aws_secret_access_key=SecretStr("never-shown-secret"), image_id="ami-1")  # fmt: skip
    d = Ec2Cloud(down)
    d.client.meta.config.retries = {"max_attempts": 0}
    with pytest.raises(CloudError) as info:
        d.list_owned("e")
    assert info.value.kind is CloudErrorKind.TIMEOUT, info.value.reason
    assert "never-shown-secret" not in info.value.reason and "never-shown-secret" not in caplog.text


def engine(settings: Ec2CloudSection, tmp_path: Path, jobs: int, clock: list[float], **policy: Any) -> Reconciler:
    cfg = parse_config(
        {
            "cluster": {"name": "ece"},
            "policy": {"max_workers": 30, "max_parallel_boots": 30, "initial_parallel_boots": 30, **policy},
            "flavours": [{"name": "t3.small", "cores": 2, "memory_mb": 2048}],
            "cloud": {"driver": "ec2", "ec2": settings.model_dump(mode="python")},
            "worker": {"user_data": "#!/bin/sh\nslurmd -Z -N ${MAREA_NAME} --conf-server ${MAREA_VAR_CONTROLLER}\n",
                       "variables": {"controller": "10.0.0.5:6817"}},
        }
    )  # fmt: skip
    return Reconciler(
        cluster="ece",
        store=Store(f"sqlite:///{tmp_path / 'state.db'}", "ece"),
        cloud=make_cloud(cfg),
        batch=FixedQueue(jobs, 2, 1000),
        settings=cfg.policy_settings(),
        user_data_template=cfg.user_data_template(),
        variables={"MAREA_VAR_CONTROLLER": "10.0.0.5:6817"},
        clock=lambda: clock[0],
    )


def test_engine_scales_up_to_the_account_limit_with_reason_quota(settings: Ec2CloudSection, tmp_path: Path) -> None:
    """moto's account allows 20 instances (`max-instances`): 25 queued jobs boot 20 and wait on 'quota'."""
    clock = [1000.0]
    e = engine(settings, tmp_path, 25, clock)
    report = e.cycle()
    assert report.errors == []
    assert sum(a.count for a in report.plan.of_kind(ActionKind.BOOT)) == 20
    assert any("quota" in a.reason for a in report.plan.of_kind(ActionKind.WAIT))
    vms = e.cloud.list_owned("ece")
    assert len(vms) == 20 and all(v.tags[TAG_INSTANCE] == v.name for v in vms)
    c = raw_client(settings)
    ud = c.describe_instance_attribute(InstanceId=vms[0].cloud_id, Attribute="userData")["UserData"]["Value"]
    text = base64.b64decode(ud).decode()
    assert f"-N {vms[0].name} --conf-server 10.0.0.5:6817" in text
    clock[0] += 5
    again = e.cycle()
    assert again.errors == [] and again.plan.of_kind(ActionKind.BOOT) == []
    e.cloud.close()


def test_engine_deletes_a_worker_that_never_joins_and_backs_off(settings: Ec2CloudSection, tmp_path: Path) -> None:
    clock = [1000.0]
    e = engine(settings, tmp_path, 1, clock, join_timeout_s=60, backoff_base_s=300)
    assert sum(a.count for a in e.cycle().plan.of_kind(ActionKind.BOOT)) == 1
    clock[0] += 61
    report = e.cycle()
    deletes = report.plan.of_kind(ActionKind.DELETE)
    assert len(deletes) == 1 and "did not join" in deletes[0].reason
    assert e.store.get_json("failed_boots_total", 0) == 1
    assert all(v.status in (VMStatus.DELETED, VMStatus.DELETING) for v in e.cloud.list_owned("ece"))
    clock[0] += 5
    later = e.cycle()
    assert later.plan.of_kind(ActionKind.BOOT) == []
    assert any("backoff" in a.reason for a in later.plan.of_kind(ActionKind.WAIT))
    e.cloud.close()
