"""SSH to a cluster's master: `marea cluster ssh`, and the engine's status read from `marea cluster status`.

The master is reached only through its floating IP (workers have none). Host keys are pinned on first use in a
known_hosts file of the cluster's own, never the user's ~/.ssh/known_hosts: floating IPs are reused by the next
cluster of the project, whose new host key would otherwise look like an attack (destroy deletes the file).
Commands go to ssh as separate argv items after `--`, never through a local shell; ssh joins them with spaces
for the remote shell, as ssh always does.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marea.clouds.base import CloudError, VMStatus

if TYPE_CHECKING:
    from marea.cluster.config import ClusterFile
    from marea.cluster.maker import ClusterMaker, ClusterStatus

#: the login user of the common cloud images, by Glance's `os_distro` (their cloud-init default user)
DISTRO_USERS = {
    "debian": "debian",
    "ubuntu": "ubuntu",
    "centos": "centos",
    "rocky": "rocky",
    "almalinux": "almalinux",
    "fedora": "fedora",
}
#: where cloud-init installs marea and its configuration on the master (see cloudinit.py)
ENGINE_STATUS = ("/opt/marea/bin/marea", "status", "-c", "/etc/marea/marea.toml", "--json")
CONNECT_TIMEOUT_S = 10


class SshError(Exception):
    """The master cannot be reached over SSH; the message is one line for the user (exit 1)."""


def login_user(configured: str, properties: Mapping[str, Any]) -> str:
    """Who logs in: the configured user, else the image's `os_admin_user`, else its distro's user, else root.

    Cloud images refuse root logins and create one user named after the distribution; Glance's
    `os_admin_user` (a standard image property) says so explicitly when the image's maker set it.
    """
    if configured.strip():
        return configured.strip()
    admin = str(properties.get("os_admin_user") or "").strip()
    if admin:
        return admin
    distro = str(properties.get("os_distro") or "").strip().lower()
    return DISTRO_USERS.get(distro, "root")


def state_dir() -> Path:
    """marea's per-user state directory ($XDG_STATE_HOME/marea, ~/.local/state/marea by default)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / "marea"


def known_hosts_file(cluster: str) -> Path:
    """The cluster's own known_hosts (cluster names are `[a-z][a-z0-9-]*`, safe as a file name)."""
    return state_dir() / "known_hosts" / cluster


def forget_host_keys(cluster: str) -> bool:
    """Delete the cluster's known_hosts (its master is gone; the floating IP may serve another master next)."""
    try:
        known_hosts_file(cluster).unlink()
    except FileNotFoundError:
        return False
    return True


def ssh_command(host: str, user: str, key_file: str, known_hosts: Path | str, command: Sequence[str]) -> list[str]:
    """The ssh argument vector: an interactive login when `command` is empty, else a batch-mode run of it.

    BatchMode only with a command: a script must fail rather than wait for a password prompt, while an
    interactive user may still type a key passphrase.
    """
    if not host or host.startswith("-"):
        raise ValueError(f"not a host address: {host!r}")
    known = str(known_hosts).replace("%", "%%")  # ssh expands %-tokens in this option
    if any(c.isspace() for c in known):  # ... and reads a list of files in it: quote one with a blank
        known = f'"{known}"'
    argv = [
        "ssh",
        "-o", "StrictHostKeyChecking=accept-new",
        "-o", f"UserKnownHostsFile={known}",
        "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
    ]  # fmt: skip
    if command:
        argv += ["-o", "BatchMode=yes"]
    if key_file:
        argv += ["-i", str(Path(key_file).expanduser())]
    argv += ["-l", user, host]
    if command:
        argv += ["--", *command]
    return argv


def engine_status_command(user: str) -> list[str]:
    """The engine's `marea status --json` on the master; its config is root's (0600), so through sudo.

    `sudo -n`: fail at once instead of waiting for a password nobody can type in batch mode.
    """
    return list(ENGINE_STATUS) if user == "root" else ["sudo", "-n", *ENGINE_STATUS]


@dataclass(frozen=True)
class Target:
    """How to reach one master."""

    host: str
    user: str
    key_file: str
    known_hosts: Path

    def argv(self, command: Sequence[str] = ()) -> list[str]:
        return ssh_command(self.host, self.user, self.key_file, self.known_hosts, command)


def image_properties(maker: ClusterMaker, image_id: str | None) -> dict[str, Any]:
    """The Glance properties of the master's image that name its login user ({} when it has no image)."""
    if not image_id:
        return {}
    image = maker._call("read the master's image", maker.conn.image.get_image, image_id)
    props = dict(getattr(image, "properties", None) or {})
    for key in ("os_admin_user", "os_distro"):  # attributes of openstacksdk's Image, not in `properties`
        value = getattr(image, key, None)
        if value:
            props[key] = value
    return props


def master_target(maker: ClusterMaker, status: ClusterStatus | None = None) -> Target:
    """The master's floating IP, login user, key and known_hosts; SshError when there is nothing to reach."""
    st = status if status is not None else maker.status()
    if st.master is None:
        raise SshError(f"cluster {maker.name} has no master")
    if not st.floating_ip:
        raise SshError(f"cluster {maker.name}: the master has no floating IP")
    try:
        ipaddress.ip_address(st.floating_ip)
    except ValueError:
        raise SshError(f"cluster {maker.name}: floating IP {st.floating_ip!r} is not an address") from None
    section = maker.cf.master
    user = section.ssh_user.strip()
    if not user:
        try:
            user = login_user("", image_properties(maker, st.master_image))
        except CloudError as exc:
            raise SshError(f"cannot guess the master's login user ({exc.reason}): set master.ssh_user") from None
    known_hosts = known_hosts_file(maker.name)
    known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Target(st.floating_ip, user, section.ssh_key_file, known_hosts)


def _maker(maker_or_cf: ClusterMaker | ClusterFile) -> ClusterMaker:
    from marea.cluster.maker import ClusterMaker

    return maker_or_cf if isinstance(maker_or_cf, ClusterMaker) else ClusterMaker(maker_or_cf)


def run_on_master(
    maker_or_cf: ClusterMaker | ClusterFile,
    command: Sequence[str],
    timeout: float,
    *,
    status: ClusterStatus | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `command` on the master in batch mode and capture its output (for code and tests, not for users).

    Raises SshError when the master cannot be found or ssh cannot start or times out, CloudError when the cloud
    cannot be read; a command that ran returns its exit code (255: ssh itself failed, as ssh defines it).
    """
    if not command:
        raise ValueError("run_on_master needs a command")
    return run_on(master_target(_maker(maker_or_cf), status), command, timeout)


def run_on(target: Target, command: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`command` run through ssh on `target`, output captured, no stdin (see run_on_master)."""
    try:
        return subprocess.run(
            target.argv(command), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise SshError("ssh is not installed (the OpenSSH client is needed)") from None
    except subprocess.TimeoutExpired:
        raise SshError(f"ssh to {target.user}@{target.host} did not finish within {timeout:g} s") from None


def last_line(text: str, limit: int = 200) -> str:
    """The last non-empty line of a program's stderr, shortened: the part that says what went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[-1] if lines else "no message"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def engine_status(
    maker: ClusterMaker, status: ClusterStatus, timeout: float = 30.0
) -> tuple[dict[str, Any] | None, str | None]:
    """The master engine's `marea status --json`, or None and one line saying why it could not be read."""
    if status.master is None:
        return None, "no master"
    if status.master.status is not VMStatus.ACTIVE:  # no sshd to wait ConnectTimeout for
        return None, f"the master is {status.master.status.value}"
    try:
        target = master_target(maker, status)
        proc = run_on(target, engine_status_command(target.user), timeout)
    except (SshError, CloudError) as exc:
        return None, exc.reason if isinstance(exc, CloudError) else str(exc)
    if proc.returncode == 255:
        return None, f"ssh to {target.user}@{target.host} failed: {last_line(proc.stderr)}"
    if proc.returncode != 0:
        return None, f"the engine's status failed (exit {proc.returncode}): {last_line(proc.stderr)}"
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return None, "the engine's status is not JSON"
    if not isinstance(report, dict):
        return None, "the engine's status is not a JSON object"
    return report, None
