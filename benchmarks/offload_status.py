"""/status throughput and p99 latency of the offload server with 10,000 active pods, over its unix socket,
side by side (one run, same machine, same client) with a bare uvicorn ASGI handler that returns the same
bytes.

    .venv/bin/python benchmarks/offload_status.py [--pods 10000] [--seconds 5] [--connections 16] [--rounds 3]

The marea server is the real app (FastAPI, wire parsing, the service's cache, the SQLite pod store loaded at
start) on uvicorn; only the backend is a stand-in whose bulk refresh returns fixed statuses, because what is
measured is the cost of answering /status, which by design never touches a backend. Each request carries one
full v1.Pod (as interLink 0.6 sends it), for pods picked across the 10,000. The bare handler reads the same
request body and answers the byte-identical response of one pod. The client is a raw asyncio HTTP/1.1
keep-alive load generator (httpx would be the bottleneck) in its own process.
Goal (issue 3): >= 5,000 calls/s and >= 0.5 x the bare handler.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
POD = json.loads((ROOT / "tests" / "data" / "offload" / "create_busybox.json").read_text())["pod"]


def pod_for(i: int) -> dict[str, Any]:
    pod = json.loads(json.dumps(POD))
    pod["metadata"]["uid"] = f"00000000-0000-4000-8000-{i:012d}"
    pod["metadata"]["name"] = f"bench-{i}"
    return pod


def run_marea(sock: str, pods: int, state: str, parse_cache: int) -> None:
    """The real offload app with a stand-in backend, its store pre-filled with `pods` running pods."""
    import uvicorn

    from marea.offload.app import create_app
    from marea.offload.backends.base import Backend, PodStatuses, container_status
    from marea.offload.server import unix_socket
    from marea.offload.service import OffloadService
    from marea.offload.state import PodRecord, PodStore

    class FixedBackend(Backend):
        name = "bench"

        def create(self, req: Any, rec: PodRecord) -> None:
            raise NotImplementedError

        def delete(self, rec: PodRecord) -> None:
            pass

        def refresh(self, recs: list[PodRecord]) -> dict[str, PodStatuses]:
            running = {"running": {"startedAt": "2026-11-22T04:00:05Z"}}
            done = {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": "2026-11-22T04:00:01Z",
                    "finishedAt": "2026-11-22T04:00:04Z",
                }
            }
            img = "docker.io/library/busybox:latest"
            return {
                r.uid: PodStatuses(
                    init=[container_status("prepare", img, done)],
                    containers=[container_status("main", img, running)],
                )
                for r in recs
            }

        def logs(self, rec: PodRecord, req: Any, finished: Callable[[], bool]) -> Any:
            raise NotImplementedError

        def capacity(self, recs: list[PodRecord]) -> dict[str, Any]:
            return {"cpu": "0", "memory": "0", "pods": "0"}

    store = PodStore(Path(state) / "offload.db")
    if not store.all():
        img = "docker.io/library/busybox:latest"
        for i in range(pods):
            p = pod_for(i)["metadata"]
            store.put(
                PodRecord(
                    uid=p["uid"],
                    name=p["name"],
                    namespace=p["namespace"],
                    backend="bench",
                    phase="created",
                    jid=str(i),
                    containers={"init": [["prepare", img]], "containers": [["main", img]]},
                )
            )
    app = create_app(OffloadService(FixedBackend(), store, refresh_s=5.0, parse_cache_size=parse_cache))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    server.run(sockets=[unix_socket(Path(sock))])


def run_bare(sock: str, body: bytes) -> None:
    """A bare ASGI handler on the same uvicorn: read the request body, answer fixed bytes."""
    import uvicorn

    from marea.offload.server import unix_socket

    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            msg = await receive()
            more = msg.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    server.run(sockets=[unix_socket(Path(sock))])


def requests_for(pods: int) -> list[bytes]:
    """One request per pod, all different (a pod's body repeats only when it is polled again)."""
    out = []
    for k in range(pods):
        body = json.dumps([pod_for((k * 7919) % pods)]).encode()
        out.append(
            b"GET /status HTTP/1.1\r\nhost: offload\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
    return out


async def _conn(sock: str, reqs: list[bytes], stop_at: float, lat: list[float], first: int) -> int:
    reader, writer = await asyncio.open_unix_connection(sock)
    i, n = first, 0
    while True:
        now = time.perf_counter()
        if now >= stop_at:
            break
        writer.write(reqs[i % len(reqs)])
        i += 1
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {head[:100]!r}")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        lat.append(time.perf_counter() - now)
        n += 1
    writer.close()
    return n


def load(sock: str, reqs: list[bytes], seconds: float, connections: int, out: Any) -> None:
    async def main() -> tuple[int, list[float]]:
        lat: list[float] = []
        stop_at = time.perf_counter() + seconds
        counts = await asyncio.gather(*[_conn(sock, reqs, stop_at, lat, c * 13) for c in range(connections)])
        return sum(counts), lat

    n, lat = asyncio.run(main())
    lat.sort()
    out.put(
        {
            "calls_per_s": n / seconds,
            "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))],
            "calls": n,
        }
    )


def measure(sock: str, reqs: list[bytes], seconds: float, connections: int) -> dict[str, float]:
    q: Any = mp.Queue()
    warm = mp.Process(target=load, args=(sock, reqs, 1.0, connections, q))
    warm.start()
    q.get()
    warm.join()
    p = mp.Process(target=load, args=(sock, reqs, seconds, connections, q))
    p.start()
    res: dict[str, float] = q.get()
    p.join()
    return res


def wait_socket(sock: str, proc: mp.Process, timeout: float = 120) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.is_alive():
            raise RuntimeError("server process exited")
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock)
            s.close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--parse-cache", type=int, default=16384, help="server's parsed-body cache size (0: parse every request)"
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mbench", dir="/tmp"))
    reqs = requests_for(args.pods)

    marea_sock = str(work / "marea.sock")
    server = mp.Process(target=run_marea, args=(marea_sock, args.pods, str(work), args.parse_cache), daemon=True)
    server.start()
    wait_socket(marea_sock, server)
    import http.client  # one real request: the bare handler answers these exact bytes
    import socket

    class UHTTP(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(marea_sock)

    c = UHTTP("offload")
    c.request("GET", "/status", body=json.dumps([pod_for(1)]), headers={"content-type": "application/json"})
    sample = c.getresponse().read()
    c.close()
    assert json.loads(sample)[0]["containers"][0]["state"]["running"], sample[:200]

    results = {}
    bare_sock = str(work / "bare.sock")
    bare = mp.Process(target=run_bare, args=(bare_sock, sample), daemon=True)
    bare.start()
    wait_socket(bare_sock, bare)
    # alternate, `rounds` times each, keep the best run of each: the machine is shared with other work, and
    # the best run is the one least disturbed by it
    for _ in range(args.rounds):
        for label, sock in (("marea", marea_sock), ("bare", bare_sock)):
            r = measure(sock, reqs, args.seconds, args.connections)
            print(f"  run {label:5} {r['calls_per_s']:8.0f} calls/s  p99 {r['p99_ms']:.2f} ms", flush=True)
            if label not in results or r["calls_per_s"] > results[label]["calls_per_s"]:
                results[label] = r
    for p in (server, bare):
        p.terminate()
        p.join(10)

    m, b = results["marea"], results["bare"]
    print(
        f"pods={args.pods} connections={args.connections} seconds={args.seconds} parse_cache={args.parse_cache} "
        f"distinct requests={len(reqs)} request={len(reqs[0])} B response={len(sample)} B"
    )
    print(f"{'server':8} {'calls/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for label, r in (("marea", m), ("bare", b)):
        print(f"{label:8} {r['calls_per_s']:10.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}")
    ratio = m["calls_per_s"] / b["calls_per_s"]
    print(f"ratio marea/bare = {ratio:.2f}  (goal >= 0.5; absolute goal >= 5000 calls/s)")
    ok = ratio >= 0.5 and m["calls_per_s"] >= 5000
    print("GOAL MET" if ok else "GOAL NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
