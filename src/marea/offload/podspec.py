"""Turn a create request into a pod spec directory that `marea.offload.runner` can run anywhere.

Layout (mode 0700, since plan.json can hold Secret values):
    plan.json          containers in order, resolved env, mounts relative to the directory, podman flags
    pod.json           the raw pod as interLink sent it
    volumes/<name>/    one directory per volume: ConfigMap / Secret / projected files, or an empty dir

Kubernetes rules kept: ConfigMap and Secret volumes (with `items`, `defaultMode`/`mode`), projected volumes
(interLink sends them as a ConfigMap named after the volume; when it did not, configMap / secret / downwardAPI
sources are built from what arrived), emptyDir, `subPath`, `readOnly`; env `value`, `valueFrom`
(configMapKeyRef, secretKeyRef, fieldRef) and `envFrom`, and `$(VAR)` expansion in env, command and args.
Volume types a host cannot provide (PVCs, ...) are refused with a clear 422; hostPath only under the
configured `offload.security.allowed_host_paths`.

Every name that becomes a path was checked against its grammar (`marea.offload.grammar`) and every path
written or mounted is resolved and must stay inside the pod directory (a symlink planted earlier cannot lead
out); the runner checks the mount sources again when it starts each container, since an init container can
plant symlinks in an emptyDir.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from marea.offload import grammar
from marea.offload.security import SecurityPolicy, container_options, host_path, user_spec, wants_host_network
from marea.offload.wire import CreateRequest, WireError

_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: unknown references stay as written, `$$` escapes."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, value)


def _safe_rel(path: str, what: str) -> PurePosixPath:
    return PurePosixPath(grammar.relative_path(path, what))


def inside(root: Path, path: Path, what: str) -> Path:
    """`path` resolved (symlinks followed) must be `root` or below it."""
    real, top = path.resolve(), root.resolve()
    if real != top and top not in real.parents:
        raise WireError(422, f"{what}: path leads outside the pod's directory")
    return real


def _name(value: object) -> str:
    """A reference's name as a dict key: anything but a string names nothing."""
    return value if isinstance(value, str) else ""


def _mode(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
        raise WireError(422, f"{what} must be a file mode between 0 and 0777")
    return value


def object_data(obj: dict[str, Any], secret: bool) -> dict[str, bytes]:
    """Key -> bytes of a ConfigMap (data, binaryData) or Secret (data base64, stringData)."""
    out: dict[str, bytes] = {}
    name = (obj.get("metadata") or {}).get("name", "?")
    for key, value in (obj.get("data") or {}).items():
        if secret:
            try:
                out[key] = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise WireError(422, f"secret {name}: key {key} is not valid base64") from None
        else:
            out[key] = value.encode()
    for key, value in (obj.get("binaryData") or {}).items():
        try:
            out[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise WireError(422, f"configmap {name}: binaryData {key} is not valid base64") from None
    if secret:
        for key, value in (obj.get("stringData") or {}).items():
            out[key] = value.encode()
    return out


def _field(pod: dict[str, Any], path: str) -> str | None:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        v = simple[path]
        return None if v is None else str(v)
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
    if m:
        v = (meta.get(m.group(1)) or {}).get(m.group(2))
        return None if v is None else str(v)
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    return None


class PodDirWriter:
    """Writes one pod directory; the only code that knows the layout besides the runner."""

    def __init__(self, req: CreateRequest, pod_dir: Path) -> None:
        self.req = req
        self.pod = req.pod
        self.dir = pod_dir
        #: volume name -> mount source: relative to the pod directory, or an allowed host path
        self.volumes: dict[str, str] = {}
        #: the volumes that live in the pod directory (not hostPath)
        self.in_dir: set[str] = set()

    # -- volumes ---------------------------------------------------------------------------------------------
    def _write_files(self, vol: str, files: dict[str, bytes], mode: object) -> None:
        perm = _mode(mode, f"volume {vol}: defaultMode")
        base = self.dir / "volumes" / vol
        base.mkdir(parents=True, exist_ok=True)
        for rel, data in files.items():
            target = base / _safe_rel(rel, f"volume {vol}")
            try:
                inside(base, target.parent, f"volume {vol}").mkdir(parents=True, exist_ok=True)
                inside(base, target, f"volume {vol}")
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            except (NotADirectoryError, IsADirectoryError, FileExistsError):  # "a" and "a/b" in one volume
                raise WireError(422, f"volume {vol}: file paths conflict ({rel[:60]!r})") from None
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            target.chmod(perm if perm is not None else 0o644)

    def _select(self, data: dict[str, bytes], items: Any, what: str, optional: bool) -> dict[str, bytes]:
        if not items:
            return dict(data)
        out = {}
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise WireError(422, f"{what}: items must be a list of objects")
        for item in items:
            key, path = _name(item.get("key")), item.get("path") or item.get("key")
            if key not in data:
                if optional:
                    continue
                raise WireError(422, f"{what}: key {str(key)[:60]!r} is not in the data that arrived")
            out[grammar.relative_path(path, f"{what}: items path")] = data[key]
        return out

    def _source(self, kind: str, src: dict[str, Any], vol: str) -> dict[str, bytes]:
        """Files of one configMap / secret source (a volume or a projected source)."""
        name = _name(src.get("name") or src.get("secretName"))
        optional = bool(src.get("optional"))
        pool = self.req.configmaps if kind == "configMap" else self.req.secrets
        obj = pool.get(name)
        if obj is None:
            if optional:
                return {}
            raise WireError(422, f"volume {vol}: {kind} {name!r} did not arrive with the pod")
        return self._select(object_data(obj, kind == "secret"), src.get("items"), f"volume {vol}", optional)

    def _volume(self, v: dict[str, Any], policy: SecurityPolicy) -> None:
        name = grammar.dns_label(v.get("name"), "volume name")
        mode = v.get("defaultMode")
        for kind in ("configMap", "secret", "projected", "downwardAPI", "emptyDir"):
            if kind in v and not isinstance(v[kind], dict):
                raise WireError(422, f"volume {name}: {kind} must be an object")
        if "hostPath" in v:
            self.volumes[name] = host_path(v, policy, f"volume {name}")
            return
        if "emptyDir" in v:
            (self.dir / "volumes" / name).mkdir(parents=True, exist_ok=True)
            (self.dir / "volumes" / name).chmod(0o777)
        elif "configMap" in v:
            self._write_files(name, self._source("configMap", v["configMap"], name), v["configMap"].get("defaultMode"))
        elif "secret" in v:
            self._write_files(name, self._source("secret", v["secret"], name), v["secret"].get("defaultMode", 0o644))
        elif "projected" in v or "downwardAPI" in v:
            self._projected(v, mode)
        else:
            kinds = sorted(k for k in v if k != "name")
            raise WireError(422, f"volume {name}: type {', '.join(kinds) or 'unknown'} is not supported here")
        self.volumes[name] = f"volumes/{name}"
        self.in_dir.add(name)

    def _projected(self, v: dict[str, Any], mode: int | None) -> None:
        name = v["name"]
        arrived = self.req.projected.get(name) or self.req.configmaps.get(name)
        if "projected" in v and arrived is not None:
            self._write_files(name, object_data(arrived, False), v["projected"].get("defaultMode"))
            return
        files: dict[str, bytes] = {}
        sources = (v.get("projected") or {}).get("sources") or []
        if "downwardAPI" in v:
            sources = [{"downwardAPI": v["downwardAPI"]}]
        for src in sources:
            # best effort: interLink normally sends the projected volume whole, as one map (handled above)
            if "configMap" in src:
                files.update(self._source("configMap", {**src["configMap"], "optional": True}, name))
            elif "secret" in src:
                files.update(self._source("secret", {**src["secret"], "optional": True}, name))
            elif "downwardAPI" in src:
                for item in src["downwardAPI"].get("items") or []:
                    value = _field(self.pod, (item.get("fieldRef") or {}).get("fieldPath", ""))
                    if value is not None and item.get("path"):
                        files[item["path"]] = value.encode()
            # serviceAccountToken / clusterTrustBundle: only the API server can mint them; interLink sends
            # them in the projected map, and without it the file is left out.
        self._write_files(name, files, mode)

    # -- containers ------------------------------------------------------------------------------------------
    def _env(self, c: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for src in c.get("envFrom") or []:
            prefix = src.get("prefix", "")
            for kind, pool, secret in (
                ("configMapRef", self.req.configmaps, False),
                ("secretRef", self.req.secrets, True),
            ):
                ref = src.get(kind)
                if not ref:
                    continue
                obj = pool.get(_name(ref.get("name")))
                if obj is not None:
                    for k, val in object_data(obj, secret).items():
                        if grammar.ENV_NAME.fullmatch(prefix + k):  # Kubernetes skips invalid names too
                            env[prefix + k] = val.decode(errors="replace")
        for e in c.get("env") or []:
            name = grammar.env_name(e.get("name"), f"container {c['name']}: env name")
            if "valueFrom" not in e:
                env[name] = expand(str(e.get("value", "")), env)
                continue
            value = self._value_from(e["valueFrom"] or {})
            if value is not None:
                env[name] = value
        for name, value in env.items():
            if "\x00" in value:
                raise WireError(422, f"container {c['name']}: env {name[:60]} holds a NUL character")
        return env

    def _value_from(self, vf: dict[str, Any]) -> str | None:
        for kind, pool, secret in (
            ("configMapKeyRef", self.req.configmaps, False),
            ("secretKeyRef", self.req.secrets, True),
        ):
            ref = vf.get(kind)
            if ref:
                obj = pool.get(_name(ref.get("name")))
                if obj is None:
                    return None  # interLink sends only mounted objects: an unmounted reference stays unresolved
                data = object_data(obj, secret)
                key = _name(ref.get("key"))
                return data[key].decode(errors="replace") if key in data else None
        if vf.get("fieldRef"):
            return _field(self.pod, vf["fieldRef"].get("fieldPath", ""))
        return None

    def _mounts(self, c: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for m in c.get("volumeMounts") or []:
            vol = m.get("name")
            if vol not in self.volumes:
                raise WireError(422, f"container {c['name']}: volumeMount {vol!r} names no volume of the pod")
            target = grammar.container_path(m.get("mountPath"), f"container {c['name']}: mountPath")
            source = self.volumes[vol]
            host = vol not in self.in_dir
            if m.get("subPath"):
                source = f"{source}/{_safe_rel(m['subPath'], 'subPath')}"
                if not host:
                    volume_root = self.dir / self.volumes[vol]
                    full = inside(volume_root, self.dir / source, f"container {c['name']}: subPath")
                    if not full.exists():
                        full.mkdir(parents=True)
            out.append({"source": source, "target": target, "readOnly": bool(m.get("readOnly")), "host": host})
        return out

    def _container(self, c: dict[str, Any], policy: SecurityPolicy) -> dict[str, Any]:
        env = self._env(c)
        user = user_spec(self.pod, c, policy)
        return {
            "name": grammar.dns_label(c["name"], "container name"),
            "image": grammar.image(c["image"], f"container {c['name']}: image"),
            "security": container_options(self.pod, c, policy),
            "user": {"uid": user.uid, "gid": user.gid, "nonRoot": user.non_root},
            "command": [expand(x, env) for x in c["command"]] if c.get("command") else None,
            "args": [expand(x, env) for x in c["args"]] if c.get("args") else None,
            "workingDir": c.get("workingDir") or "",
            "env": env,
            "mounts": self._mounts(c),
        }

    def write(
        self,
        podman: list[str],
        run_options: list[str],
        grace_s: int,
        network: str = "none",
        policy: SecurityPolicy | None = None,
    ) -> dict[str, Any]:
        """Write the directory; `network` and `policy` are the configuration's (offload.network, .security)."""
        try:
            return self._write(podman, run_options, grace_s, network, policy or SecurityPolicy())
        except (AttributeError, TypeError) as exc:  # a field of the wrong shape deep in the pod: its fault
            raise WireError(422, f"pod spec: a field has the wrong type ({exc.__class__.__name__})") from None

    def _write(
        self, podman: list[str], run_options: list[str], grace_s: int, network: str, policy: SecurityPolicy
    ) -> dict[str, Any]:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        spec = self.pod["spec"]
        for v in spec.get("volumes") or []:
            self._volume(v, policy)
        plan = {
            "uid": grammar.uid(self.req.ref.uid, "pod uid"),
            "name": self.req.ref.name,
            "namespace": self.req.ref.namespace,
            "initContainers": [self._container(c, policy) for c in spec.get("initContainers") or []],
            "containers": [self._container(c, policy) for c in spec["containers"]],
            "podman": podman,
            "run_options": run_options,
            "network": "host" if wants_host_network(self.pod, policy) else network,
            "grace_s": grace_s,
        }
        fd = os.open(self.dir / "plan.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(plan, f)
        (self.dir / "pod.json").write_text(json.dumps(self.pod))
        for sub in ("status", "logs"):
            (self.dir / sub).mkdir(exist_ok=True)
        return plan
