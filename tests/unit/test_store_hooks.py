"""stores.hooks: listeners see every store call and retry; a failing listener never fails one."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from s43_ray.errors import AccessDenied
from s43_ray.stores import hooks
from s43_ray.stores.hooks import Request


@pytest.fixture
def seen() -> Iterator[list[tuple[str, int, str | None]]]:
    calls: list[tuple[str, int, str | None]] = []

    def listener(req: Request, seconds: float, exc: BaseException | None) -> None:
        assert seconds >= 0
        calls.append((req.op, req.nbytes, type(exc).__name__ if exc else None))

    hooks.subscribe(on_request=listener)
    hooks.subscribe(on_request=listener)  # twice: still one listener
    yield calls
    hooks.unsubscribe(on_request=listener)


def test_a_listener_sees_each_call_once_with_its_outcome(
        seen: list[tuple[str, int, str | None]]) -> None:
    with hooks.request("put", nbytes=7):
        pass
    with pytest.raises(AccessDenied), hooks.request("get"):
        raise AccessDenied("GET s3://b/k: access denied")

    assert seen == [("put", 7, None), ("get", 0, "AccessDenied")]


def test_a_failing_listener_is_logged_once_and_never_fails_the_call(
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(req: Request, seconds: float, exc: BaseException | None) -> None:
        raise RuntimeError("listener bug")

    def broken_retry(op: str) -> None:
        raise RuntimeError("listener bug")

    hooks.subscribe(on_request=broken, on_retry=broken_retry)
    try:
        with caplog.at_level(logging.WARNING, logger="s43_ray.stores"):
            for _ in range(3):
                with hooks.request("list"):
                    pass
                hooks.retried("PutObject")
    finally:
        hooks.unsubscribe(on_request=broken, on_retry=broken_retry)

    assert sum("listener failed" in r.getMessage() for r in caplog.records) <= 1


def test_unsubscribed_listeners_hear_nothing(seen: list[tuple[str, int, str | None]]) -> None:
    heard: list[str] = []
    hooks.subscribe(on_retry=heard.append)
    hooks.retried("GetObject")
    hooks.unsubscribe(on_retry=heard.append)
    hooks.retried("GetObject")

    assert heard == ["GetObject"]
