"""Queue to create: from `sbatch` returning to the cloud driver's create call, on the real Slurm testbed.

    .venv/bin/python benchmarks/queue_to_create.py [--submissions 20] [--interval 5] [--watch 1]

Runs as root (network namespaces), with Slurm installed (`bash testbeds/slurm.sh install`). It starts its own
slurmctld (namespace marea-slurm-q2c, subnet 10.247.0, state in /tmp/marea-slurm-q2c: no other suite uses
them) and runs `marea run` twice with the local cloud driver: with the queue watch off (`watch_interval_s = 0`,
the cycle every `interval_s` alone) and on. Each submission is one 1-core job; the workers are 1-core VMs whose
user-data never joins Slurm (`sleep`), so every job stays pending and needs a VM of its own: each submission
causes exactly one create. The create time is the mtime of the VM's metadata file, which the local driver
writes in its create call. Submissions are spaced by a random 0..interval gap so that they fall at every phase
of the cycle. Every Slurm command the engine runs goes through a wrapper that logs it: the calls per minute are
counted, not estimated.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from marea.clouds.local import LocalCloud
from marea.config import load_config
from marea.demo import EngineProcess, SlurmTestbed, repo_root, write_demo_config

CLUSTER = "q2c"
TESTBED = SlurmTestbed(repo_root() / "testbeds" / "slurm.sh", base="/tmp/marea-slurm-q2c", ns="marea-slurm-q2c",
                       subnet="10.247.0")  # fmt: skip
NEVER_JOINS = "#!/bin/sh\nexec sleep 3600\n"


def counting_prefix(workdir: Path) -> tuple[Path, list[str]]:
    """A command prefix that logs every batch-system command the engine runs, then runs it in the namespace."""
    log = workdir / "slurm-calls.log"
    wrapper = workdir / "count.sh"
    wrapper.write_text(f'#!/bin/sh\necho "$(date +%s.%N) $*" >> {log}\nexec "$@"\n')
    wrapper.chmod(0o755)
    return log, [str(wrapper), "nsenter", f"--net=/run/netns/{TESTBED.ns}"]


def one_mode(workdir: Path, submissions: int, interval_s: float, watch_s: float) -> dict[str, object]:
    workdir.mkdir(parents=True)
    cfg_path = write_demo_config(
        workdir, TESTBED, cluster=CLUSTER, max_workers=submissions + 5, cores=1, memory_mb=1000,
        idle_threshold_s=600, join_timeout_s=3600, interval_s=interval_s, user_data=NEVER_JOINS,
        extra_policy=f"initial_parallel_boots = {submissions + 5}",
    )  # fmt: skip
    log, prefix = counting_prefix(workdir)
    text = cfg_path.read_text()
    text = text.replace(f"interval_s = {interval_s}\n", f"interval_s = {interval_s}\nwatch_interval_s = {watch_s}\n")
    old_prefix = json.dumps(["nsenter", f"--net=/run/netns/{TESTBED.ns}"])
    cfg_path.write_text(text.replace(f"command_prefix = {old_prefix}", f"command_prefix = {json.dumps(prefix)}"))
    cfg = load_config(cfg_path)
    vms = cfg.path("vms")
    engine = EngineProcess(cfg_path)
    engine.start()
    rng = random.Random(7)
    latencies: list[float] = []
    try:
        time.sleep(2 * interval_s)  # the engine's first cycles, with nothing queued
        calls_from = time.time()
        for _ in range(submissions):
            known = set(vms.iterdir()) if vms.exists() else set()
            TESTBED.client("sbatch", "--parsable", "-p", "marea", "-c", "1", "--mem=100", "-o", "/dev/null",
                           "--wrap", "sleep 600")  # fmt: skip
            submitted = time.time()
            deadline = submitted + 4 * interval_s + 10
            new: list[Path] = []
            while not new:
                if time.time() > deadline:
                    raise SystemExit(f"no create within {deadline - submitted:.0f} s of a submission")
                time.sleep(0.02)
                new = [d for d in vms.iterdir() if d not in known and (d / "meta.json").exists()]
            latencies.append((new[0] / "meta.json").stat().st_mtime - submitted)
            time.sleep(rng.uniform(0, interval_s))
        calls_to = time.time()
    finally:
        engine.stop()
        for vm in LocalCloud(vms).list_owned(CLUSTER):
            LocalCloud(vms).delete(vm)
        TESTBED.client("scancel", "-p", "marea")
    calls = [line.split(" ", 1) for line in log.read_text().splitlines()]
    window = [c for t, c in calls if calls_from <= float(t) <= calls_to]
    minutes = (calls_to - calls_from) / 60
    kinds: dict[str, int] = {}
    for c in window:
        words = c.split()
        i = words.index("--") + 1 if "--" in words else 2  # after the nsenter prefix
        cmd = " ".join(w for w in words[i:] if not w.startswith("--net="))
        key = "squeue (light: pending ids)" if "--format=%i" in cmd else cmd.split(" --")[0].split(" nodename")[0]
        kinds[key] = kinds.get(key, 0) + 1
    q = statistics.quantiles(latencies, n=20)
    return {
        "watch_interval_s": watch_s,
        "submissions": len(latencies),
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(q[18], 2),
        "max_s": round(max(latencies), 2),
        "batch_calls_per_min": round(len(window) / minutes, 1),
        "by_command_per_min": {k: round(v / minutes, 1) for k, v in sorted(kinds.items())},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--submissions", type=int, default=20)
    ap.add_argument("--interval", type=float, default=5.0, help="engine.interval_s (default: marea's, 5 s)")
    ap.add_argument("--watch", type=float, default=1.0, help="engine.watch_interval_s of the second run")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("queue_to_create: run as root (network namespaces)")
    TESTBED.run("stop", check=False)
    TESTBED.run("start")
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="marea-q2c-") as tmp:
            for watch in (0.0, args.watch):
                results.append(one_mode(Path(tmp) / f"watch-{watch:g}", args.submissions, args.interval, watch))
                print(json.dumps(results[-1]), flush=True)
    finally:
        TESTBED.run("stop", check=False)
    print("\n| queue watch | p50 | p95 | max | batch-system calls per minute |", file=sys.stderr)
    print("|---|---:|---:|---:|---:|", file=sys.stderr)
    for r in results:
        label = "off" if not r["watch_interval_s"] else f"every {r['watch_interval_s']:g} s"
        print(f"| {label} | {r['p50_s']} s | {r['p95_s']} s | {r['max_s']} s | {r['batch_calls_per_min']} |",
              file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
