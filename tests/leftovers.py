"""Leftovers of a killed test run, removed when the next test session starts (tests/conftest.py).

Why: a run killed by SIGKILL or a CI timeout runs no teardown. The `marea run` engines its tests started (each in
its own session) go on running, and so do the local cloud's VMs in their `mvm-<instance id>` network namespaces
(they outlive their engine by design); the next run's checks (`leftover_vm_namespaces` in tests/slurm/conftest.py,
`leftover_namespaces` in tests/htcondor/test_elastic_htcondor.py, tests/htcondor/test_htcondor_demo.py) then fail
on them, and the old engines go on acting on the testbeds.

Whose they are: the tests write under pytest's numbered base directory, `.../pytest-of-<user>/pytest-<N>/`, and
the session using it keeps its pid in `pytest-<N>/.lock` (pytest removes the file when the session ends; a killed
session leaves it, naming a dead pid). A process belongs to the base directory its working directory or one of its
arguments lies in (a VM runs in its VM directory, an engine is given its config file); its owner is gone when
that lock is missing or names no live process. What is removed, and only that:

- `marea run` processes whose owner is gone (with their process group: the engine leads its own session);
- `mvm-*` namespaces holding a process whose owner is gone and none whose owner lives: every process in them is
  killed, then the namespace is deleted;
- `mvm-*` namespaces with no process at all, once older than a minute (a VM being created has an empty namespace
  for some milliseconds; an older empty one is a VM whose processes are gone: no owner is knowable, none is hurt).

Whatever has no knowable owner (a `marea demo` in its own temporary directory, a person's engine) is left alone,
and so is everything of a session still running: several sessions share this machine.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from contextlib import suppress
from pathlib import Path

from marea.clouds.local import _alive

NETNS_DIR = Path("/run/netns")
_BASETEMP = re.compile(r"^(.*/pytest-of-[^/]+/pytest-\d+)(?:/|$| )")


def basetemp_of(path: str) -> str | None:
    """The innermost pytest numbered base directory `path` lies in, if any."""
    m = _BASETEMP.match(path)
    return m.group(1) if m else None


def is_engine(argv: list[str]) -> bool:
    """`marea run ...`, however started (`python -m marea run`, the `marea` script)."""
    return any((a == "marea" or a.endswith("/marea")) and argv[i + 1 : i + 2] == ["run"] for i, a in enumerate(argv))


def owner_alive(basetemp: str) -> bool:
    try:
        pid = int(Path(basetemp, ".lock").read_text().strip())
    except (OSError, ValueError):
        return False
    return _alive(pid)


def _argv(pid: int) -> list[str]:
    with suppress(OSError):
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    return []


def process_owner(pid: int) -> str | None:
    """The base directory the process works in or names in its arguments (None: not a test's, or not knowable)."""
    with suppress(OSError):
        found = basetemp_of(os.readlink(f"/proc/{pid}/cwd"))
        if found:
            return found
    for arg in _argv(pid):
        found = basetemp_of(arg)
        if found:
            return found
    return None


def _kill(pid: int) -> None:
    with suppress(OSError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


def remove_leftovers(prefix: str = "mvm-", min_empty_age_s: float = 60.0, within: Path | None = None) -> list[str]:
    """Remove what killed runs left (see the module doc); namespaces only if named `prefix*`, engines only if their
    base directory is inside `within` when given (the test of this keeps to its own). Returns what went."""
    inside = f"{within}/" if within is not None else "/"
    gone: list[str] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        if not is_engine(_argv(pid)):
            continue
        owner = process_owner(pid)
        if owner and owner.startswith(inside) and not owner_alive(owner):
            _kill(pid)
            gone.append(f"marea run (pid {pid}) of {owner}")
    if not NETNS_DIR.is_dir():
        return gone
    for ns in sorted(p for p in NETNS_DIR.iterdir() if p.name.startswith(prefix)):
        res = subprocess.run(["ip", "netns", "pids", ns.name], capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            continue  # deleted meanwhile, or not ours to read
        pids = [int(p) for p in res.stdout.split() if p.isdigit()]
        if pids:
            owners = {o for o in map(process_owner, pids) if o}
            if not owners or any(owner_alive(o) for o in owners):
                continue
            for pid in pids:
                _kill(pid)
            why = f"its processes' owner {', '.join(sorted(owners))} is gone"
        else:
            with suppress(OSError):
                if time.time() - ns.stat().st_mtime < min_empty_age_s:
                    continue
            why = "no process in it"
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, timeout=30)
        gone.append(f"namespace {ns.name} ({why})")
    return gone
