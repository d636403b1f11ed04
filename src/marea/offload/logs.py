"""Container logs from podman's k8s-file log files: tail, bytes, timestamps, since, and follow.

Each line of a k8s-file log is `<RFC3339Nano> <stdout|stderr> <F|P> <text>`; `P` marks a partial line that the
next entry continues. Reading the file instead of calling `podman logs` lets one code path serve the local and
the Slurm backend (the file sits in the pod directory, on a shared filesystem for Slurm) and follow a log
without keeping a podman process per client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from marea.offload.wire import LogRequest, parse_time


@dataclass(frozen=True)
class Entry:
    stamp: str
    text: str  # with its trailing newline when the line was complete


def parse_chunk(data: str, pending: list[str]) -> list[Entry]:
    """Entries of the complete lines in `data`; partial (P) pieces accumulate in `pending`."""
    out = []
    for line in data.split("\n"):
        if not line:
            continue
        parts = line.split(" ", 3)
        if len(parts) < 3:
            continue
        stamp, tag = parts[0], parts[2]
        text = parts[3] if len(parts) == 4 else ""
        if tag == "P":
            pending.append(text)
            continue
        full = "".join(pending) + text
        pending.clear()
        out.append(Entry(stamp, full + "\n"))
    return out


def _since(req: LogRequest, now: datetime) -> datetime | None:
    cut = req.since_time
    if req.since_seconds:
        by_seconds = now - timedelta(seconds=req.since_seconds)
        cut = by_seconds if cut is None else max(cut, by_seconds)
    return cut


def select(entries: list[Entry], req: LogRequest, now: datetime | None = None) -> list[Entry]:
    cut = _since(req, now or datetime.now(UTC))
    if cut is not None:
        entries = [e for e in entries if (t := parse_time(e.stamp)) is None or t >= cut]
    if req.tail:
        entries = entries[-req.tail :]
    return entries


def render(entries: list[Entry], timestamps: bool) -> bytes:
    if timestamps:
        return "".join(f"{e.stamp} {e.text}" for e in entries).encode()
    return "".join(e.text for e in entries).encode()


def read_log(path: Path, req: LogRequest) -> bytes:
    """The whole answer of a non-follow request."""
    try:
        data = path.read_text(errors="replace")
    except FileNotFoundError:
        return b""
    out = render(select(parse_chunk(data, []), req), req.timestamps)
    return out[: req.limit_bytes] if req.limit_bytes else out


async def follow_log(
    path: Path, req: LogRequest, finished: Callable[[], bool], poll_s: float = 0.2
) -> AsyncIterator[bytes]:
    """What is there now (with tail / since), then every new line until the container ends.

    `finished` says whether the container has terminated (from the status cache); after it does, the rest of
    the file is sent and the stream ends. A client going away cancels the generator (Starlette does that).
    """
    sent = 0
    pending: list[str] = []
    offset = 0
    first = True
    first_chunk = True
    while True:
        done = finished()
        try:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        # only consume whole lines: a writer may be in the middle of one
        cut = data.rfind(b"\n") + 1
        offset += cut
        entries = parse_chunk(data[:cut].decode(errors="replace"), pending)
        if first:
            entries = select(entries, req)
            first = False
        elif req.since_seconds or req.since_time:
            entries = select(
                entries,
                LogRequest(
                    ref=req.ref,
                    container=req.container,
                    since_time=req.since_time,
                    since_seconds=req.since_seconds,
                ),
            )
        out = render(entries, req.timestamps)
        if req.limit_bytes:
            out = out[: max(0, req.limit_bytes - sent)]
        if out or first_chunk:  # the first read is always yielded (maybe empty): the caller opens with it
            first_chunk = False
            sent += len(out)
            yield out
        if (req.limit_bytes and sent >= req.limit_bytes) or (done and not data[cut:]):
            return
        await asyncio.sleep(poll_s)
