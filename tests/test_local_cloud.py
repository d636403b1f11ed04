"""The local cloud driver with real processes (no network namespace: runs without root too)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from marea.clouds.base import TAG_CLUSTER, TAG_INSTANCE, CloudError, VMSpec, VMStatus
from marea.clouds.local import LocalCloud, _alive
from marea.model import Flavour

F = Flavour("f", 1, 100)


def _spec(iid: str, cluster: str = "c1", script: str = "#!/bin/sh\necho hello from $0\nsleep 300\n") -> VMSpec:
    return VMSpec(iid, iid, F, script, {TAG_CLUSTER: cluster, TAG_INSTANCE: iid})


def test_vm_runs_user_data_lists_as_owned_and_is_deleted_with_its_processes(tmp_path: Path) -> None:
    cloud = LocalCloud(tmp_path)
    vm = cloud.create(_spec("c1-a"))
    cloud.create(_spec("c2-b", cluster="c2"))
    assert vm.status is VMStatus.ACTIVE
    deadline = time.time() + 10
    console = tmp_path / "c1-a" / "console.log"
    while time.time() < deadline and "hello" not in console.read_text():
        time.sleep(0.1)
    assert "hello from" in console.read_text()
    owned = cloud.list_owned("c1")
    assert [v.instance_id for v in owned] == ["c1-a"]
    pid = int(__import__("json").loads((tmp_path / "c1-a" / "meta.json").read_text())["pid"])
    cloud.delete(owned[0])
    assert not _alive(pid)
    assert cloud.list_owned("c1") == []
    assert [v.instance_id for v in cloud.list_owned("c2")] == ["c2-b"]  # not ours: untouched
    cloud.delete(owned[0])  # deleting twice is fine
    cloud.delete(cloud.list_owned("c2")[0])


def test_failing_user_data_keeps_the_vm_on_like_a_cloud_and_logs_the_exit_code(tmp_path: Path) -> None:
    cloud = LocalCloud(tmp_path)
    cloud.create(_spec("c1-x", script="#!/bin/sh\nexit 3\n"))
    console = tmp_path / "c1-x" / "console.log"
    deadline = time.time() + 10
    while time.time() < deadline and "exited" not in console.read_text():
        time.sleep(0.1)
    assert "user-data exited with code 3" in console.read_text()
    (vm,) = cloud.list_owned("c1")
    assert vm.status is VMStatus.ACTIVE
    cloud.delete(vm)


def test_cloud_config_is_refused_and_quota_is_enforced(tmp_path: Path) -> None:
    cloud = LocalCloud(tmp_path, max_instances=1)
    with pytest.raises(CloudError, match="not #cloud-config"):
        cloud.create(_spec("c1-y", script="#cloud-config\nruncmd: []\n"))
    cloud.create(_spec("c1-z"))
    assert cloud.quota().instances == 0
    with pytest.raises(CloudError, match="Quota exceeded") as err:
        cloud.create(_spec("c1-w"))
    assert err.value.kind.value == "quota"
    for vm in cloud.list_owned("c1"):
        cloud.delete(vm)
