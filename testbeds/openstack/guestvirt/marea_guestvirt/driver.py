"""A Nova virt driver for marea's testbed: servers whose image is a root filesystem boot as real guests.

Test-only. A server booted from an image with `container_format=docker` (a tar of a root filesystem, as
nova-docker and Zun used the format) becomes a `systemd-nspawn --boot` container running the image's own
systemd and cloud-init; every other image (the tests' 1 KiB placeholder) stays a FakeDriver server, so the
driver and engine tests that create tens of servers cost nothing more than before.

Why nspawn and not QEMU: on this kind of machine a TCG virtual machine needs ~150 s and ~650 MB to reach the end
of cloud-init, an nspawn guest ~5 s and ~40 MiB. What marea needs from a guest is what a cloud-init image does
with user-data (packages, files, services under systemd, a network address, SSH): nspawn runs all of it for
real. What it cannot show is anything kernel-level (the guest shares the host kernel) and flavour limits (a
guest sees the host's cores and memory; Slurm and HTCondor workers are told their size by marea).

What a guest gets, as on a real cloud:
- the config drive Nova itself builds (`InstanceMetadata`: meta_data.json with hostname and SSH keys,
  user_data, network_data.json from the Neutron ports), handed to cloud-init as its ConfigDrive seed directory
  (`/var/lib/cloud/seed/config_drive`, which cloud-init reads like a mounted config-2 drive);
- one interface per Neutron port, with the port's MAC, in the guest's own network namespace, its host end on
  the testbed's Linux bridge (`MAREA_GUEST_BRIDGE`), where the host holds each subnet's gateway address;
- its own copy-on-write root: an overlay on the image, extracted once per image from Glance.
Power off asks systemd in the guest to halt (nspawn's SIGTERM handling) and waits; delete kills the guest's
whole PID namespace at once; `get_info` reads the real process, so Nova's power-state sync sees a guest that
shut itself down.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil
import signal
import subprocess
import time

from oslo_log import log as logging

from nova import exception
from nova.api.metadata import base as instance_metadata
from nova.compute import power_state
from nova.virt import fake, hardware, images

LOG = logging.getLogger(__name__)

BRIDGE = os.environ.get("MAREA_GUEST_BRIDGE", "brmarea")
SEED = "var/lib/cloud/seed/config_drive"


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip()[-500:]}")
    return result


def _is_guest_image(image_meta) -> bool:
    return getattr(image_meta, "container_format", None) == "docker"


class Guest:
    """One guest's files on the host: `<instances_path>/<uuid>/{upper,work,root,pid,console.log}`."""

    def __init__(self, uuid: str) -> None:
        self.uuid = uuid
        self.dir = os.path.join(fake.CONF.instances_path, uuid)
        self.root = os.path.join(self.dir, "root")
        self.netns = f"mg-{uuid[:8]}"
        self.pid_file = os.path.join(self.dir, "pid")
        self.log = os.path.join(self.dir, "console.log")

    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    def pid(self) -> int | None:
        """The nspawn process, only when it really is this guest's (pids get reused)."""
        try:
            pid = int(open(self.pid_file).read())
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except (OSError, ValueError):
            return None
        # nsenter execs nspawn: the process keeps the pid Popen gave
        return pid if cmdline[0].endswith(b"systemd-nspawn") and self.root.encode() in cmdline else None

    def running(self) -> bool:
        return self.pid() is not None

    def init_pid(self) -> int | None:
        """The guest's PID 1 (systemd), as seen from the host."""
        pid = self.pid()
        if pid is None:
            return None
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                children = open(f"/proc/{pid}/task/{task}/children").read().split()
            except OSError:
                continue
            for child in children:
                try:
                    if b"systemd-nspawn" not in open(f"/proc/{child}/cmdline", "rb").read():
                        return int(child)
                except OSError:
                    continue
        return None


class GuestDriver(fake.FakeDriver):
    """FakeDriver for placeholder images, real nspawn guests for root-filesystem images."""

    def init_host(self, host):
        super().init_host(host)
        os.makedirs(os.path.join(fake.CONF.instances_path, "_base"), exist_ok=True)

    # -- images ------------------------------------------------------------------------------------------------
    def _base_root(self, context, image_id: str) -> str:
        """The image's root filesystem, extracted once per host and shared read-only by its guests."""
        base = os.path.join(fake.CONF.instances_path, "_base", image_id)
        root = os.path.join(base, "root")
        if os.path.isdir(root):
            return root
        os.makedirs(base, exist_ok=True)
        with open(os.path.join(base, ".lock"), "w") as lock:  # three nova-compute processes share the cache
            fcntl.flock(lock, fcntl.LOCK_EX)
            if os.path.isdir(root):
                return root
            tar = os.path.join(base, "image.tar")
            images.fetch(context, image_id, tar)
            tmp = os.path.join(base, "root.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            _run("tar", "-C", tmp, "--numeric-owner", "--xattrs", "-xf", tar)
            os.unlink(tar)
            os.rename(tmp, root)
            LOG.info("image %s extracted for guests", image_id)
        return root

    # -- network -----------------------------------------------------------------------------------------------
    @staticmethod
    def _links(network_info) -> list[tuple[str, str, str, str]]:
        """(host-side name, guest-side name, MAC, gateway address with prefix) per port."""
        links = []
        for i, vif in enumerate(network_info or []):
            gateway = ""
            for subnet in vif["network"]["subnets"]:
                gw = (subnet.get("gateway") or {}).get("address")
                if gw and subnet.get("version", 4) == 4:
                    net = ipaddress.ip_network(subnet["cidr"])
                    gateway = f"{gw}/{net.prefixlen}"
                    break
            links.append((f"tap{vif['id'][:11]}", f"eth{i}", vif["address"], gateway))
        return links

    def _plug(self, guest: Guest, network_info) -> None:
        if not os.path.exists(f"/run/netns/{guest.netns}"):
            _run("ip", "netns", "add", guest.netns)
        _run("ip", "-n", guest.netns, "link", "set", "lo", "up")
        bridge_addrs = _run("ip", "-o", "addr", "show", "dev", BRIDGE).stdout
        for host_if, guest_if, mac, gateway in self._links(network_info):
            if gateway and f" {gateway} " not in bridge_addrs:  # the host stands in for the subnet's router
                _run("ip", "addr", "add", gateway, "dev", BRIDGE, check=False)
            _run("ip", "link", "del", host_if, check=False)
            _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", guest_if, "netns", guest.netns)
            _run("ip", "-n", guest.netns, "link", "set", guest_if, "address", mac)
            _run("ip", "link", "set", host_if, "master", BRIDGE, "up")

    def _unplug(self, guest: Guest, network_info) -> None:
        for host_if, *_ in self._links(network_info):
            _run("ip", "link", "del", host_if, check=False)
        _run("ip", "netns", "del", guest.netns, check=False)

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def _mount_root(self, guest: Guest, lower: str) -> None:
        if os.path.ismount(guest.root):
            return
        for d in ("upper", "work", "root"):
            os.makedirs(os.path.join(guest.dir, d), exist_ok=True)
        with open(os.path.join(guest.dir, "lower"), "w") as f:
            f.write(lower)
        _run("mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={lower},upperdir={guest.dir}/upper,workdir={guest.dir}/work", guest.root)

    def _write_config_drive(self, context, guest: Guest, instance, injected_files, network_info) -> None:
        md = instance_metadata.InstanceMetadata(
            instance, content=injected_files, extra_md={}, network_info=network_info
        )
        seed = os.path.join(guest.root, SEED)
        shutil.rmtree(seed, ignore_errors=True)
        os.makedirs(seed, mode=0o700)
        for path, data in md.metadata_for_config_drive():
            target = os.path.join(seed, path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(data if isinstance(data, bytes) else data.encode())

    def _start(self, guest: Guest, instance) -> None:
        # nspawn runs inside the guest's namespace (not --network-namespace-path): only then is the /sys it
        # mounts for the guest that namespace's, so cloud-init finds the port's interface by its MAC.
        log = open(guest.log, "ab")
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{guest.netns}", "systemd-nspawn", "-D", guest.root, "--boot",
             f"--machine={instance.name}", "--register=no", "--keep-unit", "--console=pipe",
             "--capability=CAP_NET_ADMIN",
             # nspawn would copy the host's resolver in (it thinks the guest shares the host's network): the
             # guest keeps its image's, as a VM does
             "--resolv-conf=off", "--timezone=off"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        with open(guest.pid_file, "w") as f:
            f.write(str(proc.pid))
        time.sleep(0.2)
        if proc.poll() is not None:
            raise exception.NovaException(f"guest did not start: {open(guest.log).read()[-300:]}")

    def spawn(self, context, instance, image_meta, injected_files, admin_password, allocations,
              network_info=None, block_device_info=None, power_on=True, accel_info=None):
        super().spawn(context, instance, image_meta, injected_files, admin_password, allocations,
                      network_info, block_device_info, power_on, accel_info)
        if not _is_guest_image(image_meta):
            return
        guest = Guest(instance.uuid)
        try:
            self._mount_root(guest, self._base_root(context, image_meta.id))
            self._write_config_drive(context, guest, instance, injected_files, network_info)
            self._plug(guest, network_info)
            if power_on:
                self._start(guest, instance)
        except Exception:
            LOG.exception("guest %s failed to boot", instance.uuid)
            self._remove(guest, network_info)
            super().destroy(context, instance, network_info)
            raise
        LOG.info("guest %s (%s) started", instance.uuid, instance.hostname)

    def _kill(self, guest: Guest) -> None:
        """Kill the guest at once: its PID 1 first (the kernel then kills the whole PID namespace)."""
        init = guest.init_pid()
        if init:
            os.kill(init, signal.SIGKILL)
        pid = guest.pid()
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.monotonic() + 10
        while guest.running() and time.monotonic() < deadline:
            time.sleep(0.1)

    def _remove(self, guest: Guest, network_info) -> None:
        if not guest.exists():
            return
        self._kill(guest)
        if os.path.ismount(guest.root):
            _run("umount", "-l", guest.root, check=False)
        self._unplug(guest, network_info)
        shutil.rmtree(guest.dir, ignore_errors=True)

    def destroy(self, context, instance, network_info, block_device_info=None, destroy_disks=True,
                destroy_secrets=True):
        self._remove(Guest(instance.uuid), network_info)
        super().destroy(context, instance, network_info, block_device_info, destroy_disks, destroy_secrets)

    def power_off(self, instance, timeout=0, retry_interval=0):
        guest = Guest(instance.uuid)
        if guest.exists():
            pid = guest.pid()
            if pid:  # nspawn turns SIGTERM into an orderly halt of the guest's systemd
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + (timeout or 60)
                while guest.running() and time.monotonic() < deadline:
                    time.sleep(0.2)
                if guest.running():
                    self._kill(guest)
        super().power_off(instance, timeout, retry_interval)

    def power_on(self, context, instance, network_info, block_device_info=None, accel_info=None,
                 share_info=None):
        guest = Guest(instance.uuid)
        if guest.exists() and not guest.running():
            self._mount_root(guest, open(os.path.join(guest.dir, "lower")).read())
            self._plug(guest, network_info)
            self._start(guest, instance)
        super().power_on(context, instance, network_info, block_device_info, accel_info, share_info)

    def reboot(self, context, instance, network_info, reboot_type, block_device_info=None,
               bad_volumes_callback=None, accel_info=None, share_info=None):
        guest = Guest(instance.uuid)
        if guest.exists():
            self.power_off(instance, timeout=30)
        super().reboot(context, instance, network_info, reboot_type, block_device_info,
                       bad_volumes_callback, accel_info, share_info)

    def get_info(self, instance, use_cache=True):
        guest = Guest(instance.uuid)
        if guest.exists():
            if instance.uuid not in self.instances:  # a guest of an earlier nova-compute process
                self.instances[instance.uuid] = fake.FakeInstance(instance.name, power_state.NOSTATE, instance.uuid)
            state = power_state.RUNNING if guest.running() else power_state.SHUTDOWN
            self.instances[instance.uuid].state = state
            return hardware.InstanceInfo(state=state)
        return super().get_info(instance, use_cache)

    def get_console_output(self, context, instance):
        guest = Guest(instance.uuid)
        if guest.exists():
            try:
                with open(guest.log, "rb") as f:
                    f.seek(max(0, os.path.getsize(guest.log) - 100_000))
                    return f.read().decode(errors="replace")
            except OSError:
                return ""
        return super().get_console_output(context, instance)
