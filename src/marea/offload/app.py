"""The interLink plugin HTTP API (FastAPI): /create /status /getLogs /delete /pinglink, /healthz, /metrics.

Bodies are read raw and checked by `marea.offload.wire`, not by FastAPI models: the pod must reach the
backend with every field, the error bodies must be interLink-friendly one-liners, and /status must be cheap
(it is the hot path: interLink polls it every 5 s per active pod).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from marea.offload.backends.base import BackendError
from marea.offload.service import OffloadService
from marea.offload.wire import WireError, parse_create, parse_logs, parse_pod

log = logging.getLogger("marea.offload")

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class BearerAuth:
    """Pure ASGI middleware (cheap on the hot path): every route but /healthz needs `Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        if scope["type"] == "http" and scope.get("path") != "/healthz":
            got = b""
            for k, v in scope.get("headers", []):
                if k == b"authorization":
                    got = v
                    break
            if not hmac.compare_digest(got, self.expected):
                body = b"missing or wrong bearer token"
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


JSON = "application/json"
_JSON_HEADERS = [(b"content-type", b"application/json")]
_TEXT_HEADERS = [(b"content-type", b"text/plain; charset=utf-8")]
#: a pod with its ConfigMaps and Secrets (each at most 1 MiB in Kubernetes) fits many times over
MAX_BODY = 64 << 20
ROUTES = ("/create", "/status", "/getLogs", "/delete", "/pinglink", "/healthz", "/metrics")


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Callable[[], Awaitable[Any]], limit: int) -> bytes | None:
    """The whole request body, counted as it streams (Content-Length or chunked alike): BodyTooLarge past
    `limit` bytes, None if the client went away."""
    chunks = []
    size = 0
    more = True
    while more:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        more = msg.get("more_body", False)
    return b"".join(chunks)


class StatusFastPath:
    """/status as a pure ASGI handler in front of FastAPI, and the body limit of every route.

    /status is the hot path (interLink polls every 5 s per pod), and Starlette's routing and Request/Response
    objects would cost more than the answer itself, which is one parse of the pod and one lookup in the status
    cache. The ping (`[]`) is answered here too, from the backend's capacity.

    Every request body is read here, counting bytes as they arrive, so `max_body` holds for a chunked body as
    for one with a Content-Length (which alone would be the client's word); the other routes get the body
    replayed, then the real `receive` (a streamed log still sees the client go away).
    """

    def __init__(self, app: ASGIApp, service: OffloadService, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.service = service
        self.max_body = max_body
        self.ok = service.metrics.requests.labels("/status", "200")

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body too large (max {self.max_body} bytes)".encode()
        for key, value in scope.get("headers", ()):
            if key == b"content-length" and value.isdigit() and int(value) > self.max_body:
                await _answer(send, 413, _TEXT_HEADERS, too_large)
                return
        try:
            body = await read_body(receive, self.max_body)
        except BodyTooLarge:
            path = scope["path"] if scope["path"] in ROUTES else "other"  # bounded label values
            self.service.metrics.requests.labels(path, "413").inc()
            await _answer(send, 413, _TEXT_HEADERS, too_large)
            return
        if body is None:
            return
        if scope["path"] != "/status" or scope["method"] not in ("GET", "POST"):
            replayed = False

            async def replay() -> Any:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
            return
        try:
            answer = self.service.status_answer(body)
        except WireError as exc:
            self.service.metrics.requests.labels("/status", str(exc.status)).inc()
            await _answer(send, exc.status, _TEXT_HEADERS, exc.message.encode())
            return
        if answer is not None:
            self.ok.inc()
        else:  # the ping: resources from the backend
            try:
                answer = json.dumps(await self.service.ping()).encode()
            except BackendError as exc:
                self.service.metrics.requests.labels("/pinglink", "502").inc()
                log.warning("ping: backend error: %s", exc)
                await _answer(send, 502, _TEXT_HEADERS, f"backend error: {exc}".encode())
                return
            self.service.metrics.requests.labels("/pinglink", "200").inc()
        await _answer(send, 200, _JSON_HEADERS, answer)


async def _answer(
    send: Callable[[Any], Awaitable[None]], status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


def create_app(service: OffloadService, token: str | None = None, max_body: int = MAX_BODY) -> ASGIApp:
    """The ASGI application uvicorn serves: [bearer auth] -> /status fast path -> the FastAPI app."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="marea offload (interLink plugin)",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    count = service.metrics.requests

    @app.exception_handler(WireError)
    async def wire_error(request: Request, exc: WireError) -> Response:
        count.labels(request.url.path, str(exc.status)).inc()
        return PlainTextResponse(exc.message, status_code=exc.status)

    @app.exception_handler(BackendError)
    async def backend_error(request: Request, exc: BackendError) -> Response:
        count.labels(request.url.path, "502").inc()
        log.warning("%s: backend error: %s", request.url.path, exc)
        return PlainTextResponse(f"backend error: {exc}", status_code=502)

    async def create(request: Request) -> Response:
        reqs = parse_create(await request.body())
        answers = [await service.create(r) for r in reqs]
        count.labels("/create", "200").inc()
        # 0.4.x sent a list and read a list back; 0.5+ sends and reads one object
        body = answers if len(reqs) > 1 or (await request.body()).lstrip().startswith(b"[") else answers[0]
        return Response(json.dumps(body).encode(), media_type=JSON)

    async def ping(request: Request) -> Response:
        count.labels("/pinglink", "200").inc()
        return Response(json.dumps(await service.ping()).encode(), media_type=JSON)

    async def get_logs(request: Request) -> Response:
        req = parse_logs(await request.body())
        stream = service.logs(req)
        if req.follow:
            # the first chunk before the 200: a backend that cannot open the log raises here, not mid-stream
            first = await anext(stream, b"")
            count.labels("/getLogs", "200").inc()
            return StreamingResponse(_prepend(first, stream), media_type="text/plain")
        chunks = [c async for c in stream]
        count.labels("/getLogs", "200").inc()
        return Response(b"".join(chunks), media_type="text/plain")

    async def delete(request: Request) -> Response:
        ref = parse_pod(await request.body())
        removed = await service.delete(ref)
        count.labels("/delete", "200").inc()
        return PlainTextResponse("deleted" if removed else "not found (already deleted)")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # plain Starlette routes: the handlers read raw bodies, so FastAPI's dependency machinery would only cost
    app.add_route("/create", create, methods=["POST"])
    app.add_route("/getLogs", get_logs, methods=["GET", "POST"])
    app.add_route("/delete", delete, methods=["POST", "DELETE"])
    app.add_route("/pinglink", ping, methods=["GET", "POST"])
    app.add_route("/healthz", healthz, methods=["GET"])
    app.add_route("/metrics", metrics, methods=["GET"])
    # /status (and its `[]` ping) is served by StatusFastPath, outside FastAPI's middleware stack: on the hot
    # path every layer counts
    outer: ASGIApp = StatusFastPath(app, service, max_body)
    return BearerAuth(outer, token) if token else outer
