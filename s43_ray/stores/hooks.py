"""What the stores tell whoever listens: each request, timed, and each retried attempt.

The store layer records nothing itself: it imports neither Ray nor :mod:`s43_ray.metrics`.
Listeners subscribe (s3transfer's and httpx's event hooks are the model); the metrics do, in
every process that persists or gates (:func:`s43_ray.metrics.watch_stores`). With no listener a
request costs one ``perf_counter`` pair.

A listener must be quick and must not fail a store call: an exception it raises is logged once
per process and dropped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial

log = logging.getLogger("s43_ray.stores")


@dataclass
class Request:
    """One store call, as listeners see it when it ends. The store fills ``metadata``,
    ``content_type`` and ``nbytes`` in as it learns them (a GET learns them from the answer)."""

    op: str  # put, get, head, list, delete
    metadata: Mapping[str, str] | None = None  # the object's user metadata, when known
    content_type: str | None = None
    nbytes: int = 0  # the body written (put) or read (get)


# (the request, seconds from call to answer retries included, the exception or None)
RequestListener = Callable[[Request, float, BaseException | None], None]
# the operation retried (the store's or botocore's name: ``PutObject``, ``GET``)
RetryListener = Callable[[str], None]

_lock = threading.Lock()
_on_request: tuple[RequestListener, ...] = ()
_on_retry: tuple[RetryListener, ...] = ()
_warned = False


def subscribe(*, on_request: RequestListener | None = None,
              on_retry: RetryListener | None = None) -> None:
    """Add listeners for this process; subscribing the same function twice adds it once."""
    global _on_request, _on_retry
    with _lock:
        if on_request is not None and on_request not in _on_request:
            _on_request = (*_on_request, on_request)
        if on_retry is not None and on_retry not in _on_retry:
            _on_retry = (*_on_retry, on_retry)


def unsubscribe(*, on_request: RequestListener | None = None,
                on_retry: RetryListener | None = None) -> None:
    global _on_request, _on_retry
    with _lock:
        _on_request = tuple(f for f in _on_request if f != on_request)
        _on_retry = tuple(f for f in _on_retry if f != on_retry)


def _guarded(what: str, call: Callable[[], None]) -> None:
    global _warned
    try:
        call()
    except Exception as exc:  # a listener must never fail a store call
        if not _warned:
            _warned = True
            log.warning("store hook: a %s listener failed (%s: %s); further failures are not "
                        "logged", what, type(exc).__name__, exc)


@contextlib.contextmanager
def request(op: str, *, metadata: Mapping[str, str] | None = None,
            content_type: str | None = None, nbytes: int = 0) -> Iterator[Request]:
    """Time one store call and tell the listeners when it ends, with its exception if it
    failed (which propagates unchanged). ``nbytes`` counts only on success."""
    req = Request(op, metadata, content_type, nbytes)
    t0 = time.perf_counter()
    try:
        yield req
    except BaseException as exc:
        seconds = time.perf_counter() - t0
        for listener in _on_request:
            _guarded("request", partial(listener, req, seconds, exc))
        raise
    seconds = time.perf_counter() - t0
    for listener in _on_request:
        _guarded("request", partial(listener, req, seconds, None))


def retried(op: str) -> None:
    """One attempt of ``op`` failed and is being retried."""
    for listener in _on_retry:
        _guarded("retry", partial(listener, op))
