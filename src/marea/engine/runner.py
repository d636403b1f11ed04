"""`marea run`: the reconcile loop as a daemon, stopped cleanly by SIGTERM or SIGINT.

Stopping does not touch the VMs: they keep running their jobs, and the next start adopts them. An exclusive
lock on the cluster's state (engine/lock.py) keeps a second engine from driving the same cluster at the same time.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from marea.batch.factory import make_batch
from marea.clouds.factory import make_cloud
from marea.config import ConfigError, MareaConfig
from marea.engine.lock import AlreadyRunning, EngineLock, LockLost, lock_for
from marea.engine.metrics import EngineMetrics
from marea.engine.reconciler import Reconciler
from marea.engine.store import Store
from marea.engine.watch import QueueWatch
from marea.web.app import make_app
from marea.web.server import ListenError, WebServer, parse_listen

__all__ = ["AlreadyRunning", "LockLost", "build_reconciler", "run_forever", "setup_logging"]

log = logging.getLogger("marea.engine")


def setup_logging(cfg: MareaConfig, verbose: bool = False) -> None:
    handler: logging.Handler = (
        logging.FileHandler(cfg.path(cfg.engine.log_file)) if cfg.engine.log_file else logging.StreamHandler()
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("marea")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def build_reconciler(cfg: MareaConfig, metrics: EngineMetrics | None = None) -> Reconciler:
    return Reconciler(
        cluster=cfg.cluster.name,
        store=Store(cfg.state_url(), cfg.cluster.name),
        cloud=make_cloud(cfg),
        batch=make_batch(cfg),
        settings=cfg.policy_settings(),
        user_data_template=cfg.user_data_template(),
        variables={f"MAREA_VAR_{k.upper()}": v for k, v in cfg.worker.variables.items()},
        clock=time.time,
        absent_grace_s=cfg.engine.absent_grace_s,
        recorder=metrics,
    )


def start_web(cfg: MareaConfig, metrics: EngineMetrics) -> tuple[WebServer, Store] | None:
    """The web endpoint of `[web] listen`, on its own store connection; None when off or it cannot listen."""
    if not cfg.web.listen:
        return None
    store = Store(cfg.state_url(), cfg.cluster.name)
    try:
        server = WebServer(make_app(store, metrics), parse_listen(cfg.web.listen))
    except ListenError as exc:
        log.error("%s; the engine runs on without its web endpoint", exc)
        store.close()
        return None
    server.start()
    return server, store


def engine_lock(cfg: MareaConfig) -> EngineLock:
    url = cfg.state_url()
    path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    return lock_for(url, path, cfg.cluster.name)


def check_daemon_credentials(cfg: MareaConfig) -> None:
    """Refuse credentials that expire under a daemon.

    An OIDC access token (auth_type v3oidcaccesstoken) lives about an hour at INDIGO IAM and EGI Check-in;
    keystoneauth cannot renew it, so the engine would lose the cloud mid-scale-down and leave workers behind.
    Refreshing needs the IdP client secret plus a refresh token or the user's password on the master, which is
    more to steal than an application credential: one project, revocable, its roles restricted, no IdP on
    the path. So the daemon takes an application credential (or a password); docs/reliability.md says how to
    make one from an OIDC login.
    """
    if cfg.cloud.driver == "openstack" and cfg.cloud.openstack.auth_type == "v3oidcaccesstoken":
        raise ConfigError(
            "cloud.openstack.auth_type: an OIDC access token expires under a daemon; give `marea run` an "
            "application credential (auth_type = v3applicationcredential, see docs/reliability.md)"
        )


def run_forever(cfg: MareaConfig, stop: threading.Event | None = None, max_cycles: int | None = None) -> None:
    stop = stop or threading.Event()
    check_daemon_credentials(cfg)
    lock = engine_lock(cfg)
    lock.acquire()  # AlreadyRunning: another engine holds the cluster

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping after this cycle", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    metrics = EngineMetrics(cfg.cluster.name, {f.name: f.cores for f in cfg.flavours})
    try:
        rec = build_reconciler(cfg, metrics)
    except BaseException:
        lock.release()
        raise
    web = start_web(cfg, metrics)
    log.info(
        "engine started: cluster %s, %s cloud, %s batch, interval %g s",
        cfg.cluster.name,
        rec.cloud.name,
        rec.batch.name,
        cfg.engine.interval_s,
    )
    cycles = 0
    watch = QueueWatch(rec.batch, cfg.engine.watch_interval_s)
    try:
        while not stop.is_set():
            started = time.monotonic()
            lock.check()  # LockLost: stop rather than act beside a possible successor
            try:
                rec.cycle()
            except Exception:  # one bad cycle must not kill the daemon; the next one starts from the store
                log.exception("reconcile cycle failed")
            metrics.cycle_duration(time.monotonic() - started)
            cycles += 1
            if max_cycles is not None and cycles >= max_cycles:
                break
            watch.wait(stop, started + cfg.engine.interval_s)
    finally:
        if web is not None:
            server, web_store = web
            server.stop()
            web_store.close()
        rec.cloud.close()
        rec.batch.close()
        rec.store.close()
        lock.release()
        log.info("engine stopped")
