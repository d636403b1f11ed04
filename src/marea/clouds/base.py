"""The small interface every cloud driver implements: create, delete, list owned, flavours, quota.

Drivers carry out; they never decide. Ownership is explicit: every VM marea creates carries the metadata
`marea-cluster` and `marea-instance`, and `list_owned` returns only VMs whose `marea-cluster` matches, so a
restarted engine adopts what it owns and never touches what it does not (elastiq matched VMs by IP address).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from marea.model import Flavour, Quota

if TYPE_CHECKING:
    from marea.clouds.retry import RetryEvent

TAG_CLUSTER = "marea-cluster"
TAG_INSTANCE = "marea-instance"
TAG_FLAVOUR = "marea-flavour"
TAG_GROUP = "marea-group"


class VMStatus(enum.StrEnum):
    BUILDING = "building"
    ACTIVE = "active"
    ERROR = "error"
    DELETING = "deleting"
    DELETED = "deleted"
    UNKNOWN = "unknown"


class CloudErrorKind(enum.StrEnum):
    QUOTA = "quota"
    NO_VALID_HOST = "no_valid_host"
    ERROR_STATE = "error_state"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"
    NOT_FOUND = "not_found"
    AUTH = "auth"
    OTHER = "other"


class CloudError(Exception):
    """A cloud call failed. `reason` is short, human-readable and free of secrets; the engine shows it."""

    def __init__(self, reason: str, kind: CloudErrorKind = CloudErrorKind.OTHER) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


@dataclass(frozen=True, slots=True)
class VMSpec:
    """What to boot. `tags` must include the ownership tags; `user_data` is already rendered."""

    instance_id: str
    name: str
    flavour: Flavour
    user_data: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CloudVM:
    cloud_id: str
    name: str
    status: VMStatus
    tags: dict[str, str] = field(default_factory=dict)
    address: str | None = None
    fault: str | None = None
    created_at: float | None = None

    @property
    def instance_id(self) -> str | None:
        return self.tags.get(TAG_INSTANCE)


@dataclass(frozen=True, slots=True)
class CreateResult:
    spec: VMSpec
    vm: CloudVM | None = None
    error: CloudError | None = None


class CloudDriver(abc.ABC):
    """One cloud project. Implementations must be safe to call again after a crash (idempotent delete)."""

    name: str = "abstract"

    @abc.abstractmethod
    def create(self, spec: VMSpec) -> CloudVM:
        """Start one VM; raise CloudError on failure."""

    def create_many(self, specs: Sequence[VMSpec]) -> list[CreateResult]:
        """Start several VMs; drivers with a slow API override this to create in parallel."""
        results = []
        for spec in specs:
            try:
                results.append(CreateResult(spec, vm=self.create(spec)))
            except CloudError as exc:
                results.append(CreateResult(spec, error=exc))
        return results

    @abc.abstractmethod
    def delete(self, vm: CloudVM) -> None:
        """Delete a VM this driver listed as owned; deleting one already gone is not an error."""

    @abc.abstractmethod
    def list_owned(self, cluster: str) -> list[CloudVM]:
        """Every VM carrying `marea-cluster = cluster`, in any status."""

    def flavours(self) -> list[Flavour]:
        """The flavours the cloud offers (empty when the driver cannot tell)."""
        return []

    def quota(self) -> Quota:
        """Headroom left in the project (instances, cores, RAM): what may still be booted."""
        return Quota()

    def take_retries(self) -> list[RetryEvent]:
        """Calls retried after transient errors since the last call (clouds/retry.py); the engine logs them."""
        return []

    def close(self) -> None:
        """Release connections and threads."""
