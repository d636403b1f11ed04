"""The `marea` command line: one entry point for the engine, the offload server, clusters and the simulator.

Exit codes: 0 success, 1 a run-time failure, 2 bad usage or bad configuration (one clear line on stderr),
3 `marea run` refused because another engine already runs the cluster.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from marea.cluster.cli import app as cluster_app
from marea.config import ConfigError, MareaConfig, load_config
from marea.offload.cli import offload_app
from marea.sim.cli import simulate_command
from marea.systemd.cli import systemd_app

app = typer.Typer(
    name="marea",
    help="Elastic batch clusters on research clouds, and an interLink offload plugin.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Check and convert configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(cluster_app, name="cluster")
app.command("simulate")(simulate_command)
app.add_typer(offload_app, name="offload")
dashboards_app = typer.Typer(
    help="Grafana dashboard and Prometheus alerting rules for the engine.", no_args_is_help=True
)
app.add_typer(dashboards_app, name="dashboards")
app.add_typer(systemd_app, name="systemd")

err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from marea import package_version

        typer.echo(f"marea {package_version()}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print marea's version and exit"
    ),
) -> None:
    """Elastic batch clusters on research clouds, and an interLink offload plugin."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear line on stderr and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def load_or_exit(path: Path) -> MareaConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise fail(str(exc)) from None


@config_app.command("check")
def config_check(file: Path = typer.Argument(..., help="marea.toml to validate")) -> None:
    """Validate a marea.toml; exit 2 with one line naming the key when it is wrong."""
    cfg = load_or_exit(file)
    typer.echo(
        f"{file}: ok (cluster {cfg.cluster.name}, {cfg.cloud.driver} cloud, {cfg.batch.system} batch, "
        f"{cfg.policy.min_workers}-{cfg.policy.max_workers} workers, {len(cfg.flavours)} flavour(s))"
    )


@config_app.command("import-elastiq")
def config_import_elastiq(file: Path = typer.Argument(..., help="elastiq.conf to convert")) -> None:
    """Convert an elastiq.conf into marea TOML on stdout, with a comment on each key that changes meaning."""
    from marea.elastiq_import import convert

    try:
        typer.echo(convert(file), nl=False)
    except ConfigError as exc:
        raise fail(str(exc)) from None


@config_app.command("reference")
def config_reference() -> None:
    """Print the configuration reference (every key of marea.toml and cluster.toml) as Markdown, generated from
    the models: docs/configuration.md is this output."""
    from marea.config_reference import reference

    typer.echo(reference(), nl=False)


@app.command()
def run(
    config: Path = typer.Option(..., "-c", "--config", help="marea.toml"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
) -> None:
    """Run the elastic engine (a daemon; SIGTERM or Ctrl-C stops it cleanly, leaving the VMs to be adopted)."""
    from marea.batch.base import BatchError
    from marea.clouds.base import CloudError
    from marea.engine.runner import AlreadyRunning, LockLost, run_forever, setup_logging

    cfg = load_or_exit(config)
    setup_logging(cfg, verbose)
    try:
        run_forever(cfg)
    except AlreadyRunning as exc:  # exit 3: another engine runs this cluster (the line names it)
        raise fail(str(exc), 3) from None
    except LockLost as exc:
        raise fail(str(exc), 1) from None
    except (ConfigError, ValueError) as exc:
        raise fail(str(exc)) from None
    except NotImplementedError as exc:
        raise fail(str(exc)) from None
    except (CloudError, BatchError) as exc:
        raise fail(f"cannot start the engine: {exc}", 1) from None


@app.command()
def status(
    config: Path = typer.Option(..., "-c", "--config", help="marea.toml"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object on stdout"),
    explain: bool = typer.Option(False, "--explain", help="show every recent decision with its reason"),
) -> None:
    """Workers with states and ages, pending demand, and the last decisions with their reasons."""
    import json
    import time

    from marea.engine.status import never_ran_report, status_report
    from marea.engine.store import Store
    from marea.status_view import render_status

    cfg = load_or_exit(config)
    sqlite_file = None if "://" in cfg.cluster.state else cfg.path(cfg.cluster.state)
    if sqlite_file is not None and not sqlite_file.exists():
        report = never_ran_report(cfg.cluster.name, time.time())
    else:
        store = Store(cfg.state_url(), cfg.cluster.name)
        try:
            report = status_report(store, time.time(), decisions=50 if explain else 8)
        finally:
            store.close()
    if as_json:
        typer.echo(json.dumps(report))
    elif not report["engine_ran"] and not report["workers"] and not report["decisions"]:
        missing = sqlite_file is not None and not sqlite_file.exists()
        where = f"no state database at {sqlite_file}" if missing else "its state database holds no cycle"
        typer.echo(
            f"cluster {cfg.cluster.name}: the engine has never run ({where}); start it with `marea run -c {config}`"
        )
    else:
        render_status(Console(), report, explain)


#: the batch systems `marea demo` has a testbed for (marea.demo, marea.htcondor_demo)
DEMO_BATCHES = ("slurm", "htcondor")


@app.command()
def demo(
    jobs: int = typer.Option(12, "--jobs", min=1, help="jobs to submit"),
    job_seconds: float = typer.Option(20.0, "--job-seconds", min=0.0, help="how long each job runs"),
    max_workers: int = typer.Option(4, "--max-workers", min=1, help="max worker VMs (2 cores each)"),
    timeout: float = typer.Option(900.0, "--timeout", min=10.0, help="give up after this many seconds"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as one JSON line at the end"),
    batch: str = typer.Option("slurm", "--batch", help="the testbed's batch system: " + ", ".join(DEMO_BATCHES)),
    web: bool = typer.Option(False, "--web", help="serve the engine's live page during the demo and print its address"),
    web_listen: str = typer.Option("127.0.0.1:9180", "--web-listen", help="where --web listens (host:port)"),
) -> None:
    """The main job: real Slurm + the engine + the local cloud: a burst of jobs grows and shrinks the cluster."""
    from marea.demo import DemoError, result_json, run_demo

    if batch not in DEMO_BATCHES:
        raise fail(f"--batch: {batch!r} is not one of {', '.join(DEMO_BATCHES)}")
    if web and batch != "slurm":
        raise fail("--web: the live page is served in the Slurm demo only (--batch slurm)")
    try:
        if batch == "htcondor":
            from marea.htcondor_demo import run_htcondor_demo

            result = run_htcondor_demo(jobs=jobs, job_seconds=job_seconds, max_workers=max_workers, timeout_s=timeout)
        else:
            result = run_demo(
                jobs=jobs, job_seconds=job_seconds, max_workers=max_workers, timeout_s=timeout,
                web_listen=web_listen if web else "",
            )  # fmt: skip
    except DemoError as exc:
        raise fail(str(exc), 1) from None
    if as_json:
        typer.echo(result_json(result))
    else:
        from marea.status_view import render_demo

        render_demo(Console(), result)
    if not result.ok:
        raise typer.Exit(1)


@dashboards_app.command("grafana")
def dashboards_grafana() -> None:
    """Print the Grafana dashboard of the engine's metrics (JSON to import; datasource chosen in Grafana)."""
    try:
        from marea.monitoring.grafana import dumps
    except ModuleNotFoundError:
        raise fail("marea dashboards grafana needs the grafana extra: pip install 'marea[grafana]'", 1) from None
    typer.echo(dumps(), nl=False)


@dashboards_app.command("prometheus-rules")
def dashboards_prometheus_rules() -> None:
    """Print the Prometheus alerting rules for the engine (engine down, failed boots, quota, waiting jobs)."""
    from marea.monitoring import alert_rules_path

    typer.echo(alert_rules_path().read_text(), nl=False)


def main() -> None:
    from marea.extras import missing_extra_message

    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except ModuleNotFoundError as exc:  # an optional extra is not installed: say which, not a traceback
        message = missing_extra_message(exc)
        if message is None:
            raise
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
