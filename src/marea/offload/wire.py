"""interLink 0.6 wire format: check the requests, keep the raw pod, build the answers.

The pod stays the dict interLink sent (never a lossy model): backends pass every field on, and the Kubernetes
backend copies the spec as it came. Here we only check what marea relies on (metadata.uid, names, the
container list) and turn anything else into a short, human-readable WireError, because interLink shows a
non-200 body as the pod's message.

Wire names are those of interLink's Go types (`PodUID`, `PodJID`, `Opts.Tail` ...), not the snake_case of the
Python plugin SDK's OpenAPI file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from marea.offload import grammar
from marea.offload.wire_error import WireError as WireError

#: interLink's unset time.Time
ZERO_TIME = "0001-01-01T00:00:00Z"
#: nesting a create request may have: a v1.Pod is about 10 deep; the limit keeps every later recursive walk
#: (deepcopy, json.dumps) far from Python's recursion limit, so a deep document is a 422, never a 500
MAX_DEPTH = 64


@dataclass(frozen=True)
class PodRef:
    """The identity of a pod as marea indexes it."""

    uid: str
    name: str
    namespace: str


@dataclass
class CreateRequest:
    """One `InterlinkRetrievedPodData`: the raw pod plus the ConfigMaps, Secrets, projected maps it mounts."""

    ref: PodRef
    pod: dict[str, Any]
    configmaps: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    projected: dict[str, dict[str, Any]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogRequest:
    ref: PodRef
    container: str
    tail: int = 0
    limit_bytes: int = 0
    timestamps: bool = False
    follow: bool = False
    previous: bool = False
    since_seconds: int = 0
    since_time: datetime | None = None


def load_json(body: bytes) -> Any:
    """orjson first (/status parses one full pod per call); the stdlib for what orjson refuses."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    if not body.strip():
        raise WireError(400, "empty request body: expected JSON")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise WireError(400, f"malformed JSON: {str(exc)[:120]}") from None


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WireError(422, f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _str(value: Any, what: str, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise WireError(422, f"{what} must be a non-empty string")
    return value


def pod_ref(pod: Any, what: str = "pod") -> PodRef:
    """Check the parts of a v1.Pod marea relies on; the pod itself is kept as it came."""
    pod = _obj(pod, what)
    meta = _obj(pod.get("metadata"), f"{what}.metadata")
    uid = _str(meta.get("uid"), f"{what}.metadata.uid")
    name = _str(meta.get("name"), f"{what}.metadata.name")
    namespace = _str(meta.get("namespace", "default"), f"{what}.metadata.namespace")
    grammar.uid(uid, f"{what}.metadata.uid")
    grammar.dns_subdomain(name, f"{what}.metadata.name")
    grammar.dns_label(namespace, f"{what}.metadata.namespace")
    return PodRef(uid=uid, name=name, namespace=namespace)


def check_depth(doc: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse documents nested deeper than `limit` (iteratively: the check itself cannot overflow)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise WireError(422, f"request nested deeper than {limit} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))


def _no_nul(values: list[str], what: str) -> None:
    if any("\x00" in v for v in values):
        raise WireError(422, f"{what} must not contain a NUL character")


def check_spec(pod: dict[str, Any]) -> None:
    """A pod to run needs a spec with at least one named container with an image."""
    spec = _obj(pod.get("spec"), "pod.spec")
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise WireError(422, "pod.spec.containers must be a non-empty list")
    seen: set[str] = set()
    for kind in ("initContainers", "containers"):
        items = spec.get(kind) or []
        if not isinstance(items, list):
            raise WireError(422, f"pod.spec.{kind} must be a list")
        for i, c in enumerate(items):
            where = f"pod.spec.{kind}[{i}]"
            c = _obj(c, where)
            name = grammar.dns_label(c.get("name"), f"{where}.name")
            grammar.image(c.get("image"), f"{where}.image")
            if name in seen:
                raise WireError(422, f"container name {name!r} is used twice")
            seen.add(name)
            for key in ("command", "args"):
                v = c.get(key)
                if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                    raise WireError(422, f"{where}.{key} must be a list of strings")
                _no_nul(v or [], f"{where}.{key}")
            if c.get("workingDir"):
                grammar.container_path(c["workingDir"], f"{where}.workingDir", separators=False)
            env = c.get("env")
            if env is not None and not (isinstance(env, list) and all(isinstance(e, dict) for e in env)):
                raise WireError(422, f"{where}.env must be a list of objects")
            for j, e in enumerate(env or []):
                grammar.env_name(e.get("name"), f"{where}.env[{j}].name")
                value = e.get("value")
                if value is not None and not isinstance(value, str):
                    raise WireError(422, f"{where}.env[{j}].value must be a string")
                _no_nul([value or ""], f"{where}.env[{j}].value")
            env_from = c.get("envFrom")
            if env_from is not None and not (isinstance(env_from, list) and all(isinstance(e, dict) for e in env_from)):
                raise WireError(422, f"{where}.envFrom must be a list of objects")
            for j, e in enumerate(env_from or []):
                if e.get("prefix"):
                    grammar.env_name(e["prefix"], f"{where}.envFrom[{j}].prefix")
            mounts = c.get("volumeMounts")
            if mounts is not None and not (isinstance(mounts, list) and all(isinstance(m, dict) for m in mounts)):
                raise WireError(422, f"{where}.volumeMounts must be a list of objects")
            for j, m in enumerate(mounts or []):
                grammar.container_path(m.get("mountPath"), f"{where}.volumeMounts[{j}].mountPath")
                if m.get("subPath"):
                    grammar.relative_path(m["subPath"], f"{where}.volumeMounts[{j}].subPath")
    vols = spec.get("volumes") or []
    if not isinstance(vols, list) or not all(isinstance(v, dict) for v in vols):
        raise WireError(422, "pod.spec.volumes must be a list of objects with a name")
    for i, v in enumerate(vols):
        grammar.dns_label(v.get("name"), f"pod.spec.volumes[{i}].name")
        check_volume_files(v, f"pod.spec.volumes[{i}]")


def _mode(value: Any, what: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777):
        raise WireError(422, f"{what} must be a file mode between 0 and 0777")


def _items(source: Any, what: str) -> None:
    """defaultMode and items (key -> relative path, mode) of a configMap / secret / downwardAPI source."""
    if not isinstance(source, dict):
        raise WireError(422, f"{what} must be an object")
    _mode(source.get("defaultMode"), f"{what}.defaultMode")
    items = source.get("items") or []
    if not isinstance(items, list) or not all(isinstance(it, dict) for it in items):
        raise WireError(422, f"{what}.items must be a list of objects")
    for j, it in enumerate(items):
        grammar.relative_path(it.get("path") or it.get("key"), f"{what}.items[{j}].path")
        _mode(it.get("mode"), f"{what}.items[{j}].mode")


def check_volume_files(v: dict[str, Any], what: str) -> None:
    """The file names and modes a volume asks for, for every backend (the remote API server would refuse
    them too, but never reached is better than refused there)."""
    for kind in ("configMap", "secret", "downwardAPI"):
        if kind in v:
            _items(v[kind], f"{what}.{kind}")
    if "projected" in v:
        proj = v["projected"]
        if not isinstance(proj, dict):
            raise WireError(422, f"{what}.projected must be an object")
        _mode(proj.get("defaultMode"), f"{what}.projected.defaultMode")
        sources = proj.get("sources") or []
        if not isinstance(sources, list) or not all(isinstance(x, dict) for x in sources):
            raise WireError(422, f"{what}.projected.sources must be a list of objects")
        for j, src in enumerate(sources):
            for kind in ("configMap", "secret", "downwardAPI"):
                if kind in src:
                    _items(src[kind], f"{what}.projected.sources[{j}].{kind}")


def _named_objects(items: Any, what: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if items is None:
        return out
    if not isinstance(items, list):
        raise WireError(422, f"{what} must be a list")
    for i, obj in enumerate(items):
        obj = _obj(obj, f"{what}[{i}]")
        meta = _obj(obj.get("metadata") or {}, f"{what}[{i}].metadata")
        name = grammar.dns_subdomain(meta.get("name"), f"{what}[{i}].metadata.name")
        for key in ("data", "stringData", "binaryData"):
            data = obj.get(key)
            if data is not None and not (isinstance(data, dict) and all(isinstance(v, str) for v in data.values())):
                raise WireError(422, f"{what}[{i}].{key} must map keys to strings")
            for k in data or {}:
                grammar.config_key(k, f"{what}[{i}].{key} key")
        out[name] = obj
    return out


def parse_create(body: bytes) -> list[CreateRequest]:
    """One InterlinkRetrievedPodData (0.5+) or a list of them (0.4.x)."""
    doc = load_json(body)
    check_depth(doc)
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        raise WireError(422, "create request holds no pod")
    out = []
    for i, item in enumerate(items):
        what = f"request[{i}]" if isinstance(doc, list) else "request"
        item = _obj(item, what)
        if "pod" not in item:
            raise WireError(422, f"{what}.pod is missing")
        ref = pod_ref(item["pod"])
        check_spec(item["pod"])
        req = CreateRequest(ref=ref, pod=item["pod"], raw=item)
        conts = item.get("container")
        if conts is not None and not isinstance(conts, list):
            raise WireError(422, f"{what}.container must be a list")
        for j, c in enumerate(conts or []):
            c = _obj(c, f"{what}.container[{j}]")
            req.configmaps.update(_named_objects(c.get("configMaps"), f"{what}.container[{j}].configMaps"))
            req.secrets.update(_named_objects(c.get("secrets"), f"{what}.container[{j}].secrets"))
            req.projected.update(
                _named_objects(c.get("projectedvolumemaps"), f"{what}.container[{j}].projectedvolumemaps")
            )
        out.append(req)
    return out


def parse_pod_list(body: bytes) -> list[tuple[PodRef, dict[str, Any]]]:
    """The /status body: a JSON array of v1.Pod (null and [] are the ping)."""
    doc = load_json(body)
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise WireError(422, "status request must be a JSON array of pods")
    return [(pod_ref(p, f"pods[{i}]"), p) for i, p in enumerate(doc)]


def parse_pod(body: bytes) -> PodRef:
    """The /delete body: one v1.Pod (a one-element list is accepted too)."""
    doc = load_json(body)
    if isinstance(doc, list) and len(doc) == 1:
        doc = doc[0]
    return pod_ref(doc)


def _int(opts: dict[str, Any], key: str) -> int:
    v = opts.get(key, 0)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise WireError(422, f"Opts.{key} must be a non-negative integer")
    return v


def _bool(opts: dict[str, Any], key: str) -> bool:
    v = opts.get(key, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise WireError(422, f"Opts.{key} must be true or false")
    return v


def parse_time(value: str) -> datetime | None:
    """RFC 3339 as Go writes it (nanoseconds allowed); the zero time means unset."""
    if not value or value.startswith("0001-01-01"):
        return None
    s = value.strip().replace("Z", "+00:00")
    if "." in s:
        head, rest = s.split(".", 1)
        digits = "".join(ch for ch in rest if ch.isdigit())
        tz = rest[len(digits) :]
        s = f"{head}.{digits[:6]}{tz}"
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        raise WireError(422, f"not an RFC 3339 time: {value[:40]!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def parse_logs(body: bytes) -> LogRequest:
    doc = _obj(load_json(body), "log request")
    uid = grammar.uid(doc.get("PodUID"), "PodUID")
    name = _str(doc.get("PodName"), "PodName", required=False)
    ns = _str(doc.get("Namespace"), "Namespace", required=False)
    container = _str(doc.get("ContainerName"), "ContainerName")
    opts = _obj(doc.get("Opts") or {}, "Opts")
    since = opts.get("SinceTime")
    if since is not None and not isinstance(since, str):
        raise WireError(422, "Opts.SinceTime must be an RFC 3339 string")
    return LogRequest(
        ref=PodRef(uid=uid, name=name, namespace=ns),
        container=container,
        tail=_int(opts, "Tail"),
        limit_bytes=_int(opts, "Bytes"),
        timestamps=_bool(opts, "Timestamps"),
        follow=_bool(opts, "Follow"),
        previous=_bool(opts, "Previous"),
        since_seconds=_int(opts, "SinceSeconds"),
        since_time=parse_time(since or ""),
    )


def pod_status(ref: PodRef, jid: str, containers: list[dict[str, Any]], init: list[dict[str, Any]]) -> bytes:
    """One InterlinkPodStatus, serialised once per refresh and served from the cache."""
    doc = {
        "name": ref.name,
        "UID": ref.uid,
        "namespace": ref.namespace,
        "JID": jid,
        "containers": containers,
        "initContainers": init,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def container_names(pod: dict[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(init, app) lists of (name, image) from a pod spec, tolerant of missing parts."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    assert isinstance(spec, dict)

    def pick(key: str) -> list[tuple[str, str]]:
        items = spec.get(key)
        if not isinstance(items, list):
            return []
        return [(str(c.get("name", "")), str(c.get("image", ""))) for c in items if isinstance(c, dict)]

    return pick("initContainers"), pick("containers")
