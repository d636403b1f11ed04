"""The shipped systemd units, checked by systemd itself: `systemd-analyze verify` (Debian 12's systemd 252) on
the files `marea systemd install` writes, and `systemd-analyze security --offline` for their exposure.

No systemd runs as PID 1 on the test machine, so the units are verified and scored, not started.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from marea.systemd import DROP_INS, UNITS
from tests.conftest import run_cli

ANALYZE = shutil.which("systemd-analyze")

#: highest exposure `systemd-analyze security` may give each unit (0 = fully sandboxed, 10 = not at all);
#: the engine runs as root (the batch system trusts root to drain nodes), the offload server as `marea`
MAX_EXPOSURE = {"marea.service": 2.5, "marea-offload.service": 2.0}


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None, "systemd-analyze is missing: apt-get install systemd"
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("units")
    config = dest / "marea.toml"
    config.write_text('[cluster]\nname = "unit"\n')
    res = run_cli("systemd", "install", "--dest", str(dest), "--config", str(config))
    assert res.returncode == 0, res.stderr
    for name in UNITS:
        assert f"wrote {dest / name}" in res.stdout
    return dest


@pytest.mark.parametrize("name", sorted(UNITS))
def test_installed_unit_passes_systemd_analyze_verify(installed: Path, name: str) -> None:
    unit = installed / name
    text = unit.read_text()
    exec_start = re.search(r"^ExecStart=(\S+) ", text, re.M)
    assert exec_start is not None and Path(exec_start.group(1)).is_file()  # this installation's marea
    assert f"-c {installed / 'marea.toml'}" in text
    res = analyze("verify", str(unit))
    # verify exits 0 on an unknown or misspelt directive, and only warns: any output is a failure here
    assert res.returncode == 0 and res.stdout == res.stderr == "", res.stdout + res.stderr


def test_verify_catches_a_misspelt_directive(installed: Path, tmp_path: Path) -> None:
    """The check above can fail: the same unit with one directive misspelt is reported."""
    broken = tmp_path / "marea.service"
    broken.write_text((installed / "marea.service").read_text().replace("ProtectSystem=", "ProtectSytem="))
    res = analyze("verify", str(broken))
    assert "ProtectSytem" in res.stderr


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_exposure_is_low(installed: Path, name: str) -> None:
    res = analyze("security", "--offline=true", "--no-pager", str(installed / name))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
    assert m is not None, res.stdout + res.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE[name], res.stdout
    text = (installed / name).read_text()
    for directive in ("NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=\n"):
        assert directive in text


def test_podman_drop_in_verifies_and_gives_podman_root(tmp_path: Path) -> None:
    """`--podman` adds the drop-in; systemd reads it (it sits in the unit's .d directory) and finds it valid."""
    config = tmp_path / "marea.toml"
    config.write_text("")
    res = run_cli("systemd", "install", "--dest", str(tmp_path), "--config", str(config), "--podman")
    assert res.returncode == 0, res.stderr
    for name, (unit, _why) in DROP_INS.items():
        assert (tmp_path / f"{unit}.d" / name).is_file()
    unit = tmp_path / "marea-offload.service"
    res = analyze("verify", str(unit))
    assert res.returncode == 0 and res.stdout == res.stderr == "", res.stdout + res.stderr
    score = analyze("security", "--offline=true", "--no-pager", str(unit)).stdout
    assert "Service runs as root user" in score  # the drop-in was applied
    assert re.search(r"CapabilityBoundingSet=~CAP_SYS_ADMIN\s+Service has administrator privileges", score)
    assert re.search(r"CapabilityBoundingSet=~CAP_SYS_MODULE\s+Service cannot load kernel modules", score)


def test_show_and_bad_names(tmp_path: Path) -> None:
    res = run_cli("systemd", "show", "marea.service", "-c", "/etc/marea/other.toml")
    assert res.returncode == 0 and "run -c /etc/marea/other.toml" in res.stdout
    res = run_cli("systemd", "show", "nginx.service")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "marea-offload.service" in res.stderr
    res = run_cli("systemd", "install", "--dest", str(tmp_path), "--config", "/etc/marea/a b.toml")
    assert res.returncode == 2 and "plain path" in res.stderr
