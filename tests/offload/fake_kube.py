"""An HTTP-level fake of the Kubernetes API server, on a real TCP socket, for the kubernetes backend's tests.

NOT a real API server (none can run on this machine): it stores the objects it is sent, answers LIST, DELETE,
log
the way the real REST API does for the calls marea makes, and records every request so the tests can check
them. The objects themselves are checked separately against the official schemas (kubernetes-validate).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

TOKEN = "fake-kube-token-123"


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kind, ns, name) -> object
        self.requests: list[tuple[str, str, str]] = []  # method, path, query
        self.logs: dict[tuple[str, str, str], list[str]] = {}  # (ns, pod, container) -> lines
        self.follow_delay = 0.3
        #: when set, every log read answers this HTTP status (an API server or kubelet failing)
        self.log_error = 0
        self.version = 100
        self.events: list[tuple[int, str, dict[str, Any]]] = []  # pod watch events: (resourceVersion, type, pod)
        self.app = Starlette(
            routes=[
                Route("/api/v1/namespaces", self.create_ns, methods=["POST"]),
                Route("/api/v1/namespaces/{ns}/pods/{name}/log", self.pod_log, methods=["GET"]),
                Route("/api/v1/namespaces/{ns}/{kind}", self.create, methods=["POST"]),
                Route("/api/v1/namespaces/{ns}/{kind}/{name}", self.delete, methods=["DELETE"]),
                Route("/api/v1/pods", self.list_pods, methods=["GET"]),
                Route("/api/v1/nodes", self.nodes, methods=["GET"]),
            ]
        )
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self.thread.start()
        while not self.server.started:
            threading.Event().wait(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    def kubeconfig(self) -> str:
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "remote",
                "clusters": [{"name": "c", "cluster": {"server": self.url}}],
                "users": [{"name": "u", "user": {"token": TOKEN}}],
                "contexts": [{"name": "remote", "context": {"cluster": "c", "user": "u"}}],
            }
        )

    def _auth(self, request: Request) -> Response | None:
        self.requests.append((request.method, request.url.path, request.url.query))
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"kind": "Status", "code": 401, "message": "Unauthorized"}, 401)
        return None

    async def create_ns(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        obj = await request.json()
        key = ("namespaces", "", obj["metadata"]["name"])
        if key in self.objects:
            return JSONResponse({"kind": "Status", "code": 409, "reason": "AlreadyExists"}, 409)
        self.objects[key] = obj
        return JSONResponse(obj, 201)

    async def create(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        obj = await request.json()
        ns, kind = request.path_params["ns"], request.path_params["kind"]
        if ("namespaces", "", ns) not in self.objects:
            return JSONResponse({"kind": "Status", "code": 404, "message": f'namespaces "{ns}" not found'}, 404)
        key = (kind, ns, obj["metadata"]["name"])
        if key in self.objects:
            return JSONResponse({"kind": "Status", "code": 409, "reason": "AlreadyExists"}, 409)
        if kind == "pods":
            obj["status"] = {"phase": "Pending"}
        self.objects[key] = obj
        if kind == "pods":
            self.event("ADDED", obj)
        return JSONResponse(obj, 201)

    def event(self, kind: str, pod: dict[str, Any]) -> None:
        self.version += 1
        pod["metadata"]["resourceVersion"] = str(self.version)
        self.events.append((self.version, kind, json.loads(json.dumps(pod))))

    def modified(self, ns: str, name: str) -> None:
        """The test changed a pod's status in place: tell the watchers, as the API server would."""
        self.event("MODIFIED", self.objects[("pods", ns, name)])

    async def delete(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        key = (request.path_params["kind"], request.path_params["ns"], request.path_params["name"])
        if key not in self.objects:
            return JSONResponse({"kind": "Status", "code": 404, "reason": "NotFound"}, 404)
        obj = self.objects.pop(key)
        if key[0] == "pods":
            self.event("DELETED", obj)
        return JSONResponse(obj, 200)

    async def list_pods(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        key, _, value = request.query_params.get("labelSelector", "").partition("=")

        def selected(o: dict[str, Any]) -> bool:
            return not key or o["metadata"].get("labels", {}).get(key) == value

        if request.query_params.get("watch") == "true":
            since = int(request.query_params.get("resourceVersion") or 0)

            async def stream() -> Any:
                sent = since
                while not self.server.should_exit:
                    for version, kind, obj in list(self.events):
                        if version > sent and (kind == "ERROR" or selected(obj)):
                            yield json.dumps({"type": kind, "object": obj}).encode() + b"\n"
                        sent = max(sent, version)
                    await asyncio.sleep(0.05)

            return StreamingResponse(stream(), media_type="application/json")
        items = [o for (kind, _, _), o in self.objects.items() if kind == "pods" and selected(o)]
        meta = {"resourceVersion": str(self.version)}
        return JSONResponse({"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": items})

    async def nodes(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        node = {
            "metadata": {"name": "w1", "labels": {"pool": "offload"}},
            "status": {"allocatable": {"cpu": "7800m", "memory": "16Gi", "pods": "110"}},
        }
        return JSONResponse({"kind": "NodeList", "items": [node]})

    async def pod_log(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        q = request.query_params
        if self.log_error:
            body = {"kind": "Status", "code": self.log_error, "message": "kubelet unreachable"}
            return JSONResponse(body, self.log_error)
        lines = self.logs.get((request.path_params["ns"], request.path_params["name"], q.get("container", "")))
        if lines is None:
            return JSONResponse({"kind": "Status", "code": 404, "message": "container not found"}, 404)
        if q.get("tailLines"):
            lines = lines[-int(q["tailLines"]) :]
        if q.get("follow") == "true":

            async def gen() -> Any:
                for line in lines:
                    yield (line + "\n").encode()
                    await asyncio.sleep(self.follow_delay)

            return StreamingResponse(gen(), media_type="text/plain")
        return PlainTextResponse("".join(line + "\n" for line in lines))
