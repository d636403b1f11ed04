"""Queue to create: from a submission returning to the cloud driver's create call, on a real batch system.

    .venv/bin/python benchmarks/queue_to_create.py [--batch slurm|htcondor] [--submissions 20] [--interval 5]
        [--watch 1]

Runs as root (network namespaces), with Slurm installed (`bash testbeds/slurm.sh install`). It starts its own
slurmctld (namespace marea-slurm-q2c, subnet 10.247.0, state in /tmp/marea-slurm-q2c: no other suite uses
them) and runs `marea run` twice with the local cloud driver: with the queue watch off (`watch_interval_s = 0`,
the cycle every `interval_s` alone) and on. Each submission is one 1-core job; the workers are 1-core VMs whose
user-data never joins Slurm (`sleep`), so every job stays pending and needs a VM of its own: each submission
causes exactly one create. The create time is the mtime of the VM's metadata file, which the local driver
writes in its create call. Submissions are spaced by a random 0..interval gap so that they fall at every phase
of the cycle. Every Slurm command the engine runs goes through a wrapper that logs it: the calls per minute are
counted, not estimated.

`--batch htcondor`: the same on the HTCondor testbed (testbeds/htcondor.sh, namespace marea-condor, started
if it is not running and then left as it was: hold `flock -o /tmp/marea-lock.htcondor`). Jobs are submitted
through the bindings as the testbed's submit user, one 1-core job each, in batch "q2c" (the engine's
`job_constraint`). The engine runs in this process (`run_forever` in a thread) so that every query its driver
sends through the bindings is counted: `Schedd.query` and `Collector.query` are wrapped, and the benchmark's
own submissions and lookups (made from another thread) are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from marea.clouds.local import LocalCloud
from marea.config import load_config
from marea.demo import EngineProcess, SlurmTestbed, repo_root, write_demo_config
from marea.htcondor_demo import HTCondorTestbed

CLUSTER = "q2c"
TESTBED = SlurmTestbed(repo_root() / "testbeds" / "slurm.sh", base="/tmp/marea-slurm-q2c", ns="marea-slurm-q2c",
                       subnet="10.247.0")  # fmt: skip
CONDOR = HTCondorTestbed(repo_root() / "testbeds" / "htcondor.sh")
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
    try:
        latencies, calls_from, calls_to = measure(submit_sbatch, vms, submissions, interval_s)
    finally:
        engine.stop()
        for vm in LocalCloud(vms).list_owned(CLUSTER):
            LocalCloud(vms).delete(vm)
        TESTBED.client("scancel", "-p", "marea")
    calls = [line.split(" ", 1) for line in log.read_text().splitlines()]
    window = []
    for t, c in calls:
        if not calls_from <= float(t) <= calls_to:
            continue
        words = c.split()
        i = words.index("--") + 1 if "--" in words else 2  # after the nsenter prefix
        cmd = " ".join(w for w in words[i:] if not w.startswith("--net="))
        window.append("squeue (light: pending ids)" if "--format=%i" in cmd
                      else cmd.split(" --")[0].split(" nodename")[0])  # fmt: skip
    return summary(watch_s, latencies, window, calls_to - calls_from)


def submit_sbatch() -> None:
    TESTBED.client("sbatch", "--parsable", "-p", "marea", "-c", "1", "--mem=100", "-o", "/dev/null",
                   "--wrap", "sleep 600")  # fmt: skip


def measure(
    submit: Callable[[], None], vms: Path, submissions: int, interval_s: float
) -> tuple[list[float], float, float]:
    """Submit `submissions` jobs at random phases of the cycle; the seconds from each submission returning to its
    VM's create, and the window (epoch seconds) the batch-system calls are counted in."""
    rng = random.Random(7)
    latencies: list[float] = []
    time.sleep(2 * interval_s)  # the engine's first cycles, with nothing queued
    calls_from = time.time()
    for _ in range(submissions):
        known = set(vms.iterdir()) if vms.exists() else set()
        submit()
        submitted = time.time()
        deadline = submitted + 4 * interval_s + 10
        new: list[Path] = []
        while not new:
            if time.time() > deadline:
                raise SystemExit(f"no create within {deadline - submitted:.0f} s of a submission")
            time.sleep(0.02)
            new = [d for d in vms.iterdir() if d not in known and (d / "meta.json").exists()] if vms.exists() else []
        latencies.append((new[0] / "meta.json").stat().st_mtime - submitted)
        time.sleep(rng.uniform(0, interval_s))
    return latencies, calls_from, time.time()


def summary(watch_s: float, latencies: list[float], calls: list[str], seconds: float) -> dict[str, object]:
    """The figures of one run: latency quantiles, and the calls (one label each) per minute of the window."""
    minutes = seconds / 60
    kinds: dict[str, int] = {}
    for key in calls:
        kinds[key] = kinds.get(key, 0) + 1
    q = statistics.quantiles(latencies, n=20)
    return {
        "watch_interval_s": watch_s,
        "submissions": len(latencies),
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(q[18], 2),
        "max_s": round(max(latencies), 2),
        "batch_calls_per_min": round(len(calls) / minutes, 1),
        "by_command_per_min": {k: round(v / minutes, 1) for k, v in sorted(kinds.items())},
    }


class CountedQueries:
    """Wraps htcondor2's Schedd.query and Collector.query: every call from a thread other than `ignored` (the
    benchmark's own client) is logged with a label; the light id-only schedd query has its own."""

    def __init__(self, htcondor: Any, ignored: int) -> None:
        from marea.batch.htcondor import ID_PROJECTION

        self.calls: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._restore: list[tuple[Any, str, Any]] = []
        for cls, label in ((htcondor.Schedd, "schedd query"), (htcondor.Collector, "collector query")):
            original = cls.query

            def counted(obj: Any, *args: Any, _original: Any = original, _label: str = label, **kw: Any) -> Any:
                if threading.get_ident() != ignored:
                    light = _label == "schedd query" and kw.get("projection") == ID_PROJECTION
                    with self._lock:
                        self.calls.append((time.time(), f"{_label} (light: idle ids)" if light else _label))
                return _original(obj, *args, **kw)

            cls.query = counted
            self._restore.append((cls, "query", original))

    def restore(self) -> None:
        for cls, name, original in self._restore:
            setattr(cls, name, original)


def one_mode_htcondor(workdir: Path, submissions: int, interval_s: float, watch_s: float) -> dict[str, object]:
    from marea.engine.runner import run_forever, setup_logging
    from marea.htcondor_demo import CondorClient, write_htcondor_config

    workdir.mkdir(parents=True)
    env = CONDOR.env()
    cfg_path = write_htcondor_config(
        workdir, env, cluster=CLUSTER, max_workers=submissions + 5, cores=1, memory_mb=1000,
        idle_threshold_s=600, join_timeout_s=3600, interval_s=interval_s,
    )  # fmt: skip
    (workdir / "worker.sh").write_text(NEVER_JOINS)
    text = cfg_path.read_text()
    text = text.replace(f"interval_s = {interval_s}\n", f"interval_s = {interval_s}\nwatch_interval_s = {watch_s}\n")
    text = text.replace("[policy]\n", f"[policy]\ninitial_parallel_boots = {submissions + 5}\n")
    cfg_path.write_text(text)
    cfg = load_config(cfg_path)
    vms = cfg.path("vms")
    client = CondorClient(env)
    desc = {"executable": "/bin/sleep", "arguments": "600", "request_cpus": "1", "request_memory": "100",
            "request_disk": "1000", "should_transfer_files": "NO", "initialdir": "/tmp",
            "batch_name": CLUSTER}  # fmt: skip

    def submit() -> None:
        client.call(lambda h: client.schedd(h).submit(h.Submit(desc), count=1))

    counter = CountedQueries(client.h, client.call(lambda _h: threading.get_ident()))
    setup_logging(cfg)
    stop = threading.Event()
    engine = threading.Thread(target=run_forever, args=(cfg, stop), name="marea-engine", daemon=True)
    engine.start()
    try:
        latencies, calls_from, calls_to = measure(submit, vms, submissions, interval_s)
    except SystemExit:
        log = workdir / "engine.log"
        print("engine log, last lines:\n" + "\n".join(log.read_text().splitlines()[-30:]), file=sys.stderr)
        raise
    finally:
        stop.set()
        engine.join(120)
        counter.restore()
        for vm in LocalCloud(vms).list_owned(CLUSTER):
            LocalCloud(vms).delete(vm)
        client.call(lambda h: client.schedd(h).act(h.JobAction.Remove, f'JobBatchName == "{CLUSTER}"'))
        client.close()
    window = [label for t, label in counter.calls if calls_from <= t <= calls_to]
    return summary(watch_s, latencies, window, calls_to - calls_from)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--submissions", type=int, default=20)
    ap.add_argument("--interval", type=float, default=5.0, help="engine.interval_s (default: marea's, 5 s)")
    ap.add_argument("--watch", type=float, default=1.0, help="engine.watch_interval_s of the second run")
    ap.add_argument("--batch", choices=("slurm", "htcondor"), default="slurm")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("queue_to_create: run as root (network namespaces)")
    if args.batch == "htcondor":
        was_running = CONDOR.running()  # a pool someone else started is left running
        CONDOR.run("start")
        run, stop = one_mode_htcondor, (lambda: None if was_running else CONDOR.run("stop", check=False))
    else:
        TESTBED.run("stop", check=False)
        TESTBED.run("start")
        run, stop = one_mode, (lambda: TESTBED.run("stop", check=False))
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="marea-q2c-") as tmp:
            for watch in (0.0, args.watch):
                results.append(run(Path(tmp) / f"watch-{watch:g}", args.submissions, args.interval, watch))
                print(json.dumps(results[-1]), flush=True)
    finally:
        stop()
    print("\n| queue watch | p50 | p95 | max | batch-system calls per minute |", file=sys.stderr)
    print("|---|---:|---:|---:|---:|", file=sys.stderr)
    for r in results:
        label = "off" if not r["watch_interval_s"] else f"every {r['watch_interval_s']:g} s"
        print(f"| {label} | {r['p50_s']} s | {r['p95_s']} s | {r['max_s']} s | {r['batch_calls_per_min']} |",
              file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
