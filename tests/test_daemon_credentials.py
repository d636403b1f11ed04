"""`marea run` refuses an OIDC access token: it expires under the daemon (docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli


def test_marea_run_refuses_an_oidc_access_token_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "marea.toml"
    cfg.write_text(
        """[cluster]
name = "oidc"
state = "state.db"

[[flavours]]
name = "f"
cores = 1
memory_mb = 1000

[cloud]
driver = "openstack"

[cloud.openstack]
auth_url = "https://keystone.example.org:5000/v3"
auth_type = "v3oidcaccesstoken"
identity_provider = "infn-aai"
access_token = "eyJ-very-secret-token"
image = "img"
network = "net"

[worker]
user_data = "#!/bin/sh\\n"

[batch]
system = "slurm"
"""
    )
    proc = run_cli("run", "-c", str(cfg))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "application credential" in lines[0], proc.stderr
    assert "eyJ-very-secret-token" not in proc.stderr + proc.stdout
    assert not (tmp_path / "state.db.lock").exists(), "refused before taking the lock"
