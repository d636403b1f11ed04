"""The Kubernetes grammars of the pod fields that become arguments, file names or paths on a host.

A pod is untrusted input: its uid becomes a directory name and a job script's argument, container names
become file names and podman container names, the image becomes podman's positional argument, volume names and
ConfigMap keys become paths. Each such field is checked here against the grammar Kubernetes itself enforces
(DNS-1123 labels and subdomains, the OCI image reference grammar of distribution/reference, ConfigMap keys,
environment variable names), so that no accepted value can start with `-`, contain `/`, `..`, a NUL or a shell
metacharacter. A value outside its grammar is a 422 naming the field. Pure: no I/O.
"""

from __future__ import annotations

import re

from marea.offload.wire_error import WireError

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DNS_LABEL = re.compile(_LABEL, re.ASCII)
DNS_SUBDOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.ASCII)
#: Kubernetes uids are UUIDs; any id of letters, digits and inner dashes is accepted (no dot, no slash)
UID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,126}[A-Za-z0-9])?", re.ASCII)
#: ConfigMap / Secret data keys (IsConfigMapKey)
CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}", re.ASCII)
#: environment variable names: Kubernetes' relaxed rule (1.30+), printable ASCII but `=`
ENV_NAME = re.compile(r"[\x20-\x3c\x3e-\x7e]{1,1024}", re.ASCII)
CAPABILITY = re.compile(r"(?:CAP_)?[A-Z_]{1,40}", re.ASCII)

# distribution/reference (the OCI image reference grammar docker, podman and containerd use)
_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE = re.compile(rf"(?P<name>{_NAME})(?::{_TAG})?(?:@{_DIGEST})?", re.ASCII)
IMAGE_NAME_MAX = 255


def _check(pattern: re.Pattern[str], value: object, what: str, rule: str, limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise WireError(422, f"{what} must be a non-empty string")
    if len(value) > limit or not pattern.fullmatch(value):
        raise WireError(422, f"{what} {_show(value)} is not {rule}")
    return value


def _show(value: str) -> str:
    """The value for an error line: short and printable (interLink shows it as the pod's message)."""
    return repr(value[:60] + ("..." if len(value) > 60 else ""))


def dns_label(value: object, what: str) -> str:
    return _check(DNS_LABEL, value, what, "a DNS-1123 label (lowercase letters, digits, '-', max 63)", 63)


def dns_subdomain(value: object, what: str) -> str:
    return _check(DNS_SUBDOMAIN, value, what, "a DNS-1123 subdomain (lowercase letters, digits, '-', '.')", 253)


def uid(value: object, what: str) -> str:
    return _check(UID, value, what, "a valid uid (letters, digits and '-', max 128)", 128)


def config_key(value: object, what: str) -> str:
    _check(CONFIG_KEY, value, what, "a valid key (letters, digits, '-', '_', '.')", 253)
    assert isinstance(value, str)
    if value in (".", ".."):
        raise WireError(422, f"{what} {value!r} is not a valid key")
    return value


def env_name(value: object, what: str) -> str:
    return _check(ENV_NAME, value, what, "a valid environment variable name (printable ASCII, no '=')", 1024)


def capability(value: object, what: str) -> str:
    """A capability name, returned without its CAP_ prefix."""
    name = _check(CAPABILITY, value, what, "a capability name", 44)
    return name.removeprefix("CAP_")


def image(value: object, what: str) -> str:
    """An image reference as podman takes it: `[domain[:port]/]path[:tag][@digest]`, never an option."""
    ref = _check(IMAGE, value, what, "an image reference ([registry/]name[:tag][@digest])", 4096)
    m = IMAGE.fullmatch(ref)
    assert m is not None
    if len(m.group("name")) > IMAGE_NAME_MAX:
        raise WireError(422, f"{what}: image name longer than {IMAGE_NAME_MAX} characters")
    return ref


def container_path(value: object, what: str, separators: bool = True) -> str:
    """An absolute path inside a container (mountPath, workingDir): no NUL, no newline, no `..`; a mountPath
    also no `:` or `,`, which podman's --volume / --mount syntax would read as more options."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise WireError(422, f"{what} must be an absolute path")
    bad = "\x00\n\r" + (":," if separators else "")
    if len(value) > 4096 or any(ch in value for ch in bad) or ".." in value.split("/"):
        raise WireError(422, f"{what} {_show(value)} is not an allowed path (no '..'{', :, ,' if separators else ''})")
    return value


def relative_path(value: object, what: str) -> str:
    """A path relative to a volume (items[].path, subPath): no absolute path, no `..`, no empty part."""
    if not isinstance(value, str) or not value:
        raise WireError(422, f"{what} must be a non-empty string")
    parts = value.split("/")
    if value.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in value or len(value) > 4096:
        raise WireError(422, f"{what}: path {_show(value)} must be relative, without '..' or empty parts")
    if any(len(p.encode()) > 255 for p in parts):  # a file name longer than any filesystem takes
        raise WireError(422, f"{what}: path {_show(value)} has a part longer than 255 bytes")
    return value
