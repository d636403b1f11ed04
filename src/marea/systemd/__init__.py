"""The systemd units shipped in the package, and `marea systemd install|show` that puts them in place.

Why the units are files in the package and not strings in code: an admin who prefers to copy them by hand
reads them as they are (`marea systemd show`), with the comments that explain the hardening, and a test runs
`systemd-analyze verify` on exactly what is installed. The shipped files name /usr/local/bin/marea and
/etc/marea/marea.toml; installing replaces the two with this installation's marea and the chosen config.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

#: what the shipped units name, replaced when they are installed
SHIPPED_EXECUTABLE = "/usr/local/bin/marea"
SHIPPED_CONFIG = "/etc/marea/marea.toml"

#: unit name -> what it runs
UNITS: dict[str, str] = {
    "marea.service": "the elastic engine (`marea run`)",
    "marea-offload.service": "the offload server (`marea offload serve`)",
}
#: drop-in name -> (the unit it extends, why)
DROP_INS: dict[str, tuple[str, str]] = {
    "podman.conf": ("marea-offload.service", "the `local` offload backend: podman on this host"),
}


class SystemdError(Exception):
    """A unit cannot be shown or installed; the message is one line for the user."""


@dataclass(frozen=True)
class Installed:
    path: Path
    what: str


def shipped_text(name: str) -> str:
    """A unit or drop-in as shipped in the package."""
    if name not in UNITS and name not in DROP_INS:
        raise SystemdError(f"no shipped unit {name!r}: choose among {', '.join([*UNITS, *DROP_INS])}")
    return resources.files(__package__).joinpath(name).read_text()


def this_marea() -> Path:
    """The `marea` script of the running installation (its venv's bin), for ExecStart."""
    candidate = Path(sys.executable).with_name("marea")
    if candidate.exists():
        return candidate.absolute()
    argv0 = Path(sys.argv[0])
    if argv0.name == "marea" and argv0.exists():
        return argv0.absolute()
    return Path(SHIPPED_EXECUTABLE)


def render(name: str, executable: Path, config: Path) -> str:
    """The unit `name` with ExecStart running `executable` on `config` (both absolute, as systemd requires)."""
    for label, path in (("the marea executable", executable), ("the configuration", config)):
        if not path.is_absolute():
            raise SystemdError(f"{label} must be an absolute path for systemd, got {str(path)!r}")
        if any(c.isspace() or c in "\"'\\%$;" for c in str(path)):
            raise SystemdError(f"{label}: {str(path)!r} has characters systemd would interpret; use a plain path")
    return shipped_text(name).replace(SHIPPED_EXECUTABLE, str(executable)).replace(SHIPPED_CONFIG, str(config))


def install(dest: Path, executable: Path, config: Path, podman: bool = False) -> list[Installed]:
    """Write the units (and the podman drop-in when asked) under `dest`, normally /etc/systemd/system."""
    written: list[Installed] = []
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name, what in UNITS.items():
            path = dest / name
            path.write_text(render(name, executable, config))
            written.append(Installed(path, what))
        if podman:
            for name, (unit, what) in DROP_INS.items():
                path = dest / f"{unit}.d" / name
                path.parent.mkdir(exist_ok=True)
                path.write_text(shipped_text(name))
                written.append(Installed(path, what))
    except OSError as exc:
        raise SystemdError(f"cannot write the units to {dest}: {exc.strerror}") from None
    return written
