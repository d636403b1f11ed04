"""The cloud-fault campaign, long form: the engine against the OpenStack testbed behind a fault-injecting proxy.

    .venv/bin/python benchmarks/chaos_cloud.py [--rounds 10] [--demand 4] [--error 0.3] [--seed 1] [--no-faults]

Each round raises the demand to D workers and drops it to 0; the proxy (tests/fault_proxy.py) answers a share
of the calls 5xx, delays 20 % of them by 2 s, drops 3 % before and 3 % after forwarding, and refuses 10 % of
creates with Nova's quota message. Reported: rounds converged up and down, seconds per phase, leaked servers,
servers over the maximum, retries and failed creates as the engine recorded them, faults injected. Needs the
OpenStack testbed running (testbeds/openstack.sh start); hold /tmp/marea-lock.openstack while it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
STATE = Path(os.environ.get("MAREA_OS_STATE", "/tmp/marea-openstack"))

from tests.fault_proxy import Faults  # noqa: E402
from tests.openstack.chaos import run_campaign  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--demand", type=int, default=4)
    ap.add_argument("--error", type=float, default=0.3, help="share of calls answered 5xx")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-faults", action="store_true", help="the same campaign through a proxy that injects nothing")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import openstack

    warnings.filterwarnings("ignore")
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(STATE / "clouds.yaml")
    conn = openstack.connect(cloud="demo")
    with tempfile.TemporaryDirectory(prefix="marea-chaos-cloud-") as d:
        result = run_campaign(conn, STATE / "clouds.yaml", Path(d), rounds=args.rounds, demand=args.demand,
                              faults=Faults(error=args.error, enabled=not args.no_faults), seed=args.seed,
                              log=None if args.json else print)  # fmt: skip
    conn.close()
    out = {**asdict(result), "ok": result.ok}
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
