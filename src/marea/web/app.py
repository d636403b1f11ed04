"""The engine's web endpoint as an ASGI app: /metrics, /api/status, /api/history, /api/sd/node-exporter and /.

Read-only: nothing here changes the cluster. The status is read from the store with the same function as
`marea status --json`, so the page, the CLI and a script see one truth; the metrics and the history come from
the engine's `EngineMetrics`. The page's assets are package data (marea/web/static), served from the installed
package: no CDN, no build step.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from marea.engine.metrics import EngineMetrics
from marea.engine.status import status_report
from marea.engine.store import Store
from marea.monitoring import NODE_EXPORTER_PORT
from marea.web import static_dir

_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _decisions(request: Request) -> int:
    raw = request.query_params.get("decisions", "8")
    if not raw.isdigit() or not 1 <= int(raw) <= 200:
        raise ValueError("decisions: an integer from 1 to 200")
    return int(raw)


def make_app(store: Store, metrics: EngineMetrics) -> Starlette:
    """The app for one engine. `store` is the web's own connection to the engine's database."""
    static = static_dir()

    def index(_request: Request) -> Response:
        return FileResponse(static / "index.html", headers=_HEADERS)

    def metrics_endpoint(_request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST, headers=_HEADERS)

    def status(request: Request) -> Response:
        try:
            n = _decisions(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400, headers=_HEADERS)
        return JSONResponse(status_report(store, time.time(), decisions=n), headers=_HEADERS)

    def history(_request: Request) -> Response:
        return JSONResponse({"cluster": metrics.cluster, "samples": metrics.history()}, headers=_HEADERS)

    def node_exporters(_request: Request) -> Response:
        """Prometheus HTTP service discovery: the node exporters of the workers that have an address."""
        targets: list[dict[str, Any]] = [
            {
                "targets": [f"{r.address}:{NODE_EXPORTER_PORT}"],
                "labels": {"marea_instance": r.id, "marea_flavour": r.flavour},
            }
            for r in store.live_instances()
            if r.address
        ]
        return JSONResponse(targets, headers=_HEADERS)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/metrics", metrics_endpoint),
            Route("/api/status", status),
            Route("/api/history", history),
            Route("/api/sd/node-exporter", node_exporters),
            Mount("/static", StaticFiles(directory=static), name="static"),
        ]
    )
