"""The native OpenStack driver (openstacksdk): create, delete, list owned, flavours, quota.

Why these choices:
- Ownership lives in the server's metadata (`marea-cluster`, `marea-instance`). Nova cannot filter a list by
  metadata, so `list_owned` filters client-side, and `delete` re-reads the server and refuses one that does not
  carry the same cluster tag: a wrong id handed in by a bug can never delete a tenant's own server.
- Creates run in a thread pool: one Nova create is a few hundred ms of API round trips, and a scale-up of tens
  of workers should not be serial.
- Every SDK error becomes a `CloudError` with a kind the engine backs off on (quota, NoValidHost, ERROR state,
  timeout, 5xx) and a reason that is scrubbed of every secret this driver knows.
- Quota is the project's real headroom from the compute limits API (max minus used), so the policy never
  asks for a VM the project cannot hold.
- Idempotent calls (list, limits, find, delete) are retried after transient errors with tenacity
  (clouds/retry.py); a create never is: its record stays `requested` and the next listing decides.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
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
from marea.clouds.retry import RetryEvent, RetryLog, with_retries
from marea.config import OpenStackCloudSection
from marea.model import Flavour, Quota

log = logging.getLogger("marea.clouds.openstack")

_STATUS = {
    "ACTIVE": VMStatus.ACTIVE,
    "BUILD": VMStatus.BUILDING,
    "REBUILD": VMStatus.BUILDING,
    "ERROR": VMStatus.ERROR,
    "DELETED": VMStatus.DELETED,
    "SOFT_DELETED": VMStatus.DELETED,
}


def connection_options(s: OpenStackCloudSection) -> dict[str, Any]:
    """The keyword arguments for `openstack.connect`, from marea's config.

    `cloud` alone selects an entry of clouds.yaml; explicit settings (auth_url and an auth type) are used as
    they are and may override a named cloud. The returned dict holds secrets: never log it.
    """
    opts: dict[str, Any] = {}
    if s.cloud:
        opts["cloud"] = s.cloud
    if s.region_name:
        opts["region_name"] = s.region_name
    if not s.auth_url:
        if not s.cloud:
            raise CloudError("openstack: set either cloud (a clouds.yaml entry) or auth_url", CloudErrorKind.AUTH)
        return opts
    auth_type = s.auth_type or ("v3applicationcredential" if s.application_credential_id else "password")
    auth: dict[str, Any] = {"auth_url": s.auth_url}
    missing: list[str] = []
    if auth_type == "password":
        if not s.username:
            missing.append("username")
        if s.password is None:
            missing.append("password")
        auth.update(
            username=s.username,
            password=s.password.get_secret_value() if s.password else "",
            project_name=s.project_name,
            user_domain_name=s.user_domain_name,
            project_domain_name=s.project_domain_name,
        )
    elif auth_type == "v3applicationcredential":
        if not s.application_credential_id:
            missing.append("application_credential_id")
        if s.application_credential_secret is None:
            missing.append("application_credential_secret")
        secret = s.application_credential_secret
        auth.update(
            application_credential_id=s.application_credential_id,
            application_credential_secret=secret.get_secret_value() if secret else "",
        )
    else:  # v3oidcaccesstoken: a token obtained from the identity provider (e.g. INDIGO IAM) by the admin
        if not s.identity_provider:
            missing.append("identity_provider")
        if s.access_token is None:
            missing.append("access_token")
        auth.update(
            identity_provider=s.identity_provider,
            protocol=s.protocol,
            access_token=s.access_token.get_secret_value() if s.access_token else "",
        )
        if s.project_name:
            auth.update(project_name=s.project_name, project_domain_name=s.project_domain_name)
    if missing:
        raise CloudError(f"openstack: auth_type {auth_type} needs {', '.join(missing)}", CloudErrorKind.AUTH)
    opts.update(auth_type=auth_type, auth=auth)
    return opts


def secrets_of(s: OpenStackCloudSection) -> list[str]:
    """Every secret value in the section, for scrubbing error text."""
    return [v.get_secret_value() for v in (s.password, s.application_credential_secret, s.access_token) if v]


def gpus_from_extra_specs(specs: dict[str, str]) -> int:
    """GPUs a flavour grants, from the extra specs clouds use for them.

    `resources:VGPU` (vGPUs through Placement), `resources:CUSTOM_*GPU*` (a custom resource class, e.g.
    CUSTOM_NVIDIA_A100_GPU) and `pci_passthrough:alias` ("a100:2" or "a100:1,t4:1"; every alias counts as a
    GPU, since on research clouds passthrough is used for GPUs).
    """
    total = 0
    for key, value in specs.items():
        upper = key.upper()
        if upper == "RESOURCES:VGPU" or (upper.startswith("RESOURCES:CUSTOM_") and "GPU" in upper):
            total += _int(value)
        elif key == "pci_passthrough:alias":
            for part in str(value).split(","):
                _, _, count = part.partition(":")
                total += _int(count or "1")
    return total


def _int(value: Any) -> int:
    try:
        return max(0, int(str(value).strip()))
    except ValueError:
        return 0


def _headroom(limit: Any, used: Any) -> int | None:
    if limit is None or int(limit) < 0:
        return None
    return max(0, int(limit) - int(used or 0))


class OpenStackCloud(CloudDriver):
    """One OpenStack project, reached through openstacksdk."""

    name = "openstack"

    def __init__(self, settings: OpenStackCloudSection, *, connection: Any = None, parallel_creates: int = 10) -> None:
        self.settings = settings
        self._secrets = secrets_of(settings)
        self._conn = connection
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, str], str] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, parallel_creates), thread_name_prefix="os-create")
        self.retries = RetryLog()

    # -- plumbing --------------------------------------------------------------------------------------------
    @property
    def conn(self) -> Any:
        with self._lock:
            if self._conn is None:
                import openstack

                try:
                    self._conn = openstack.connect(**connection_options(self.settings))
                except CloudError:
                    raise
                except Exception as exc:
                    raise self.error(exc, "connect") from None
            return self._conn

    def take_retries(self) -> list[RetryEvent]:
        return self.retries.drain()

    def _retry(self, what: str, fn: Any) -> Any:
        """`fn()` with SDK errors mapped to CloudError, retried after transient ones."""

        def call() -> Any:
            try:
                return fn()
            except CloudError:
                raise
            except Exception as exc:
                raise self.error(exc, what) from None

        return with_retries(call, what, self.retries)

    def add_secrets(self, values: Sequence[str]) -> None:
        """More values to scrub from error text (join secrets made by the cluster maker)."""
        self._secrets.extend(v for v in values if v)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def error(self, exc: BaseException, what: str) -> CloudError:
        """Map an SDK or transport exception to a CloudError with a kind and a secret-free reason."""
        from keystoneauth1 import exceptions as ks

        from openstack import exceptions as sdk

        status = getattr(exc, "status_code", None) or getattr(exc, "http_status", None)
        detail = getattr(exc, "details", None) or getattr(exc, "message", None) or str(exc)
        text = " ".join(str(detail).split())[:300]
        lower = text.lower()
        kind = CloudErrorKind.OTHER
        if status == 413 or "quota" in lower:
            kind = CloudErrorKind.QUOTA
        elif "no valid host" in lower:
            kind = CloudErrorKind.NO_VALID_HOST
        elif isinstance(exc, ks.AuthorizationFailure | ks.Unauthorized) or status in (401, 403):
            kind = CloudErrorKind.AUTH
        elif status == 404 or isinstance(exc, sdk.NotFoundException | sdk.ResourceNotFound):
            kind = CloudErrorKind.NOT_FOUND
        elif isinstance(exc, ks.ConnectionError | ks.RetriableConnectionFailure | sdk.ResourceTimeout | TimeoutError):
            kind = CloudErrorKind.TIMEOUT
        elif status is not None and int(status) >= 500:
            kind = CloudErrorKind.SERVER_ERROR
        code = f" (HTTP {status})" if status else ""
        return CloudError(self.scrub(f"openstack {what}: {text}{code}"), kind)

    def _resolve(self, kind: str, ref: str) -> str:
        """The id of an image / network / flavour named or identified by `ref`, cached."""
        key = (kind, ref)
        with self._lock:
            if key in self._ids:
                return self._ids[key]
        finder = {
            "image": self.conn.image.find_image,
            "network": self.conn.network.find_network,
            "flavour": self.conn.compute.find_flavor,
        }[kind]
        found = self._retry(f"find {kind} {ref!r}", lambda: finder(ref, ignore_missing=True))
        if found is None:
            raise CloudError(f"openstack: {kind} {ref!r} not found in the project", CloudErrorKind.NOT_FOUND)
        with self._lock:
            self._ids[key] = found.id
        return str(found.id)

    def to_vm(self, server: Any) -> CloudVM:
        status = _STATUS.get(str(server.status or "").upper(), VMStatus.UNKNOWN)
        if getattr(server, "task_state", None) == "deleting" and status is not VMStatus.DELETED:
            status = VMStatus.DELETING
        fault = None
        if server.fault:
            fault = self.scrub(str(server.fault.get("message") or server.fault))
        address = None
        for entries in (server.addresses or {}).values():
            for entry in entries:
                if entry.get("OS-EXT-IPS:type", "fixed") == "fixed":
                    address = entry.get("addr")
                    break
            if address:
                break
        created = None
        if server.created_at:
            try:
                created = datetime.fromisoformat(str(server.created_at).replace("Z", "+00:00")).timestamp()
            except ValueError:
                created = None
        return CloudVM(
            cloud_id=server.id,
            name=server.name,
            status=status,
            tags=dict(server.metadata or {}),
            address=address,
            fault=fault,
            created_at=created,
        )

    # -- the interface ---------------------------------------------------------------------------------------
    def server_arguments(self, spec: VMSpec) -> dict[str, Any]:
        """The Nova create request for one worker (no floating IP: workers never get one)."""
        s = self.settings
        if not s.image or not s.network:
            raise CloudError("openstack: cloud.openstack.image and cloud.openstack.network must be set")
        missing = [t for t in (TAG_CLUSTER, TAG_INSTANCE) if t not in spec.tags]
        if missing:
            raise CloudError(f"openstack: refusing to create a server without ownership tags {missing}")
        args: dict[str, Any] = {
            "name": spec.name,
            "flavor_id": self._resolve("flavour", spec.flavour.name),
            "image_id": self._resolve("image", s.image),
            "networks": [{"uuid": self._resolve("network", s.network)}],
            "metadata": dict(spec.tags),
            "user_data": base64.b64encode(spec.user_data.encode()).decode(),
        }
        if s.security_groups:
            args["security_groups"] = [{"name": g} for g in s.security_groups]
        if s.key_name:
            args["key_name"] = s.key_name
        return args

    def create(self, spec: VMSpec) -> CloudVM:
        args = self.server_arguments(spec)
        try:
            server = self.conn.compute.create_server(**args)
        except Exception as exc:
            raise self.error(exc, f"create {spec.name}") from None
        log.info("created server %s (%s) flavour %s", spec.name, server.id, spec.flavour.name)
        return CloudVM(server.id, spec.name, VMStatus.BUILDING, dict(spec.tags))

    def create_many(self, specs: Sequence[VMSpec]) -> list[CreateResult]:
        def one(spec: VMSpec) -> CreateResult:
            try:
                return CreateResult(spec, vm=self.create(spec))
            except CloudError as exc:
                return CreateResult(spec, error=exc)

        if specs and self.settings.image and self.settings.network:
            # Connect and look up the ids once, before the threads: openstacksdk's lookups are not safe to
            # race (under load some concurrent find_network calls came back empty).
            try:
                self._resolve("image", self.settings.image)
                self._resolve("network", self.settings.network)
                for name in sorted({s.flavour.name for s in specs}):
                    self._resolve("flavour", name)
            except CloudError as exc:
                return [CreateResult(spec, error=exc) for spec in specs]
        return list(self._pool.map(one, specs))

    def list_owned(self, cluster: str) -> list[CloudVM]:
        servers = self._retry("list servers", lambda: list(self.conn.compute.servers(details=True)))
        return [self.to_vm(s) for s in servers if (s.metadata or {}).get(TAG_CLUSTER) == cluster]

    def delete(self, vm: CloudVM) -> None:
        cluster = vm.tags.get(TAG_CLUSTER)
        if not cluster:
            raise CloudError(f"openstack: refusing to delete {vm.cloud_id}: no ownership tag on the record")
        server = self._retry(
            f"read {vm.cloud_id}", lambda: self.conn.compute.find_server(vm.cloud_id, ignore_missing=True)
        )
        if server is None:
            return
        owner = (server.metadata or {}).get(TAG_CLUSTER)
        if owner != cluster:
            raise CloudError(
                f"openstack: refusing to delete server {vm.cloud_id}: it is not owned by cluster {cluster}",
                CloudErrorKind.OTHER,
            )
        self._retry(f"delete {vm.cloud_id}", lambda: self.conn.compute.delete_server(server, ignore_missing=True))
        log.info("deleted server %s (%s)", vm.name, vm.cloud_id)

    def flavours(self) -> list[Flavour]:
        flavors = self._retry(
            "list flavours", lambda: list(self.conn.compute.flavors(details=True, get_extra_specs=True))
        )
        return [
            Flavour(f.name, int(f.vcpus), int(f.ram), gpus_from_extra_specs(dict(f.extra_specs or {}))) for f in flavors
        ]

    def quota(self) -> Quota:
        """Headroom = the limits API's maxima minus usage.

        Nova's own usage figures lag a create by a few seconds (they count once the conductor wrote the
        instance), while the server list shows a new server at once; the larger of the two is used, so a
        cycle right after a scale-up does not see room that is already taken and trip over 403s.
        """
        limits = self._retry("read limits", lambda: self.conn.compute.get_limits().absolute)
        servers = [
            srv
            for srv in self._retry("list servers", lambda: list(self.conn.compute.servers(details=True)))
            if str(srv.status or "").upper() not in ("DELETED", "SOFT_DELETED")
        ]
        listed_cores = sum(int(getattr(srv.flavor, "vcpus", 0) or 0) for srv in servers)
        listed_ram = sum(int(getattr(srv.flavor, "ram", 0) or 0) for srv in servers)
        return Quota(
            instances=_headroom(limits.instances, max(int(limits.instances_used or 0), len(servers))),
            cores=_headroom(limits.total_cores, max(int(limits.total_cores_used or 0), listed_cores)),
            memory_mb=_headroom(limits.total_ram, max(int(limits.total_ram_used or 0), listed_ram)),
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
