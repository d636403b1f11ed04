"""The alerting rules with Debian's promtool (testbeds/prometheus.sh installs it): syntax, and unit tests of
every alert firing and staying silent (tests/ops/data/marea-alerts-test.yml)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from marea.monitoring import alert_rules_path
from tests.conftest import run_cli

DATA = Path(__file__).parent / "data"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: run `bash testbeds/prometheus.sh install` (make testbeds does)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def test_promtool_check_rules() -> None:
    r = _promtool("check", "rules", str(alert_rules_path()))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 5 rules found" in r.stdout


def test_promtool_test_rules() -> None:
    r = _promtool("test", "rules", str(DATA / "marea-alerts-test.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_test_rules_can_fail(tmp_path: Path) -> None:
    """The unit tests above bite: with the failed-boots alert removed, they fail."""
    rules = alert_rules_path().read_text()
    start = rules.index("      - alert: MareaFailedBoots")
    end = rules.index("      - alert: MareaQuotaExhausted")
    (tmp_path / "rules.yml").write_text(rules[:start] + rules[end:])
    case = (DATA / "marea-alerts-test.yml").read_text()
    case = case.replace("../../../src/marea/monitoring/marea-alerts.yml", str(tmp_path / "rules.yml"))
    (tmp_path / "case.yml").write_text(case)
    r = _promtool("test", "rules", str(tmp_path / "case.yml"))
    assert r.returncode != 0 and "MareaFailedBoots" in r.stdout + r.stderr


def test_the_cli_prints_the_rules_shipped_in_the_package() -> None:
    r = run_cli("dashboards", "prometheus-rules")
    assert r.returncode == 0 and r.stdout == alert_rules_path().read_text()
