"""The HTCondor worker user-data as the engine renders it, and an imported htcondor elastiq.conf."""

from __future__ import annotations

import re
import string
import subprocess
from pathlib import Path

from marea.templates import worker_template

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjb25kb3JAY29uZG9yLnRlc3QifQ.c2lnbmF0dXJl"
ENGINE = {
    "MAREA_NAME": "hc-1a2b3c",
    "MAREA_INSTANCE_ID": "hc-1a2b3c",
    "MAREA_CORES": "4",
    "MAREA_MEMORY_MB": "8000",
    "MAREA_GPUS": "0",
    "MAREA_CONDOR_HOST": "10.0.0.5",
    "MAREA_CONDOR_IDTOKEN": TOKEN,
}


def render(extra: dict[str, str] | None = None) -> str:
    return string.Template(worker_template("htcondor-worker.sh")).safe_substitute({**ENGINE, **(extra or {})})


def test_rendered_for_a_cloud_image_is_valid_shell_and_carries_the_slot_size_and_name() -> None:
    text = render()
    assert subprocess.run(["sh", "-n"], input=text, text=True).returncode == 0
    assert "NUM_CPUS = 4" in text and "MEMORY = 8000" in text
    assert "NAME='hc-1a2b3c'" in text and "COLLECTOR='10.0.0.5'" in text
    assert "STARTD_ATTRS = \\$(STARTD_ATTRS) MareaWorker" in text  # escaped in the heredoc
    # optional placeholders left unfilled stay single-quoted literals, never shell expansions under set -u
    assert "ROOTFS='${MAREA_VAR_CONDOR_ROOTFS}'" in text


def test_the_token_is_written_once_to_a_root_only_file_and_never_echoed() -> None:
    text = render()
    lines = [line for line in text.splitlines() if TOKEN in line]
    assert len(lines) == 1 and "umask 077" in lines[0] and "tokens.d/marea.token" in lines[0]
    assert not re.search(r"^\s*set\s+-[a-z]*x", text, re.M)


def test_rendered_for_the_local_test_cloud_is_valid_shell() -> None:
    text = render({"MAREA_VAR_CONDOR_ROOTFS": "/var/lib/marea-htcondor/rootfs", "MAREA_VAR_CONDOR_INCLUDE": "/x"})
    assert subprocess.run(["sh", "-n"], input=text, text=True).returncode == 0
    assert "ROOTFS='/var/lib/marea-htcondor/rootfs'" in text


def test_a_gpu_flavour_enables_gpu_discovery() -> None:
    script = render({"MAREA_GPUS": "2"})
    assert "[ '2' != 0 ] && echo \"use FEATURE: GPUs\"" in script


def test_an_imported_htcondor_elastiq_conf_builds_the_htcondor_plugin(tmp_path: Path) -> None:
    """CloudVeneto's elastiq.conf (batch_plugin = htcondor) converts to a config whose batch system is this
    plugin, with the defaults of a real central manager (the local HTCondor config names the collector)."""
    from marea.batch.factory import make_batch
    from marea.batch.htcondor import HTCondorBatch
    from marea.config import load_config
    from tests.conftest import DATA, run_cli

    proc = run_cli("config", "import-elastiq", str(DATA / "elastiq-cloudveneto.conf"))
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "marea.toml").write_text(proc.stdout)
    cfg = load_config(tmp_path / "marea.toml")
    assert cfg.batch.system == "htcondor"
    batch = make_batch(cfg)
    try:
        assert isinstance(batch, HTCondorBatch)
        assert batch.cfg.netns == "" and batch.cfg.job_constraint == "true"
    finally:
        batch.close()
