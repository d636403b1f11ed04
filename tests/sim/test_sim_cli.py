"""`marea simulate` as users run it (a subprocess): JSON contract, table, plot, bad input -> exit 2."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli
from tests.sim.simhelpers import DATA

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "simulate-lpc.toml"
LPC = DATA / "LPC-EGEE-2004-1.2-cln.swf.gz"
KEYS = {
    "vm_hours",
    "idle_vm_hours",
    "wait_p50_s",
    "wait_p95_s",
    "wait_max_s",
    "jobs",
    "jobs_never_started",
    "boots",
    "failed_boots",
}


def test_json_on_a_two_day_slice_of_lpc_egee(tmp_path: Path) -> None:
    plot = tmp_path / "out.png"
    r = run_cli("simulate", str(LPC), "-c", str(EXAMPLE), "--from", "30d", "--to", "32d", "--json", "--plot", str(plot))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc["policies"]) == {"marea", "elastiq", "static", "oracle", "instant"}
    jobs = {p["jobs"] for p in doc["policies"].values()}
    assert len(jobs) == 1 and jobs.pop() == doc["trace"]["jobs"] > 100
    for name, p in doc["policies"].items():
        assert set(p) >= KEYS, name
        assert p["jobs_never_started"] == 0
        assert 0 <= p["idle_vm_hours"] <= p["vm_hours"]
        assert p["wait_p50_s"] <= p["wait_p95_s"] <= p["wait_max_s"]
    pol = doc["policies"]
    # a busy slice: marea scales; the oracle bound is below it and the static 100 VMs far above
    assert pol["marea"]["boots"] > 0 and pol["elastiq"]["boots"] > 0
    assert pol["oracle"]["vm_hours"] < pol["marea"]["vm_hours"] < pol["static"]["vm_hours"]
    assert pol["oracle"]["vm_hours"] <= pol["instant"]["vm_hours"]
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_table_for_a_condor_history_recording() -> None:
    r = run_cli("simulate", str(DATA / "condor_history-json-23.9.6.json"), "--policies", "marea,oracle")
    assert r.returncode == 0, r.stderr
    assert "marea" in r.stdout and "oracle" in r.stdout and "4 jobs" in r.stdout


def test_bad_input_exits_2_with_one_clear_line(tmp_path: Path) -> None:
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text("[simulate]\nboot_time_s = -1\n")
    cases = [
        (["simulate", str(tmp_path / "nope.swf")], "file not found"),
        (["simulate", str(LPC), "--policies", "marea,magic"], "unknown policy 'magic'"),
        (["simulate", str(LPC), "-c", str(bad_cfg)], "simulate.boot_time_s"),
        (["simulate", str(LPC), "--to", "soon"], "not a duration"),
        (["simulate", str(LPC), "--from", "5d", "--to", "1d"], "--to must be after --from"),
        (["simulate", str(LPC), "--format", "csv"], "--format"),
    ]
    for args, message in cases:
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
