"""The htcondor batch plugin against a REAL HTCondor 23.9.6 pool (testbeds/htcondor.sh), through the PyPI
bindings: workers joining with the IDTOKEN from marea's worker user-data, demand and unsatisfiable jobs, the
graceful drain, and a worker that vanishes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from marea.batch.base import BatchError
from marea.batch.htcondor import HTCondorBatch
from marea.config import HTCondorSection
from marea.model import Flavour, Resources
from tests.conftest import wait_until
from tests.htcondor.conftest import NS, SCRIPT, SUBNET, CondorTestbed

pytestmark = pytest.mark.htcondor

SMALL, BIG = Flavour("small", 2, 2000), Flavour("big", 4, 8000)
POOL_ATTRS = {"FileSystemDomain": '"condor.test"', "UidDomain": '"condor.test"'}


def plugin(condor: CondorTestbed, batch: str = "", lost_after_s: float = 120) -> HTCondorBatch:
    return HTCondorBatch(
        HTCondorSection(
            collector=f"{SUBNET}.1",
            netns=NS,
            condor_config=condor.client_conf,
            token_file=condor.env["MAREA_CONDOR_TOKEN_FILE"],
            machine_attributes=POOL_ATTRS,
            job_constraint=f'JobBatchName == "{batch}"' if batch else "true",
            lost_after_s=lost_after_s,
        )
    )


def test_join_variables_carry_the_token_and_never_show_it_in_errors(condor: CondorTestbed) -> None:
    b = plugin(condor)
    try:
        variables = b.join_variables("lj0")
        token = condor.token()
        assert variables == {"MAREA_CONDOR_HOST": f"{SUBNET}.1", "MAREA_CONDOR_IDTOKEN": token}
        assert token.count(".") == 2  # a JWT
    finally:
        b.close()


def test_worker_joins_with_the_idtoken_keyed_by_its_vm_name_and_a_forged_token_is_refused(
    condor: CondorTestbed,
) -> None:
    b = plugin(condor)
    try:
        condor.start_vm("lj1", 51, cores=2, memory=1500)
        token = condor.token()
        head, body, _sig = token.split(".")
        condor.start_vm("lbad", 52, token=f"{head}.{body}.{'A' * 43}")
        w = wait_until("lj1 in the pool", lambda: b.snapshot((SMALL,)).workers.get("lj1"), 30)
        assert w.total == Resources(2.0, 1500.0, 0) and w.free == w.total
        assert not (w.busy or w.draining or w.drained or w.lost)
        assert w.address == f"{SUBNET}.51"
        [slot] = condor.slots('MareaWorker == "lj1"')
        assert slot["AuthenticationMethod"] == "IDTOKENS"
        assert slot["Machine"] == "lj1"
        time.sleep(6)  # longer than one UPDATE_INTERVAL: the forged worker had its chance to advertise
        assert "lbad" not in b.snapshot((SMALL,)).workers
        assert condor.slots('MareaWorker == "lbad"') == []
        # the token is never echoed by the user-data
        console = (condor.vms["lj1"] / "console.log").read_text()
        assert token not in console and "joining HTCondor" in console
    finally:
        condor.power_off("lbad")
        condor.power_off("lj1")
        b.close()


def test_demand_groups_big_jobs_and_reports_unsatisfiable_ones_with_their_reason(condor: CondorTestbed) -> None:
    b = plugin(condor, batch="dem")
    try:
        ones = condor.submit(3, 60, cpus=1, memory=100, batch="dem")
        bigs = condor.submit(2, 60, cpus=4, memory=6000, batch="dem")
        never = condor.submit(1, 60, batch="dem", requirements="TARGET.HasQuantumDrive =?= true")
        huge = condor.submit(1, 60, cpus=64, batch="dem")
        snap = b.snapshot((SMALL, BIG))
        shapes = {(g.request.cores, g.request.memory_mb): g.count for g in snap.demand}
        assert shapes == {(1.0, 100.0): 3, (4.0, 6000.0): 2}
        assert all(g.oldest_submit_time and g.oldest_submit_time > 1e9 for g in snap.demand)
        reasons = {u.job_ids: u.reason for u in snap.unsatisfiable}
        assert set(reasons) == {tuple(never), tuple(huge)}
        assert "HasQuantumDrive" in reasons[tuple(never)] and "(small, big)" in reasons[tuple(never)]
        assert "more than any flavour" in reasons[tuple(huge)]
        assert snap.queued_jobs == 7
        assert not set(ones + bigs) & {j for u in snap.unsatisfiable for j in u.job_ids}

        # after a negotiation cycle the schedd has put the jobs in autoclusters: the plugin then reads one full
        # ad per autocluster and only ids for the jobs; the verdicts must not change
        def autoclustered() -> bool:
            ads = condor.call(lambda h: condor.schedd(h).query('JobBatchName == "dem"', ["AutoClusterId"]))
            return all(isinstance(a.get("AutoClusterId"), int) for a in ads)

        condor.start_vm("lt1", 55, cores=1, memory=50)  # negotiation needs a slot; none of these jobs fits it
        wait_until("jobs in autoclusters", autoclustered, 40)
        again = b.snapshot((SMALL, BIG))
        assert {(g.request.cores, g.request.memory_mb): g.count for g in again.demand} == shapes
        assert {u.job_ids: u.reason for u in again.unsatisfiable} == reasons
        # with only the small flavour the 4-core jobs cannot run either
        small_only = b.snapshot((SMALL,))
        assert {g.request.cores for g in small_only.demand} == {1.0}
        assert len(small_only.unsatisfiable) == 3
    finally:
        condor.power_off("lt1")
        condor.remove_jobs('JobBatchName == "dem"')
        b.close()


def test_the_queue_watch_reads_the_idle_jobs_of_its_pool_and_nothing_else(condor: CondorTestbed) -> None:
    """`pending_jobs`, the queue watch's light call: one schedd query (after the first, which finds the schedd
    through the collector), the idle jobs of `job_constraint` by id. A job of another pool, a held, a removed
    and a running job are not pending."""
    b = plugin(condor, batch="pw")
    try:
        before = b.pending_jobs()
        assert before is not None and not {i for i in before if "pw" in i}
        nowhere = 'MareaWorker =?= "nowhere"'  # these stay idle whatever worker joins
        ids = condor.submit(4, 300, batch="pw", requirements=nowhere)
        other = condor.submit(1, 300, batch="pw-other", requirements=nowhere)
        got = b.pending_jobs()
        assert got is not None and {i.split("#")[1] for i in got} == set(ids), got
        assert all(i.split("#")[0] for i in got)  # the schedd's name keeps two schedds' job 1.0 apart

        def act(action: str, job: str) -> None:
            cluster, proc = job.split(".")
            condor.call(lambda h: condor.schedd(h).act(getattr(h.JobAction, action),
                                                       f"ClusterId == {cluster} && ProcId == {proc}"))  # fmt: skip

        act("Hold", ids[0])
        act("Remove", ids[1])
        act("Remove", ids[3])
        # a job of the pool that runs: a worker only it may run on
        [runs] = condor.submit(1, 300, batch="pw", requirements='MareaWorker == "lw1"')
        condor.start_vm("lw1", 58)
        wait_until("the job running on lw1", lambda: condor.jobs([runs])[runs]["JobStatus"] == 2, 60)
        got = b.pending_jobs()
        assert got is not None and {i.split("#")[1] for i in got} == {ids[2]}, got
        assert other[0] not in {i.split("#")[1] for i in got}
    finally:
        condor.power_off("lw1")
        condor.remove_jobs('JobBatchName == "pw" || JobBatchName == "pw-other"')
        b.close()


def _drain_state(condor: CondorTestbed, b: Any, job: str) -> str:
    """What the plugin, the collector and the schedd say about a drain that does not end (for a failure)."""
    slots = [
        {k: s.get(k) for k in ("Name", "State", "Activity", "Draining", "ChildState", "LastHeardFrom")}
        for s in condor.slots('MareaWorker == "ld1"')
    ]
    return f"worker {b.snapshot((SMALL,)).workers.get('ld1')}; slots {slots}; job {condor.jobs([job]).get(job)}"


def test_graceful_drain_lets_the_job_finish_and_removal_waits_for_drained_idle(condor: CondorTestbed) -> None:
    b = plugin(condor, batch="drn")
    try:
        condor.start_vm("ld1", 53)
        wait_until("ld1 in the pool", lambda: "ld1" in b.snapshot((SMALL,)).workers, 30)
        [job] = condor.submit(1, 8, batch="drn", requirements='MareaWorker == "ld1"')
        wait_until("the job running", lambda: condor.jobs([job])[job]["JobStatus"] == 2, 30)
        assert b.remove("ld1") is False  # never removed while work runs, drained or not
        b.drain("ld1", "test: scale down")
        b.drain("ld1", "test: scale down")  # idempotent, even before the collector shows the first one
        w = wait_until("ld1 draining", lambda: (w := b.snapshot((SMALL,)).workers["ld1"]).draining and w, 60)
        assert w.busy and not w.drained
        assert b.remove("ld1") is False
        # the job sleeps 8 s; the margin is for a CI machine whose two cores also boot the OpenStack suite's guests
        done = wait_until(
            "ld1 drained",
            lambda: (w := b.snapshot((SMALL,)).workers.get("ld1")) and w.drained and w,
            120,
            explain=lambda: _drain_state(condor, b, job),
        )
        assert not done.busy
        info = condor.jobs([job])[job]
        assert (info["JobStatus"], info["ExitCode"], info["NumJobStarts"]) == (4, 0, 1)
        assert str(info["LastRemoteHost"]).endswith("@ld1")
        assert b.remove("ld1") is True
        # its daemons were switched off: the ads leave the collector without waiting for CLASSAD_LIFETIME
        wait_until("ld1 gone from the collector", lambda: "ld1" not in b.snapshot((SMALL,)).workers, 60)
        assert b.remove("ld1") is True  # unknown: nothing to wait for
    finally:
        condor.remove_jobs('JobBatchName == "drn"')
        condor.power_off("ld1")
        b.close()


def test_a_vanished_worker_is_reported_lost_and_removal_does_not_wait_for_it(condor: CondorTestbed) -> None:
    b = plugin(condor, lost_after_s=8)
    try:
        condor.start_vm("lv1", 54)
        wait_until("lv1 in the pool", lambda: "lv1" in b.snapshot((SMALL,)).workers, 30)
        b.drain("lv1", "test")
        condor.power_off("lv1")  # the VM dies: its ads stay in the collector for CLASSAD_LIFETIME
        assert "lv1" in b.snapshot((SMALL,)).workers
        w = wait_until("lv1 lost", lambda: (w := b.snapshot((SMALL,)).workers.get("lv1")) and w.lost and w, 25)
        assert w.name == "lv1"
        assert b.remove("lv1") is True
    finally:
        condor.power_off("lv1")
        b.close()


def test_bad_netns_and_bad_collector_give_short_errors(condor: CondorTestbed) -> None:
    from marea.batch.base import BatchError

    missing = HTCondorBatch(HTCondorSection(netns="marea-condor-nope", condor_config=condor.client_conf))
    with pytest.raises(BatchError, match="marea-condor-nope does not exist"):
        missing.snapshot((SMALL,))
    b = HTCondorBatch(HTCondorSection(collector=f"{SUBNET}.250", netns=NS, condor_config=condor.client_conf))
    try:
        with pytest.raises(BatchError, match="htcondor: reading the queue and the pool failed"):
            b.snapshot((SMALL,))
    finally:
        b.close()


def test_each_worker_gets_its_own_token_and_a_removed_workers_token_is_refused(
    condor: CondorTestbed, tmp_path: Path
) -> None:
    """Per-worker IDTOKENs (batch.htcondor.token_command): the central manager itself refuses the token of a
    worker marea removed (SEC_TOKEN_REVOCATION_EXPR), while a live worker's token keeps working."""
    from marea.batch.htcondor_tokens import token_id

    mint = ["bash", str(SCRIPT), "exec", "condor_token_create", "-identity", "condor@condor.test", "-key", "POOL",
            "-authz", "ADVERTISE_STARTD", "-authz", "ADVERTISE_MASTER", "-authz", "READ"]  # fmt: skip
    b = HTCondorBatch(
        HTCondorSection(
            collector=f"{SUBNET}.1", netns=NS, condor_config=condor.client_conf, machine_attributes=POOL_ATTRS,
            token_command=mint, revocation_file=condor.env["MAREA_CONDOR_REVOCATION_FILE"],
            token_registry=str(tmp_path / "tokens.json"),
            reconfig_command=["bash", str(SCRIPT), "exec", "condor_reconfig"],
        )
    )  # fmt: skip
    try:
        first = b.join_variables("lt1")["MAREA_CONDOR_IDTOKEN"]
        second = b.join_variables("lt2")["MAREA_CONDOR_IDTOKEN"]
        assert first != second and token_id(first) != token_id(second)
        assert (tmp_path / "tokens.json").stat().st_mode & 0o777 == 0o600
        condor.start_vm("lt1", 61, token=first)
        wait_until("lt1 in the pool", lambda: b.snapshot((SMALL,)).workers.get("lt1"), 30)

        def drain() -> bool:  # a startd that joined a moment ago may refuse a drain: the engine retries next cycle
            try:
                b.drain("lt1", "scale-down")
            except BatchError:
                return False
            return True

        wait_until("lt1 accepting the drain", drain, 30, step=2)
        wait_until("lt1 removed", lambda: b.remove("lt1"), 60)
        condor.power_off("lt1")
        assert token_id(first) in Path(condor.env["MAREA_CONDOR_REVOCATION_FILE"]).read_text()
        assert b.tokens is not None and set(b.tokens.issued()) == {"lt2"}

        # the removed worker's token, copied into another machine, brings nothing into the pool
        condor.start_vm("lt3", 63, token=first)
        condor.start_vm("lt2", 62, token=second)
        wait_until("lt2 in the pool", lambda: b.snapshot((SMALL,)).workers.get("lt2"), 30)
        time.sleep(6)  # longer than one UPDATE_INTERVAL: lt3 had its chance to advertise
        assert condor.slots('MareaWorker == "lt3"') == []
    finally:
        for vm in ("lt1", "lt2", "lt3"):
            condor.power_off(vm)
        b.close()


def test_resume_cancels_the_drain_and_the_worker_takes_new_jobs(condor: CondorTestbed) -> None:
    """Policy v2's resume on HTCondor: cancelDrainJobs on the startd. A worker draining under a running job
    accepts a new job again once resumed; the running job was never touched."""
    b = plugin(condor, batch="rsm")
    try:
        condor.start_vm("lr1", 57, cores=2, memory=1500)
        wait_until("lr1 in the pool", lambda: "lr1" in b.snapshot((SMALL,)).workers, 30)
        [first] = condor.submit(1, 15, batch="rsm", requirements='MareaWorker == "lr1"')
        wait_until("the first job running", lambda: condor.jobs([first])[first]["JobStatus"] == 2, 30)
        b.drain("lr1", "test: scale down")
        wait_until("lr1 draining", lambda: b.snapshot((SMALL,)).workers["lr1"].draining, 15)
        b.resume("lr1")
        b.resume("lr1")  # idempotent
        wait_until("lr1 no longer draining", lambda: not b.snapshot((SMALL,)).workers["lr1"].draining, 30)
        [second] = condor.submit(1, 2, batch="rsm", requirements='MareaWorker == "lr1"')
        wait_until("the second job done on lr1", lambda: condor.jobs([second])[second]["JobStatus"] == 4, 60)
        assert condor.jobs([first])[first]["JobStatus"] == 2  # the first job still runs
        assert str(condor.jobs([second])[second]["LastRemoteHost"]).endswith("@lr1")
        wait_until("the first job done", lambda: condor.jobs([first])[first]["JobStatus"] == 4, 60)
        info = condor.jobs([first])[first]
        assert (info["ExitCode"], info["NumJobStarts"]) == (0, 1)  # never touched by the drain or the resume
    finally:
        condor.remove_jobs('JobBatchName == "rsm"')
        condor.power_off("lr1")
        b.close()
