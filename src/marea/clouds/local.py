"""The embedded `local` cloud: a "VM" is a process tree on this machine that runs the worker's user-data.

Why: the whole system (engine, contextualisation, batch system) must run and be tested on one machine with no
cloud. Each VM gets a directory `<base_dir>/<instance id>/` holding its metadata (with the ownership tags), its
user-data and its console log; its processes run in their own session, and, when running as root with
`netns = true`, in their own network namespace with an address on a bridge, like a VM on a private network.
The VMs outlive the engine (they are not its children in any way that matters), so a killed engine finds them
again through `list_owned`, exactly as it would on a real cloud.

User-data is run as a script: it must start with `#!` (a `#cloud-config` document is refused with a clear
error, because this driver has no cloud-init).
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from marea.clouds.base import TAG_CLUSTER, CloudDriver, CloudError, CloudErrorKind, CloudVM, VMSpec, VMStatus
from marea.model import Flavour, Quota

_META = "meta.json"
_BOOT = '"$1"; echo "marea-local: user-data exited with code $?"; exec sleep infinity'


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise CloudError(f"local network setup failed: {' '.join(cmd[:4])}: {proc.stderr.strip()[:200]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class LocalCloud(CloudDriver):
    """VMs as local process trees, optionally each in its own network namespace."""

    name = "local"

    def __init__(
        self,
        base_dir: Path,
        *,
        netns: bool = False,
        bridge_netns: str = "",
        bridge: str = "br0",
        subnet: str = "10.231.0.0/24",
        first_host: int = 100,
        max_instances: int | None = None,
    ) -> None:
        self.base_dir = base_dir
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.netns = netns
        if netns and os.geteuid() != 0:
            raise CloudError("local cloud: netns = true needs root", CloudErrorKind.AUTH)
        if netns and not bridge_netns:
            raise CloudError("local cloud: netns = true needs bridge_netns (the namespace holding the bridge)")
        self.bridge_netns = bridge_netns
        self.bridge = bridge
        self.network = ipaddress.ip_network(subnet, strict=False)
        self.first_host = first_host
        self.max_instances = max_instances

    # -- helpers ---------------------------------------------------------------------------------------------
    @contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.base_dir / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _vm_dirs(self) -> list[Path]:
        return sorted(p for p in self.base_dir.iterdir() if p.is_dir() and (p / _META).exists())

    @staticmethod
    def _read_meta(d: Path) -> dict[str, object]:
        data: dict[str, object] = json.loads((d / _META).read_text())
        return data

    def _netns_name(self, instance_id: str) -> str:
        return f"mvm-{instance_id}"

    @staticmethod
    def _veth_name(instance_id: str) -> str:
        return "mv" + hashlib.sha1(instance_id.encode()).hexdigest()[:10]

    def _free_address(self) -> str:
        used = set()
        for d in self._vm_dirs():
            addr = self._read_meta(d).get("address")
            if isinstance(addr, str):
                used.add(addr)
        hosts = list(self.network.hosts())
        for host in hosts[self.first_host - 1 :]:
            if str(host) not in used:
                return str(host)
        raise CloudError(f"local cloud: no free address left in {self.network}", CloudErrorKind.QUOTA)

    def _setup_netns(self, instance_id: str, address: str) -> str:
        ns = self._netns_name(instance_id)
        veth = self._veth_name(instance_id)
        if not Path(f"/run/netns/{ns}").exists():
            _run(["ip", "netns", "add", ns])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "link", "add", veth, "netns", self.bridge_netns, "type", "veth", "peer", "name", "eth0",
              "netns", ns])  # fmt: skip
        _run(["ip", "-n", self.bridge_netns, "link", "set", veth, "master", self.bridge, "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{address}/{self.network.prefixlen}", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        return ns

    def _vm(self, d: Path) -> CloudVM:
        meta = self._read_meta(d)
        pid = int(str(meta.get("pid", 0)))
        status = VMStatus.ACTIVE if pid and _alive(pid) else VMStatus.ERROR
        fault = None
        if status is VMStatus.ERROR:
            fault = "the VM's processes are gone (powered off)"
        tags = meta.get("tags")
        return CloudVM(
            cloud_id=str(meta["cloud_id"]),
            name=str(meta["name"]),
            status=status,
            tags=dict(tags) if isinstance(tags, dict) else {},
            address=str(meta["address"]) if meta.get("address") else None,
            fault=fault,
            created_at=float(str(meta.get("created_at", 0.0))),
        )

    # -- the interface ---------------------------------------------------------------------------------------
    def create(self, spec: VMSpec) -> CloudVM:
        if spec.user_data.lstrip().startswith("#cloud-config"):
            raise CloudError("local cloud runs user-data scripts (#!...), not #cloud-config documents")
        with self._lock():
            if self.max_instances is not None and len(self._vm_dirs()) >= self.max_instances:
                raise CloudError(f"Quota exceeded for instances: limit {self.max_instances}", CloudErrorKind.QUOTA)
            cloud_id = f"local-{spec.instance_id}"
            d = self.base_dir / spec.instance_id
            if d.exists():
                raise CloudError(f"local cloud: a VM named {spec.instance_id} already exists")
            d.mkdir(parents=True)
            address = self._free_address() if self.netns else "127.0.0.1"
            meta: dict[str, object] = {
                "cloud_id": cloud_id,
                "name": spec.name,
                "tags": spec.tags,
                "flavour": spec.flavour.name,
                "address": address,
                "created_at": time.time(),
                "pid": 0,
            }
            (d / _META).write_text(json.dumps(meta))
        user_data = d / "user-data"
        user_data.write_text(spec.user_data)
        user_data.chmod(0o700)
        # Like cloud-init: run the user-data once, log its exit code, and keep the "VM" powered on afterwards.
        cmd = ["/bin/sh", "-c", _BOOT, "marea-boot", str(user_data)]
        if self.netns:
            ns = self._setup_netns(spec.instance_id, address)
            meta["netns"] = ns
            cmd = ["nsenter", f"--net=/run/netns/{ns}", *cmd]
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(d),
            "MAREA_VM_DIR": str(d),
        }
        with open(d / "console.log", "ab") as console:
            proc = subprocess.Popen(
                cmd,
                cwd=d,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        meta["pid"] = proc.pid
        (d / _META).write_text(json.dumps(meta))
        return self._vm(d)

    def list_owned(self, cluster: str) -> list[CloudVM]:
        vms = []
        for d in self._vm_dirs():
            try:
                vm = self._vm(d)
            except (OSError, ValueError, KeyError):
                continue
            if vm.tags.get(TAG_CLUSTER) == cluster:
                vms.append(vm)
        return vms

    def delete(self, vm: CloudVM) -> None:
        d = next((p for p in self._vm_dirs() if self._read_meta(p).get("cloud_id") == vm.cloud_id), None)
        if d is None:
            return  # already gone: deleting twice is not an error
        meta = self._read_meta(d)
        pid = int(str(meta.get("pid", 0)))
        # the namespace name follows from the instance id: found even if a crash cut the create short
        ns = meta.get("netns") or (self._netns_name(d.name) if self.netns else None)
        pids = self._pids(pid, str(ns) if ns else None, d)
        self._terminate(pids)
        if ns and Path(f"/run/netns/{ns}").exists():
            subprocess.run(["ip", "netns", "del", str(ns)], capture_output=True, timeout=30)
        graveyard = self.base_dir / ".deleted"
        graveyard.mkdir(exist_ok=True)
        target = graveyard / f"{d.name}-{int(time.time() * 1000)}"
        shutil.move(str(d), target)
        (target / _META).rename(target / "meta.deleted.json")

    @staticmethod
    def _pids(pid: int, ns: str | None, vm_dir: Path) -> set[int]:
        """Every process of the VM: its session, those started in its directory (a create cut short by a
        crash may not have recorded the pid yet), and everything in its network namespace."""
        pids: set[int] = set()
        root = str(vm_dir.resolve())
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            p = int(entry.name)
            try:
                if (pid and os.getsid(p) == pid) or os.readlink(f"/proc/{p}/cwd") == root:
                    pids.add(p)
            except OSError:
                continue
        if pid and _alive(pid):
            pids.add(pid)
        if ns and Path(f"/run/netns/{ns}").exists():
            out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=30)
            pids.update(int(p) for p in out.stdout.split() if p.isdigit())
        return pids

    @staticmethod
    def _terminate(pids: set[int], grace_s: float = 5.0) -> None:
        """Power off: SIGTERM, then SIGKILL what is still there after the grace period."""
        for p in pids:
            with suppress(ProcessLookupError):
                os.kill(p, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        for p in pids:
            if _alive(p):
                with suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)

    def flavours(self) -> list[Flavour]:
        return []

    def quota(self) -> Quota:
        if self.max_instances is None:
            return Quota()
        return Quota(instances=max(0, self.max_instances - len(self._vm_dirs())))
