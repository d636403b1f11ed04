"""Build the controllers a marea.toml describes and run them over a trace: the glue of `marea simulate`.

Every policy gets the same cloud (boot time, failures, quota), the same first flavour for its workers and the
same minimum and maximum number of workers, so the figures differ only by the scaling decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial

from marea.config import MareaConfig
from marea.sim.cluster import CloudModel
from marea.sim.controllers import Controller, ElastiqController, MareaController, StaticController
from marea.sim.oracle import instant, oracle
from marea.sim.simulator import PolicyResult, simulate
from marea.sim.trace import Trace

POLICIES = ("marea", "elastiq", "static", "oracle", "instant")  # also in marea.sim.cli, which must not import numpy


class UnknownPolicy(ValueError):
    pass


def cloud_model(cfg: MareaConfig) -> CloudModel:
    s = cfg.simulate
    return CloudModel(
        boot_time_s=s.boot_time_s,
        boot_time_jitter_s=s.boot_time_jitter_s,
        boot_failure_rate=s.boot_failure_rate,
        quota_instances=s.quota_instances,
        quota_cores=s.quota_cores,
        seed=s.seed,
        boot_price_vm_s=s.boot_price_vm_s,
    )


#: the batch systems' default placement of jobs on workers (docs/simulator.md cites where each comes from)
DEFAULT_PLACEMENT = {"slurm": "pack", "htcondor": "spread", "kubernetes": "spread"}


def placement(cfg: MareaConfig) -> str:
    """`[simulate] placement`, with auto resolved from the batch system."""
    p = cfg.simulate.placement
    return DEFAULT_PLACEMENT.get(cfg.batch.system, "pack") if p == "auto" else p


def make_controller(name: str, cfg: MareaConfig, idle_threshold_s: float | None = None) -> Controller:
    """The controller called `name` (marea, elastiq, static), configured from `cfg`."""
    settings = cfg.policy_settings()
    if idle_threshold_s is not None:
        settings = replace(settings, idle_threshold_s=idle_threshold_s)
    flavour = settings.flavours[0]
    if name == "marea":
        return MareaController(settings, cfg.engine.interval_s)
    if name == "elastiq":
        e = cfg.simulate.elastiq
        return ElastiqController(
            flavour,
            settings.min_workers,
            settings.max_workers,
            check_queue_every_s=e.check_queue_every_s,
            check_vms_every_s=e.check_vms_every_s,
            waiting_jobs_threshold=e.waiting_jobs_threshold,
            waiting_jobs_time_s=e.waiting_jobs_time_s,
            n_jobs_per_vm=e.n_jobs_per_vm,
            idle_for_time_s=e.idle_for_time_s,
            estimated_vm_deploy_time_s=e.estimated_vm_deploy_time_s,
        )
    if name == "static":
        n = cfg.simulate.static_workers
        return StaticController(flavour, settings.max_workers if n is None else n)
    raise UnknownPolicy(f"unknown policy {name!r}: choose among {', '.join(POLICIES)}")


def runnable(trace: Trace, cfg: MareaConfig) -> Trace:
    """The jobs that fit the first flavour (the one every policy boots). A job bigger than a worker can
    never start under any policy (jobs do not span VMs); it is taken out before the replay, so that it does
    not keep a queue non-empty forever, and counted in `jobs_never_started`."""
    f = cfg.policy_settings().flavours[0]
    jobs = tuple(j for j in trace.jobs if j.cores <= f.cores and j.memory_mb <= f.memory_mb and j.gpus <= f.gpus)
    return Trace(trace.name, jobs, trace.dropped, trace.dropped_reason)


def run_policy(
    name: str,
    trace: Trace,
    cfg: MareaConfig,
    idle_threshold_s: float | None = None,
    advance: Callable[[int], None] | None = None,
) -> PolicyResult:
    """One policy over `trace`. The oracle and the instant cluster are computed, the others simulated. `advance`
    gets the number of trace jobs replayed so far, up to len(trace.jobs) at the end."""
    s = cfg.simulate
    fitting = runnable(trace, cfg)
    if name in ("oracle", "instant"):
        settings = cfg.policy_settings()
        result = (oracle if name == "oracle" else instant)(
            fitting, settings.flavours[0], settings.min_workers, settings.max_workers, s.boot_time_s,
            s.boot_price_vm_s,
        )  # fmt: skip
    else:
        controller = make_controller(name, cfg, idle_threshold_s)
        result = simulate(fitting, controller, cloud_model(cfg), s.horizon_s, s.sample_every_s, advance, placement(cfg))
    unfit = len(trace.jobs) - len(fitting.jobs)
    if advance is not None:
        advance(len(trace.jobs))
    if unfit:
        result = replace(result, jobs=len(trace.jobs), jobs_never_started=result.jobs_never_started + unfit)
    return result


def run_policies(
    names: Sequence[str],
    trace: Trace,
    cfg: MareaConfig,
    progress: Callable[[str], None] | None = None,
    advance: Callable[[str, int], None] | None = None,
) -> dict[str, PolicyResult]:
    """Every policy of `names` over `trace`: `progress(name)` when one starts, `advance(name, jobs replayed)`
    as it goes."""
    for name in names:
        if name not in POLICIES:
            raise UnknownPolicy(f"unknown policy {name!r}: choose among {', '.join(POLICIES)}")
    results: dict[str, PolicyResult] = {}
    for name in names:
        if progress:
            progress(name)
        step = None if advance is None else partial(advance, name)
        results[name] = run_policy(name, trace, cfg, advance=step)
    return results
