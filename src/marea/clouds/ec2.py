"""The EC2 driver (boto3), for EC2-compatible clouds and for elastiq users moving to marea.

Ownership is the same as on OpenStack, carried as instance tags (`marea-cluster`, `marea-instance`), set in the
run request itself (TagSpecifications), so no instance ever exists untagged. `list_owned` filters on the tag
server-side; `delete` re-reads the instance and refuses one without this cluster's tag. The quota is the
account's `max-instances` attribute minus the instances pending or running, which is all EC2-compatible clouds
(and moto) expose without the AWS-only Service Quotas API.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from marea.clouds.base import (
    TAG_CLUSTER,
    TAG_INSTANCE,
    CloudDriver,
    CloudError,
    CloudErrorKind,
    CloudVM,
    CreateResult,
    VMSpec,
    VMStatus,
)
from marea.config import Ec2CloudSection
from marea.model import Flavour, Quota

log = logging.getLogger("marea.clouds.ec2")

_STATUS = {
    "pending": VMStatus.BUILDING,
    "running": VMStatus.ACTIVE,
    "shutting-down": VMStatus.DELETING,
    "terminated": VMStatus.DELETED,
}
_QUOTA_CODES = {"InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded"}
_CAPACITY_CODES = {"InsufficientInstanceCapacity", "InsufficientHostCapacity", "Unsupported"}
_AUTH_CODES = {"AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "SignatureDoesNotMatch"}
_THROTTLE_CODES = {"RequestLimitExceeded", "ServiceUnavailable", "InternalError", "Unavailable"}


class Ec2Cloud(CloudDriver):
    name = "ec2"

    def __init__(self, settings: Ec2CloudSection, *, client: Any = None, parallel_creates: int = 10) -> None:
        self.settings = settings
        self._secret = settings.aws_secret_access_key.get_secret_value() if settings.aws_secret_access_key else ""
        self._client = client
        self._pool = ThreadPoolExecutor(max_workers=max(1, parallel_creates), thread_name_prefix="ec2-create")

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            s = self.settings
            self._client = boto3.client(
                "ec2",
                region_name=s.region_name,
                endpoint_url=s.endpoint_url or None,
                aws_access_key_id=s.aws_access_key_id or None,
                aws_secret_access_key=self._secret or None,
            )
        return self._client

    def error(self, exc: BaseException, what: str) -> CloudError:
        from botocore import exceptions as bce

        kind = CloudErrorKind.OTHER
        if isinstance(exc, bce.ClientError):
            err = exc.response.get("Error", {})
            code, message = str(err.get("Code", "")), str(err.get("Message", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in _QUOTA_CODES:
                kind = CloudErrorKind.QUOTA
            elif code in _CAPACITY_CODES:
                kind = CloudErrorKind.NO_VALID_HOST
            elif code in _AUTH_CODES or status in (401, 403):
                kind = CloudErrorKind.AUTH
            elif code.endswith(".NotFound"):
                kind = CloudErrorKind.NOT_FOUND
            elif code in _THROTTLE_CODES or status >= 500:
                kind = CloudErrorKind.SERVER_ERROR
            text = f"{code}: {message}" if message else code
        else:
            if isinstance(exc, bce.ConnectTimeoutError | bce.ReadTimeoutError | bce.EndpointConnectionError):
                kind = CloudErrorKind.TIMEOUT
            elif isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
                kind = CloudErrorKind.AUTH
            text = str(exc)
        text = " ".join(text.split())[:300]
        if self._secret:
            text = text.replace(self._secret, "***")
        return CloudError(f"ec2 {what}: {text}", kind)

    def to_vm(self, inst: dict[str, Any]) -> CloudVM:
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        state = inst.get("State", {}).get("Name", "")
        reason = inst.get("StateReason", {}).get("Message")
        launched = inst.get("LaunchTime")
        return CloudVM(
            cloud_id=inst["InstanceId"],
            name=tags.get("Name", inst["InstanceId"]),
            status=_STATUS.get(state, VMStatus.UNKNOWN),
            tags=tags,
            address=inst.get("PrivateIpAddress"),
            fault=reason if state not in ("pending", "running") else None,
            created_at=launched.timestamp() if launched is not None else None,
        )

    def run_arguments(self, spec: VMSpec) -> dict[str, Any]:
        s = self.settings
        if not s.image_id:
            raise CloudError("ec2: cloud.ec2.image_id must be set")
        missing = [t for t in (TAG_CLUSTER, TAG_INSTANCE) if t not in spec.tags]
        if missing:
            raise CloudError(f"ec2: refusing to create an instance without ownership tags {missing}")
        tags = [{"Key": k, "Value": v} for k, v in {**spec.tags, "Name": spec.name}.items()]
        args: dict[str, Any] = {
            "ImageId": s.image_id,
            "InstanceType": spec.flavour.name,
            "MinCount": 1,
            "MaxCount": 1,
            "UserData": spec.user_data,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
        }
        if s.key_name:
            args["KeyName"] = s.key_name
        if s.subnet_id:
            args["SubnetId"] = s.subnet_id
        ids = [g for g in s.security_groups if g.startswith("sg-")]
        names = [g for g in s.security_groups if not g.startswith("sg-")]
        if ids:
            args["SecurityGroupIds"] = ids
        if names:
            args["SecurityGroups"] = names
        return args

    def create(self, spec: VMSpec) -> CloudVM:
        args = self.run_arguments(spec)
        try:
            inst = self.client.run_instances(**args)["Instances"][0]
        except Exception as exc:
            raise self.error(exc, f"create {spec.name}") from None
        log.info("created instance %s (%s) type %s", spec.name, inst["InstanceId"], spec.flavour.name)
        return self.to_vm(inst)

    def create_many(self, specs: Sequence[VMSpec]) -> list[CreateResult]:
        def one(spec: VMSpec) -> CreateResult:
            try:
                return CreateResult(spec, vm=self.create(spec))
            except CloudError as exc:
                return CreateResult(spec, error=exc)

        if specs:
            self.client  # create the client once, before the threads  # noqa: B018
        return list(self._pool.map(one, specs))

    def _describe(self, **kw: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self.client.get_paginator("describe_instances").paginate(**kw):
            for reservation in page.get("Reservations", []):
                out.extend(reservation.get("Instances", []))
        return out

    def list_owned(self, cluster: str) -> list[CloudVM]:
        try:
            found = self._describe(Filters=[{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]}])
        except Exception as exc:
            raise self.error(exc, "list instances") from None
        return [self.to_vm(i) for i in found]

    def delete(self, vm: CloudVM) -> None:
        cluster = vm.tags.get(TAG_CLUSTER)
        if not cluster:
            raise CloudError(f"ec2: refusing to delete {vm.cloud_id}: no ownership tag on the record")
        try:
            found = self._describe(InstanceIds=[vm.cloud_id])
        except Exception as exc:
            err = self.error(exc, f"read {vm.cloud_id}")
            if err.kind is CloudErrorKind.NOT_FOUND:
                return
            raise err from None
        if not found or found[0].get("State", {}).get("Name") == "terminated":
            return
        tags = {t["Key"]: t["Value"] for t in found[0].get("Tags", [])}
        if tags.get(TAG_CLUSTER) != cluster:
            raise CloudError(f"ec2: refusing to delete instance {vm.cloud_id}: it is not owned by cluster {cluster}")
        try:
            self.client.terminate_instances(InstanceIds=[vm.cloud_id])
        except Exception as exc:
            raise self.error(exc, f"delete {vm.cloud_id}") from None
        log.info("terminated instance %s (%s)", vm.name, vm.cloud_id)

    def flavours(self) -> list[Flavour]:
        try:
            pages = self.client.get_paginator("describe_instance_types").paginate()
            types = [t for page in pages for t in page.get("InstanceTypes", [])]
        except Exception as exc:
            raise self.error(exc, "list instance types") from None
        return [
            Flavour(
                t["InstanceType"],
                int(t.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
                int(t.get("MemoryInfo", {}).get("SizeInMiB", 0)),
                sum(int(g.get("Count", 0)) for g in t.get("GpuInfo", {}).get("Gpus", [])),
            )
            for t in types
        ]

    def quota(self) -> Quota:
        try:
            attrs = self.client.describe_account_attributes(AttributeNames=["max-instances"])
            running = self._describe(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
        except Exception as exc:
            raise self.error(exc, "read account limits") from None
        values = [
            v["AttributeValue"]
            for a in attrs.get("AccountAttributes", [])
            if a.get("AttributeName") == "max-instances"
            for v in a.get("AttributeValues", [])
        ]
        if not values:
            return Quota()
        return Quota(instances=max(0, int(values[0]) - len(running)))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
