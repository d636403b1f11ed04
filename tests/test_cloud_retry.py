"""The retry policy of idempotent cloud calls (clouds/retry.py): which errors are tried again, how often, and
what the engine is told. The calls here are plain functions; the campaign against a real cloud through a faulty
proxy is tests/openstack/test_chaos_cloud.py."""

from __future__ import annotations

import pytest

from marea.clouds.base import CloudError, CloudErrorKind
from marea.clouds.retry import RetryLog, summary, with_retries


def failing(kinds: list[CloudErrorKind], calls: list[int]) -> object:
    def fn() -> str:
        calls.append(1)
        if kinds:
            kind = kinds.pop(0)
            raise CloudError(f"openstack list servers: boom (HTTP {503 if kind is CloudErrorKind.SERVER_ERROR else 0})",
                             kind)  # fmt: skip
        return "ok"

    return fn


def test_transient_errors_are_retried_with_backoff_and_recorded() -> None:
    calls: list[int] = []
    log = RetryLog()
    fn = failing([CloudErrorKind.SERVER_ERROR, CloudErrorKind.TIMEOUT], calls)
    assert with_retries(fn, "list servers", log, initial_s=0.01, max_wait_s=0.05) == "ok"  # type: ignore[arg-type]
    assert len(calls) == 3
    events = log.drain()
    assert [e.attempt for e in events] == [1, 2] and all(e.wait_s > 0 for e in events)
    assert log.drain() == []
    text = summary(events)
    assert text.startswith("2 cloud call(s) retried") and "list servers x2" in text


def test_a_persistent_transient_error_gives_up_after_three_calls() -> None:
    calls: list[int] = []
    fn = failing([CloudErrorKind.SERVER_ERROR] * 5, calls)
    with pytest.raises(CloudError) as info:
        with_retries(fn, "read limits", RetryLog(), initial_s=0.01, max_wait_s=0.02)  # type: ignore[arg-type]
    assert len(calls) == 3 and info.value.kind is CloudErrorKind.SERVER_ERROR


@pytest.mark.parametrize("kind", [CloudErrorKind.QUOTA, CloudErrorKind.AUTH, CloudErrorKind.NOT_FOUND])
def test_errors_that_another_try_would_not_fix_are_raised_at_once(kind: CloudErrorKind) -> None:
    calls: list[int] = []
    log = RetryLog()
    with pytest.raises(CloudError):
        with_retries(failing([kind], calls), "delete x", log, initial_s=0.01)  # type: ignore[arg-type]
    assert len(calls) == 1 and log.drain() == []
