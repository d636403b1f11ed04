"""Configuration: validation errors name the file and key and exit 2; elastiq.conf converts with comments."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from marea.config import load_config
from tests.conftest import DATA, run_cli

GOOD = """
[cluster]
name = "t1"
[policy]
min_workers = 1
max_workers = 3
[[flavours]]
name = "m1.small"
cores = 2
memory_mb = 2000
"""


def test_good_config_checks_ok(tmp_path: Path) -> None:
    f = tmp_path / "marea.toml"
    f.write_text(GOOD)
    proc = run_cli("config", "check", str(f))
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout and "1-3 workers" in proc.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD + "\n[engine]\nintervall_s = 3\n", "engine.intervall_s: unknown key"),
        (GOOD.replace("max_workers = 3", 'max_workers = "three"'), "policy.max_workers"),
        (GOOD.replace("max_workers = 3", "max_workers = 0"), "min_workers (1) is greater than max_workers (0)"),
        (GOOD.replace("cores = 2", "cores = 0"), "flavours.0.cores"),
        ("[cluster\nname=1", "not valid TOML"),
        (GOOD + '\n[cloud]\ndriver = "azure"\n', "cloud.driver"),
    ],
)
def test_bad_config_exits_2_with_one_line_naming_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    proc = run_cli("config", "check", str(f))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert str(f) in lines[0] and expected in lines[0], lines[0]


def test_missing_file_exits_2(tmp_path: Path) -> None:
    proc = run_cli("config", "check", str(tmp_path / "nope.toml"))
    assert proc.returncode == 2
    assert "nope.toml: file not found" in proc.stderr


def test_run_with_bad_config_exits_2(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[policy]\nmin_workers = -1\n")
    proc = run_cli("run", "-c", str(f))
    assert proc.returncode == 2 and "policy.min_workers" in proc.stderr


def test_secrets_are_not_in_validation_errors(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text('[cloud.ec2]\naws_secret_access_key = "hunter2-secret"\nbogus = 1\n')
    proc = run_cli("config", "check", str(f))
    assert proc.returncode == 2 and "hunter2" not in proc.stderr + proc.stdout
    cfg_file = tmp_path / "ok.toml"
    cfg_file.write_text('[cloud.ec2]\naws_secret_access_key = "hunter2-secret"\n')
    assert "hunter2" not in repr(load_config(cfg_file))


def test_import_elastiq_converts_the_cloudveneto_config(tmp_path: Path) -> None:
    proc = run_cli("config", "import-elastiq", str(DATA / "elastiq-cloudveneto.conf"))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    doc = tomllib.loads(text)
    assert doc["policy"]["min_workers"] == 2 and doc["policy"]["max_workers"] == 100
    assert doc["policy"]["idle_threshold_s"] == 600 and doc["policy"]["join_timeout_s"] == 420
    assert doc["flavours"][0]["name"] == "cldareapd.large" and doc["flavours"][0]["cores"] == 4
    assert doc["batch"]["system"] == "htcondor"
    assert doc["cloud"]["ec2"]["image_id"] == "ami-be72cea8"
    assert doc["cloud"]["ec2"]["aws_secret_access_key"] == "s3cr3t-DO-NOT-LOG"  # carried over, in the file only
    assert doc["worker"]["user_data"] == "#!/bin/bash\necho joining condor\n"
    for key in ("check_queue_every_s", "waiting_jobs_time_s", "n_jobs_per_vm", "check_vms_every_s", "[elastiqa]"):
        assert key in text, f"no comment about {key}"
    assert "s3cr3t" not in proc.stderr
    out = tmp_path / "marea.toml"
    out.write_text(text)
    assert run_cli("config", "check", str(out)).returncode == 0


def test_import_elastiq_rejects_bad_values_without_leaking_secrets(tmp_path: Path) -> None:
    conf = (DATA / "elastiq-cloudveneto.conf").read_text().replace("n_jobs_per_vm = 4", "n_jobs_per_vm = four")
    f = tmp_path / "elastiq.conf"
    f.write_text(conf)
    proc = run_cli("config", "import-elastiq", str(f))
    assert proc.returncode == 2 and "n_jobs_per_vm" in proc.stderr and "s3cr3t" not in proc.stderr
    f.write_text("not an ini file at all\n")
    proc = run_cli("config", "import-elastiq", str(f))
    assert proc.returncode == 2 and "not a valid elastiq.conf" in proc.stderr
