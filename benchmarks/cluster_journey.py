"""The tenant's journey, timed: `cluster create` to master ready, to the first job running, to all jobs done, to
back at the minimum; with 1, 2 and 4 workers booted at once; and memory per guest.

Runs on the booting OpenStack testbed (testbeds/openstack.sh start, with testbeds/guests.sh install done):

    .venv/bin/python benchmarks/cluster_journey.py [--system slurm|htcondor] [--workers 1,2,4] [--json]

One cluster per worker count: N one-core jobs of 20 s on m1.small workers (1 core) with max_workers = N, so the
engine boots N workers at once. Memory per guest is the resident memory of each guest's processes (the sum of
RSS of its PID namespace, read from the host), at the moment all jobs run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
STATE = Path(os.environ.get("MAREA_OS_STATE", "/tmp/marea-openstack"))

from tests.openstack.journey import (  # noqa: E402
    Journey,
    build_wheelhouse,
    cluster_toml,
    htcondor_done,
    slurm_done,
    submit_htcondor,
    submit_slurm,
)

JOB_SECONDS = 20


def guest_rss_mib() -> dict[str, float]:
    """Resident memory of every running guest, by instance directory: all processes in its PID namespace."""
    out: dict[str, float] = {}
    for pid_file in (STATE / "data" / "nova" / "instances").glob("*/pid"):
        try:
            nspawn = int(pid_file.read_text())
            children = Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()
            ns = os.readlink(f"/proc/{children[0]}/ns/pid")
        except (OSError, ValueError, IndexError):
            continue
        total = 0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if os.readlink(proc / "ns" / "pid") != ns:
                    continue
                for line in (proc / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        out[pid_file.parent.name] = round(total / 1024, 1)
    return out


def running(journey: Journey, system: str) -> bool:
    if system == "slurm":
        return "RUNNING" in journey.ok_on_master("squeue -h -o %T")
    return "2" in journey.ok_on_master("condor_q -allusers -af JobStatus").split()


def one_run(system: str, workers: int, workdir: Path) -> dict[str, Any]:
    name = f"bench{system[:2]}{workers}"
    key = workdir / f"key{workers}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = workdir / f"{name}.toml"
    config.write_text(cluster_toml(name, system, key, max_workers=workers))
    journey = Journey(config)
    submit, done = (submit_slurm, slurm_done) if system == "slurm" else (submit_htcondor, htcondor_done)
    memory: dict[str, float] = {}
    try:
        journey.create()
        journey.wait_master_ready()
        submit(journey, workers, JOB_SECONDS)
        journey.mark("jobs submitted")
        journey.wait("first job running", lambda: running(journey, system), timeout=600, step=1)

        def all_done() -> bool:
            memory.update(guest_rss_mib())
            return bool(done(journey, workers))

        journey.wait("all jobs done", all_done, timeout=900, step=2)
        journey.wait("back at the minimum", lambda: not journey.status()["workers"], timeout=600, step=2)
    finally:
        journey.destroy()
    return {"system": system, "workers": workers, "seconds": journey.marks, "guest_rss_mib": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="slurm", choices=["slurm", "htcondor"])
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    os.environ.setdefault("OS_CLIENT_CONFIG_FILE", str(STATE / "clouds.yaml"))
    build_wheelhouse()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in args.workers.split(",")]:
            t0 = time.monotonic()
            results.append(one_run(args.system, n, Path(tmp)))
            results[-1]["wall_s"] = round(time.monotonic() - t0, 1)
            if not args.json:
                r = results[-1]
                rss = sorted(r["guest_rss_mib"].values())
                print(f"{args.system}, {n} worker(s) at once: {r['seconds']}; guest RSS MiB {rss}", flush=True)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
