"""Unit-tier guard: these tests never start Ray or touch S3.

``ray.get_runtime_context()`` silently runs ``ray.init()`` when Ray is not initialised, which
would start a whole local cluster (seconds, several processes) from inside a "pure" unit test.
Every unit test therefore runs with ``ray.init`` replaced by a function that records the attempt
and refuses it; :func:`ray_init_attempts` exposes the record to tests that care.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import ray


class RayStartRefused(RuntimeError):
    """Raised instead of starting Ray inside a unit test."""


@pytest.fixture(autouse=True)
def ray_init_attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Any, ...]]]:
    """The calls made to ``ray.init`` during the test; each one is refused."""
    attempts: list[tuple[Any, ...]] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        attempts.append(args)
        raise RayStartRefused("unit tests must not start Ray")

    if not ray.is_initialized():
        monkeypatch.setattr(ray, "init", refuse)
    yield attempts
