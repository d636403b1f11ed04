"""The crash campaign, long form: kill -9 of `marea run` at random points of scale-up and scale-down, restart,
run to completion, on the real Slurm testbed with the local cloud driver (tests/slurm/crash_campaign.py).

    .venv/bin/python benchmarks/chaos_crash.py [--trials 100] [--seed 1] [--json]

Runs as root (network namespaces) with its own Slurm testbed instance (marea-slurm-cx, 10.239.7.0/24).
Reports leaked VMs, killed or requeued jobs, boots over the maximum and duplicate joins (all must be 0), with
failed boots and adoptions after the kills and the seconds per trial.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.slurm.crash_campaign import run_campaign  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = run_campaign(args.trials, seed=args.seed, log=None if args.json else print)
    out = {**result.totals(), "ok": result.ok}
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
