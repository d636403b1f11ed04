"""Run calls in another network namespace, from one dedicated thread.

Why: a test pool's daemons (and a master in a container) bind 0.0.0.0 inside their own network namespace, so
the bindings must connect from inside it. Network namespaces belong to threads in Linux, so one thread that
entered the namespace with setns(2) can make every bindings call there while the rest of marea (the cloud
driver, the store, the web server) stays in the host's namespace. Empty namespace name: calls run in place.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from marea.batch.base import BatchError

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000


def _enter(path: str) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class NamespaceRunner:
    """Calls `fn()` inside network namespace `netns` (a name under /run/netns, or a path), or in place."""

    def __init__(self, netns: str = "") -> None:
        self.path = ""
        self._pool: ThreadPoolExecutor | None = None
        if netns:
            self.path = netns if netns.startswith("/") else f"/run/netns/{netns}"
            if not os.path.exists(self.path):
                raise BatchError(f"network namespace {netns!r} does not exist")
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="marea-netns", initializer=_enter,
                                            initargs=(self.path,))  # fmt: skip

    def run(self, fn: Callable[[], T]) -> T:
        if self._pool is None:
            return fn()
        try:
            return self._pool.submit(fn).result()
        except RuntimeError as exc:  # the initializer failed: the pool is broken
            raise BatchError(f"cannot enter network namespace {self.path}: {exc}") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
