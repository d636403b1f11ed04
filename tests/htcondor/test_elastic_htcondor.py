"""The elastic engine end to end on a REAL HTCondor 23.9.6 pool, with the local cloud driver.

`marea run` runs as a child process, as an admin runs it; each worker "VM" of the local driver is a startd-only
condor_master in its own network namespace on the pool's bridge, started by marea's htcondor-worker user-data
and joining the collector with the pool's IDTOKEN. The plugin reads demand and workers through the PyPI
bindings from inside the manager's namespace.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from marea.clouds.local import LocalCloud
from marea.config import load_config
from marea.demo import EngineProcess
from marea.engine.store import Store
from marea.templates import worker_template
from tests.conftest import run_cli, wait_until
from tests.htcondor.conftest import NS, SUBNET, CondorTestbed

pytestmark = pytest.mark.htcondor


def write_config(tmp: Path, condor: CondorTestbed, cluster: str, *, max_workers: int, idle_s: float) -> Path:
    (tmp / "worker.sh").write_text(worker_template("htcondor-worker.sh"))
    cfg = tmp / "marea.toml"
    cfg.write_text(
        f"""
[cluster]
name = "{cluster}"
state = "state.db"

[engine]
interval_s = 1
log_file = "engine.log"

[policy]
min_workers = 0
max_workers = {max_workers}
max_parallel_boots = {max_workers}
idle_threshold_s = {idle_s}
# the jobs here last seconds (as the demos'): no waiting for room on busy workers before a boot, so that
# "3 jobs need 3 VMs" holds (with the default 300 s, the third job would start on a worker the first frees)
boot_patience_s = 0
join_timeout_s = 60

[[flavours]]
name = "c2"
cores = 2
memory_mb = 2000

[[flavours]]
name = "c4"
cores = 4
memory_mb = 8000

[batch]
system = "htcondor"
"""
        + pool_sections(condor, f'JobBatchName == "{cluster}"')
    )
    return cfg


def pool_sections(condor: CondorTestbed, job_constraint: str) -> str:
    """What ties a configuration to this machine: the local cloud on the pool's bridge, marea's HTCondor worker
    user-data in the pool's rootfs, the pool's address and the attributes its workers advertise; which jobs are
    demand (the pool is shared by the suite's tests); a silent worker lost after 60 s."""
    return f"""
[cloud]
driver = "local"

[cloud.local]
base_dir = "vms"
netns = true
bridge_netns = "{NS}"
bridge = "br0"
subnet = "{SUBNET}.0/24"
first_host = 100

[worker]
user_data_file = "worker.sh"

[worker.variables]
condor_rootfs = "{condor.env["MAREA_CONDOR_ROOTFS"]}"
condor_include = "/etc/marea-condor/common.conf"

[batch.htcondor]
collector = "{SUBNET}.1"
netns = "{NS}"
condor_config = "{condor.client_conf}"
token_file = "{condor.env["MAREA_CONDOR_TOKEN_FILE"]}"
job_constraint = '{job_constraint}'
lost_after_s = 60

[batch.htcondor.machine_attributes]
FileSystemDomain = '"condor.test"'
UidDomain = '"condor.test"'
"""


def cleanup(cfg_path: Path, cluster: str) -> list[Any]:
    cloud = LocalCloud(load_config(cfg_path).path("vms"))
    leftover = cloud.list_owned(cluster)
    for vm in leftover:
        cloud.delete(vm)
    return leftover


def leftover_namespaces(cluster: str) -> list[str]:
    return sorted(p.name for p in Path("/run/netns").iterdir() if p.name.startswith(f"mvm-{cluster}-"))


def test_big_jobs_get_big_flavours_unsatisfiable_boots_nothing_drain_first(
    condor: CondorTestbed, tmp_path: Path
) -> None:
    """2 jobs of 4 cores / 6000 MiB among 1-core jobs, plus one job no flavour satisfies. The 4-core jobs run on
    c4 VMs (bin-packing in cores and memory), every satisfiable job completes exactly once, the unsatisfiable
    one boots nothing and its reason is shown; workers are drained before deletion and no job is running on a
    worker when it is deleted; the cluster ends at 0 with no VM left."""
    cluster = "hce"
    cfg_path = write_config(tmp_path, condor, cluster, max_workers=4, idle_s=3)
    cfg = load_config(cfg_path)
    store = Store(cfg.state_url(), cluster)
    engine = EngineProcess(cfg_path)
    never = condor.submit(1, 5, batch=cluster, requirements="TARGET.HasQuantumDrive =?= true")
    engine.start()
    try:
        big = condor.submit(2, 12, cpus=4, memory=6000, batch=cluster)
        small = condor.submit(4, 6, cpus=1, memory=100, batch=cluster)
        ids = big + small
        wait_until("a drain", lambda: any(d.kind == "drain" for d in store.recent_decisions(1000)), 120)
        ids += condor.submit(2, 4, cpus=1, memory=100, batch=cluster)  # a second wave while workers drain
        wait_until("every satisfiable job done", lambda: all(j["JobStatus"] == 4 for j in condor.jobs(ids).values())
                   and len(condor.jobs(ids)) == len(ids), 240, step=1)  # fmt: skip
        wait_until("the cluster back at 0", lambda: store.live_instances() == [], 120)

        jobs = condor.jobs(ids)
        flavour_of = {r.id: r.flavour for r in store.all_instances()}
        for jid in big:
            host = str(jobs[jid]["LastRemoteHost"]).split("@", 1)[1]
            assert flavour_of[host] == "c4", (jid, host, flavour_of)
        for jid, j in jobs.items():
            assert (j["ExitCode"], j["NumJobStarts"]) == (0, 1), (jid, j)
        # drain first: every delete comes after a drain of the same worker, and no job ran there at that time
        decisions = store.recent_decisions(10_000)
        for d in decisions:
            if d.kind != "delete":
                continue
            drains = [x for x in decisions if x.kind == "drain" and x.instance_id == d.instance_id and x.at <= d.at]
            assert drains, f"{d.instance_id} deleted without a drain"
            for jid, j in jobs.items():
                if str(j["LastRemoteHost"]).endswith("@" + str(d.instance_id)):
                    assert not (j["JobCurrentStartDate"] <= d.at < j["CompletionDate"]), f"{jid} ran at delete"
        boots = sum(d.count for d in decisions if d.kind == "boot")
        assert 3 <= boots <= 6, boots  # 2 x c4, 1-2 x c2, maybe 1-2 for the second wave; none for `never`
        # the unsatisfiable job is still idle and boots nothing, cycle after cycle; its reason is shown
        time.sleep(4)
        assert sum(d.count for d in store.recent_decisions(10_000) if d.kind == "boot") == boots
        assert store.live_instances() == []
        assert condor.jobs(never)[never[0]]["JobStatus"] == 1
        report = json.loads(run_cli("status", "-c", str(cfg_path), "--json").stdout)
        [unsat] = report["unsatisfiable"]
        assert unsat["jobs"] == never and "HasQuantumDrive" in unsat["reason"]
        explain = run_cli("status", "-c", str(cfg_path), "--explain")
        assert explain.returncode == 0 and "HasQuantumDrive" in " ".join(explain.stdout.split())
    finally:
        code = engine.stop()
        condor.remove_jobs(f'JobBatchName == "{cluster}"')
        leftover = cleanup(cfg_path, cluster)
        store.close()
    assert code == 0
    assert leftover == []
    assert leftover_namespaces(cluster) == []
    log = (tmp_path / "engine.log").read_text()
    assert condor.token() not in log and condor.token() not in (tmp_path / "engine.stdout").read_text()


def test_kill_9_during_scale_up_and_during_drain_then_restart(condor: CondorTestbed, tmp_path: Path) -> None:
    """kill -9 of `marea run` while VMs boot, restart: its VMs are adopted (no duplicates); again while workers
    drain: the drains are carried on, every job finishes exactly once, nothing leaks."""
    from marea.model import InstanceState

    cluster = "hck"
    cfg_path = write_config(tmp_path, condor, cluster, max_workers=3, idle_s=3)
    cfg = load_config(cfg_path)
    store = Store(cfg.state_url(), cluster)
    cloud = LocalCloud(cfg.path("vms"))
    engine = EngineProcess(cfg_path)
    engine.start()

    def joined() -> list[str]:
        return [d.instance_id or "" for d in store.recent_decisions(10_000) if d.kind == "joined"]

    try:
        # 3 two-core jobs and 2-core VMs first in preference: exactly 3 VMs are needed, whatever the engine does
        ids = condor.submit(3, 10, cpus=2, memory=1000, batch=cluster)
        wait_until("VMs booting", lambda: len(cloud.list_owned(cluster)) >= 2, 60, step=0.1)
        engine.kill9()
        healthy_before = {vm.instance_id for vm in cloud.list_owned(cluster) if vm.status.value == "active"}
        engine = EngineProcess(cfg_path)
        engine.start()
        wait_until("3 workers joined", lambda: len(joined()) >= 3, 90)
        assert healthy_before <= set(joined()), "VMs booted before the kill were not adopted"
        wait_until(
            "a worker draining",
            lambda: any(r.state is InstanceState.DRAINING for r in store.live_instances()),
            120,
            step=0.2,
        )
        engine.kill9()
        engine = EngineProcess(cfg_path)
        engine.start()
        wait_until("every job done", lambda: all(j["JobStatus"] == 4 for j in condor.jobs(ids).values()), 120)
        wait_until("the cluster back at 0", lambda: store.live_instances() == [], 120)
        assert len(joined()) == 3, f"duplicates joined: {joined()}"
        for jid, j in condor.jobs(ids).items():
            assert (j["ExitCode"], j["NumJobStarts"]) == (0, 1), (jid, j)
    finally:
        code = engine.stop()
        condor.remove_jobs(f'JobBatchName == "{cluster}"')
        leftover = cleanup(cfg_path, cluster)
        store.close()
    assert code == 0
    assert leftover == []
    assert leftover_namespaces(cluster) == []


ELASTIQ_CONF = """# an elastiq.conf as an HTCondor tenant of CloudVeneto has it (seed 004), sized for the test pool
[elastiq]
check_queue_every_s = 2
idle_for_time_s = 4
waiting_jobs_time_s = 10
n_jobs_per_vm = 2
batch_plugin = htcondor
estimated_vm_deploy_time_s = 90
check_vms_every_s = 30
[ec2]
flavour = cloudveneto.small
api_url = https://cloud-areapd.pd.infn.it:8788/services/Cloud
image_id = ami-00000001
aws_access_key_id = AKIAEXAMPLE
aws_secret_access_key = s3cr3t-DO-NOT-LOG
user_data_b64 = IyEvYmluL2Jhc2gKZWNobyBqb2luaW5nIGNvbmRvcgo=
[quota]
min_vms = 0
max_vms = 3
"""


def test_imported_elastiq_conf_runs_the_demo_flow(condor: CondorTestbed, tmp_path: Path) -> None:
    """`marea config import-elastiq` of an HTCondor elastiq.conf, run by `marea run` on the real pool: all jobs
    complete once, the peak stays within max_vms, the cluster ends at min_vms, no VM is left.

    Used as imported: [cluster], [engine], [policy] (quota and timings), [[flavours]] (n_jobs_per_vm cores) and
    [batch] system. Replaced, because this machine has no EC2 cloud whose VMs run user-data: [cloud] (the
    local driver on the pool's bridge) and [worker] (marea's HTCondor worker user-data, since elastiq's does
    not join this pool). Added: the pool's address and the machine attributes its workers advertise, as the
    imported file's comment asks, a job constraint (the pool is shared with other tests) and a 60 s
    lost-worker limit (`pool_sections`)."""
    (tmp_path / "elastiq.conf").write_text(ELASTIQ_CONF)
    proc = run_cli("config", "import-elastiq", str(tmp_path / "elastiq.conf"))
    assert proc.returncode == 0, proc.stderr
    imported = proc.stdout
    kept = "\n".join(section for section in _toml_sections(imported) if not section.startswith(("[cloud", "[worker")))
    (tmp_path / "worker.sh").write_text(worker_template("htcondor-worker.sh"))
    cfg_path = tmp_path / "marea.toml"
    cfg_path.write_text(kept + pool_sections(condor, 'JobBatchName == "elastiq"'))
    cfg = load_config(cfg_path)
    assert (cfg.cluster.name, cfg.policy.max_workers, cfg.policy.min_workers) == ("elastiq", 3, 0)
    assert (cfg.flavours[0].name, cfg.flavours[0].cores, cfg.batch.system) == ("cloudveneto.small", 2, "htcondor")
    store = Store(cfg.state_url(), cfg.cluster.name)
    engine = EngineProcess(cfg_path)
    engine.start()
    peak = 0

    def alive() -> int:
        nonlocal peak
        n = len(store.live_instances())
        peak = max(peak, n)
        return n

    def all_done(ids: list[str]) -> bool:
        alive()  # the peak is sampled while the jobs run too
        jobs = condor.jobs(ids)
        return len(jobs) == len(ids) and all(j["JobStatus"] == 4 for j in jobs.values())

    try:
        ids = condor.submit(8, 5, cpus=1, memory=200, batch="elastiq")
        wait_until("every job done", lambda: all_done(ids), 240, step=1)
        wait_until("the cluster back at min_vms (0)", lambda: alive() == 0, 120)
        jobs = condor.jobs(ids)
        assert all((j["ExitCode"], j["NumJobStarts"]) == (0, 1) for j in jobs.values()), jobs
        booted = store.all_instances()
        assert 1 <= peak <= 3 and len(booted) >= 1
        assert all(r.flavour == "cloudveneto.small" for r in booted)
    finally:
        code = engine.stop()
        condor.remove_jobs('JobBatchName == "elastiq"')
        leftover = cleanup(cfg_path, cfg.cluster.name)
        store.close()
    assert code == 0 and leftover == []
    assert leftover_namespaces(cfg.cluster.name) == []
    engine_output = (tmp_path / "engine.stdout").read_text()  # the imported [engine] logs to stderr
    assert "joined the batch system" in engine_output and "s3cr3t" not in engine_output


def _toml_sections(text: str) -> list[str]:
    """The text of each table of a TOML document (comments before a header go with the table above)."""
    sections: list[str] = []
    for line in text.splitlines():
        if line.startswith("[") or not sections:
            sections.append(line)
        else:
            sections[-1] += "\n" + line
    return sections


def _kill_condor_daemons(instance_id: str) -> int:
    """SIGKILL every condor_* process in the worker VM's network namespace (the master first, so it restarts
    nothing); the VM itself stays up. Returns how many were killed."""
    import os
    import signal
    import subprocess

    pids = subprocess.run(["ip", "netns", "pids", f"mvm-{instance_id}"], capture_output=True, text=True).stdout.split()
    named = []
    for pid in pids:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm.startswith("condor_"):
            named.append((comm != "condor_master", int(pid)))
    for _, pid in sorted(named):
        os.kill(pid, signal.SIGKILL)
    return len(named)


def test_a_silent_startd_is_no_free_capacity_and_is_failed_and_deleted(condor: CondorTestbed, tmp_path: Path) -> None:
    """The HTCondor daemons of a joined worker die (kill -9) while its VM stays up: its ads linger in the
    collector, but after `lost_after_s` (12 s here) marea treats it as lost. Phase 1 (a long grace): a job queued
    then boots a second worker and runs there, so the lost worker's free slot was not counted. Phase 2 (the
    engine restarted with a 3 s grace): the lost worker is failed and its VM deleted."""
    from marea.model import InstanceState

    cluster = "hlw"
    cfg_path = write_config(tmp_path, condor, cluster, max_workers=2, idle_s=600)
    text = cfg_path.read_text().replace("lost_after_s = 60", "lost_after_s = 12")
    cfg_path.write_text(text.replace("interval_s = 1\n", "interval_s = 1\nabsent_grace_s = 600\n", 1))
    cfg = load_config(cfg_path)
    store = Store(cfg.state_url(), cluster)
    cloud = LocalCloud(cfg.path("vms"))
    engine = EngineProcess(cfg_path)
    engine.start()
    lost = ""
    try:
        first = condor.submit(1, 1, cpus=2, memory=500, batch=cluster)
        wait_until("the first job done", lambda: all(j["JobStatus"] == 4 for j in condor.jobs(first).values()), 120)
        lost = wait_until("the worker idle", lambda: [r.id for r in store.live_instances()
                                                      if r.state is InstanceState.IDLE], 30)[0]  # fmt: skip
        assert _kill_condor_daemons(lost) >= 2
        time.sleep(15)  # past lost_after_s: the ads are stale but still in the collector (CLASSAD_LIFETIME 60 s)
        second = condor.submit(1, 1, cpus=2, memory=500, batch=cluster)
        wait_until("the second job done", lambda: all(j["JobStatus"] == 4 for j in condor.jobs(second).values()), 120)
        (job,) = condor.jobs(second).values()
        assert lost not in str(job.get("LastRemoteHost")), job
        boots = sum(d.count for d in store.recent_decisions(1000) if d.kind == "boot")
        assert boots == 2, f"{boots} boots: the lost worker's slot was counted free"
        assert engine.stop() == 0

        cfg_path.write_text(cfg_path.read_text().replace("absent_grace_s = 600", "absent_grace_s = 3"))
        engine = EngineProcess(cfg_path)
        engine.start()
        wait_until(f"{lost} deleted", lambda: lost not in {r.id for r in store.live_instances()}, 60)
        deletes = [d for d in store.recent_decisions(1000) if d.kind == "delete" and d.instance_id == lost]
        assert deletes, "the lost worker was not deleted by a decision"
        # lost while its ads last; absent once the collector dropped them (CLASSAD_LIFETIME): either is the rule
        assert "lost the worker" in deletes[0].reason or "left the batch system" in deletes[0].reason, deletes
        assert lost not in {vm.instance_id for vm in cloud.list_owned(cluster)}
        healthy = {r.id for r in store.live_instances()}
        assert len(healthy) == 1 and lost not in healthy
    finally:
        code = engine.stop()
        condor.remove_jobs(f'JobBatchName == "{cluster}"')
        leftover = cleanup(cfg_path, cluster)
        store.close()
    assert code == 0
    assert lost not in {vm.instance_id for vm in leftover}  # the healthy worker (idle, min 0, 600 s) is left
    assert len(leftover) <= 1
