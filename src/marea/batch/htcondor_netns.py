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
from concurrent.futures import BrokenExecutor, ThreadPoolExecutor
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
    """Calls `fn()` inside network namespace `netns` (a name under /run/netns, or a path), or in place.

    The thread enters the namespace on the first call, not at construction: a namespace that does not exist
    yet (a test pool still starting) is a BatchError for that call, and the next call tries again.
    """

    def __init__(self, netns: str = "") -> None:
        self.path = ""
        if netns:
            self.path = netns if netns.startswith("/") else f"/run/netns/{netns}"
        self._pool: ThreadPoolExecutor | None = None

    def run(self, fn: Callable[[], T]) -> T:
        if not self.path:
            return fn()
        if self._pool is None:
            if not os.path.exists(self.path):
                raise BatchError(f"network namespace {self.path} does not exist")
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="marea-netns", initializer=_enter,
                                            initargs=(self.path,))  # fmt: skip
        try:
            return self._pool.submit(fn).result()
        except BrokenExecutor as exc:  # the thread could not enter the namespace: start over next time
            self.close()
            raise BatchError(f"cannot enter network namespace {self.path}: {exc}") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
