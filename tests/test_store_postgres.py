"""The engine's store on a real PostgreSQL server (Debian's postgresql, a throwaway cluster on a unix socket)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from marea.engine.store import DecisionRecord, InstanceRecord, Store
from marea.model import BootFailures, InstanceState


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL server binaries missing: run `bash testbeds/postgres.sh install` (make testbeds)")
    return Path(found[-1]).parent


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.fail("needs root (to run the server as the postgres user)")
    bindir = _pg_bin()
    d = Path(tempfile.mkdtemp(prefix="marea-pg-"))
    shutil.chown(d, "postgres")

    def as_pg(*cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, timeout=120)

    as_pg(str(bindir / "initdb"), "-D", str(d / "data"), "-A", "trust", "-U", "postgres")
    as_pg(str(bindir / "pg_ctl"), "-D", str(d / "data"), "-w", "-l", str(d / "log"), "-o",
          f"-k {d} -c listen_addresses=''", "start")  # fmt: skip
    try:
        as_pg(str(bindir / "createdb"), "-h", str(d), "marea")
        yield f"postgresql://postgres@/marea?host={d}"
    finally:
        as_pg(str(bindir / "pg_ctl"), "-D", str(d / "data"), "-m", "fast", "stop")
        shutil.rmtree(d, ignore_errors=True)


def test_store_works_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    from marea.config import load_config

    f = tmp_path / "marea.toml"
    f.write_text(f'[cluster]\nname = "pg1"\nstate = "{pg_url}"\n')
    pg_url = load_config(f).state_url()  # a plain postgresql:// URL, as an admin writes it
    s = Store(pg_url, "pg1")
    rec = InstanceRecord("pg1-a", "pg1", "small", "", InstanceState.REQUESTED, 1.0, 1.0)
    s.add_instance(rec)
    s.set_state(rec, InstanceState.BOOTING, 2.0, cloud_id="vm-9")
    s.record_decision(DecisionRecord(2.0, "boot", "1 x small for queued work", count=1))
    s.put_boot_failures(BootFailures(1, 3.0, "quota"))
    s.put_boot_failures(BootFailures(2, 4.0, "quota"))
    s.close()
    s2 = Store(pg_url, "pg1")
    (got,) = s2.live_instances()
    assert (got.state, got.cloud_id) == (InstanceState.BOOTING, "vm-9")
    assert s2.boot_failures() == BootFailures(2, 4.0, "quota")
    assert s2.recent_decisions()[0].count == 1
    s2.close()
