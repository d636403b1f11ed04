"""A pod's securityContext and host access: refused unless the configuration allows it, else podman options.

Two questions, kept apart:
- may this pod run here at all? (`check_pod`, for every backend, before anything is created): `privileged`,
  added capabilities, hostNetwork / hostPID / hostIPC, hostPath volumes, `Unconfined` seccomp / AppArmor
  profiles and `Unmasked` procMount are refused with a 422 naming the field unless `[offload.security]`
  allows them (default: nothing is allowed);
- how does podman carry out what the pod asks for? (`container_options`, for the backends that run pods with
  podman): runAsUser / runAsGroup -> `--user`, supplementalGroups -> `--group-add`, capabilities.drop ->
  `--cap-drop`, allowPrivilegeEscalation: false -> `--security-opt=no-new-privileges`,
  readOnlyRootFilesystem -> `--read-only`; runAsNonRoot is checked against the user the container would
  run as (by the runner, which can inspect the image).
Container fields override the pod's, as in Kubernetes. Every option is one `--flag=value` word, so a value
can never become a second option. Pure: no I/O.
"""

from __future__ import annotations

import os.path
from dataclasses import dataclass
from typing import Any

from marea.config import OffloadSecuritySection
from marea.offload import grammar
from marea.offload.wire_error import WireError

MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class SecurityPolicy:
    allow_privileged: bool = False
    allowed_capabilities: frozenset[str] = frozenset()
    allow_host_network: bool = False
    allow_host_pid: bool = False
    allow_host_ipc: bool = False
    allowed_host_paths: tuple[str, ...] = ()
    allow_unconfined: bool = False
    allow_run_as_root: bool = True

    @classmethod
    def from_config(cls, s: OffloadSecuritySection) -> SecurityPolicy:
        return cls(
            allow_privileged=s.allow_privileged,
            allowed_capabilities=frozenset(c.removeprefix("CAP_") for c in s.allowed_capabilities),
            allow_host_network=s.allow_host_network,
            allow_host_pid=s.allow_host_pid,
            allow_host_ipc=s.allow_host_ipc,
            allowed_host_paths=tuple(os.path.normpath(p) for p in s.allowed_host_paths),
            allow_unconfined=s.allow_unconfined,
            allow_run_as_root=s.allow_run_as_root,
        )


@dataclass(frozen=True)
class UserSpec:
    """Who a container runs as: None = the image's user. `non_root`: refuse to run as uid 0."""

    uid: int | None = None
    gid: int | None = None
    non_root: bool = False


def _refuse(field: str, key: str) -> WireError:
    return WireError(422, f"{field} is not allowed by this server's configuration (offload.security.{key})")


def _obj(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WireError(422, f"{what} must be an object")
    return value


def _id(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise WireError(422, f"{what} must be an integer between 0 and {MAX_ID}")
    return value


def _flag(value: Any, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise WireError(422, f"{what} must be true or false")


def _containers(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            if isinstance(c, dict):
                out.append((f"pod.spec.{kind}[{i}]", c))
    return out


def _profiles(sc: dict[str, Any], where: str, policy: SecurityPolicy) -> None:
    for key in ("seccompProfile", "appArmorProfile"):
        prof = _obj(sc.get(key), f"{where}.{key}")
        kind = prof.get("type")
        if kind in (None, "RuntimeDefault"):
            continue
        if kind == "Unconfined":
            if not policy.allow_unconfined:
                raise _refuse(f"{where}.{key}.type Unconfined", "allow_unconfined")
            continue
        raise WireError(422, f"{where}.{key}.type {str(kind)[:40]!r} is not supported here (RuntimeDefault)")
    if sc.get("procMount") not in (None, "Default"):
        if sc.get("procMount") != "Unmasked":
            raise WireError(422, f"{where}.procMount must be Default or Unmasked")
        if not policy.allow_unconfined:
            raise _refuse(f"{where}.procMount Unmasked", "allow_unconfined")


def check_pod(pod: dict[str, Any], policy: SecurityPolicy) -> None:
    """Refuse (422, naming the field) what the configuration does not allow; check the types of the rest."""
    spec = _obj(pod.get("spec"), "pod.spec")
    for key, allowed, conf in (
        ("hostNetwork", policy.allow_host_network, "allow_host_network"),
        ("hostPID", policy.allow_host_pid, "allow_host_pid"),
        ("hostIPC", policy.allow_host_ipc, "allow_host_ipc"),
    ):
        if _flag(spec.get(key), f"pod.spec.{key}") and not allowed:
            raise _refuse(f"pod.spec.{key}", conf)
    psc = _obj(spec.get("securityContext"), "pod.spec.securityContext")
    for key in ("runAsUser", "runAsGroup", "fsGroup"):
        _id(psc.get(key), f"pod.spec.securityContext.{key}")
    _flag(psc.get("runAsNonRoot"), "pod.spec.securityContext.runAsNonRoot")
    groups = psc.get("supplementalGroups") or []
    if not isinstance(groups, list):
        raise WireError(422, "pod.spec.securityContext.supplementalGroups must be a list of integers")
    for g in groups:
        _id(g, "pod.spec.securityContext.supplementalGroups[]")
    if psc.get("sysctls"):
        raise WireError(422, "pod.spec.securityContext.sysctls are not supported here")
    _profiles(psc, "pod.spec.securityContext", policy)
    for where, c in _containers(spec):
        sc = _obj(c.get("securityContext"), f"{where}.securityContext")
        where = f"{where}.securityContext"
        privileged = _flag(sc.get("privileged"), f"{where}.privileged")
        if privileged and not policy.allow_privileged:
            raise _refuse(f"{where}.privileged", "allow_privileged")
        escalation = _flag(sc.get("allowPrivilegeEscalation"), f"{where}.allowPrivilegeEscalation")
        if privileged and escalation is False:
            raise WireError(422, f"{where}: allowPrivilegeEscalation false contradicts privileged true")
        caps = _obj(sc.get("capabilities"), f"{where}.capabilities")
        for key in ("add", "drop"):
            items = caps.get(key) or []
            if not isinstance(items, list):
                raise WireError(422, f"{where}.capabilities.{key} must be a list")
            for j, cap in enumerate(items):
                name = grammar.capability(cap, f"{where}.capabilities.{key}[{j}]")
                if (
                    key == "add"
                    and name not in policy.allowed_capabilities
                    and "ALL" not in policy.allowed_capabilities
                ):
                    raise _refuse(f"{where}.capabilities.add {name}", "allowed_capabilities")
        for key in ("runAsUser", "runAsGroup"):
            _id(sc.get(key), f"{where}.{key}")
        _flag(sc.get("runAsNonRoot"), f"{where}.runAsNonRoot")
        _flag(sc.get("readOnlyRootFilesystem"), f"{where}.readOnlyRootFilesystem")
        _profiles(sc, where, policy)
        user = user_spec(pod, c, policy)
        if user.uid == 0 and not policy.allow_run_as_root:
            raise _refuse(f"{where}.runAsUser 0 (root)", "allow_run_as_root")
        if user.non_root and user.uid == 0:
            raise WireError(422, f"{where}: runAsNonRoot is true but runAsUser is 0")
    for i, v in enumerate(spec.get("volumes") or []):
        if isinstance(v, dict) and "hostPath" in v:
            host_path(v, policy, f"pod.spec.volumes[{i}]")


def host_path(volume: dict[str, Any], policy: SecurityPolicy, what: str) -> str:
    """The host directory of an allowed hostPath volume (normalised, inside an allowed root), else a 422."""
    path = _obj(volume.get("hostPath"), f"{what}.hostPath").get("path")
    if not isinstance(path, str) or not path.startswith("/") or any(ch in path for ch in ":,\x00\n"):
        raise WireError(422, f"{what}.hostPath.path must be an absolute path without ':' or ','")
    norm = os.path.normpath(path)
    for root in policy.allowed_host_paths:
        if norm == root or norm.startswith(root.rstrip("/") + "/"):
            return norm
    raise _refuse(f"{what}.hostPath {norm[:80]}", "allowed_host_paths")


def user_spec(pod: dict[str, Any], c: dict[str, Any], policy: SecurityPolicy) -> UserSpec:
    """Who the container runs as: the container's fields over the pod's; non-root is also forced by the
    configuration (`allow_run_as_root = false`)."""
    psc = (pod.get("spec") or {}).get("securityContext") or {}
    sc = c.get("securityContext") or {}

    def pick(key: str) -> Any:
        return sc.get(key) if sc.get(key) is not None else psc.get(key)

    non_root = bool(pick("runAsNonRoot")) or not policy.allow_run_as_root
    return UserSpec(uid=pick("runAsUser"), gid=pick("runAsGroup"), non_root=non_root)


def container_options(pod: dict[str, Any], c: dict[str, Any], policy: SecurityPolicy) -> list[str]:
    """podman create options for what the pod and container security contexts ask (already checked)."""
    spec = pod.get("spec") or {}
    psc = spec.get("securityContext") or {}
    sc = c.get("securityContext") or {}
    opts: list[str] = []
    if sc.get("privileged") and policy.allow_privileged:
        opts.append("--privileged")
    caps = sc.get("capabilities") or {}
    opts += [f"--cap-drop={grammar.capability(x, 'capability')}" for x in caps.get("drop") or []]
    opts += [f"--cap-add={grammar.capability(x, 'capability')}" for x in caps.get("add") or []]
    if sc.get("allowPrivilegeEscalation") is False:
        opts.append("--security-opt=no-new-privileges")
    if sc.get("readOnlyRootFilesystem"):
        opts.append("--read-only")
    opts += [f"--group-add={int(g)}" for g in psc.get("supplementalGroups") or []]
    if spec.get("hostPID") and policy.allow_host_pid:
        opts.append("--pid=host")
    if spec.get("hostIPC") and policy.allow_host_ipc:
        opts.append("--ipc=host")
    for key, opt in (("seccompProfile", "seccomp=unconfined"), ("appArmorProfile", "apparmor=unconfined")):
        prof = sc.get(key) or psc.get(key) or {}
        if prof.get("type") == "Unconfined" and policy.allow_unconfined:
            opts.append(f"--security-opt={opt}")
    if (sc.get("procMount") or psc.get("procMount")) == "Unmasked" and policy.allow_unconfined:
        opts.append("--security-opt=unmask=ALL")
    return opts


def wants_host_network(pod: dict[str, Any], policy: SecurityPolicy) -> bool:
    return bool((pod.get("spec") or {}).get("hostNetwork")) and policy.allow_host_network
