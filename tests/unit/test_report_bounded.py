"""report on a store that stops answering: bounded by the circuit, never minutes of retries."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from s43_ray.circuit import CircuitConfig
from s43_ray.errors import StoreUnreachable
from s43_ray.keys import RunLayout
from s43_ray.ops.report import report_run
from s43_ray.stores.base import ObjectInfo
from s43_ray.stores.memory import MemoryStore

TINY = CircuitConfig(probe_after=0.05, probe_interval=0.05, probe_timeout=0.1, probes=2)


class HangingStore(MemoryStore):
    """Answers nothing once frozen: every call blocks, and so does the probe."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__()
        self.release = release

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self.release.wait(30)
        yield from super().list(prefix)

    def probe(self, timeout: float) -> None:
        self.release.wait(timeout)
        raise StoreUnreachable(f"LIST {self.url}: no answer within {timeout}s (probe)")


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def test_report_on_a_store_that_stopped_answering_fails_fast(release: threading.Event) -> None:
    store = HangingStore(release)
    t0 = time.monotonic()

    with pytest.raises(StoreUnreachable) as err:
        report_run(store, RunLayout("p", "r1"), circuit=TINY)

    assert time.monotonic() - t0 < 10  # the list alone would block for 30 s
    assert "circuit open" in str(err.value) and "report of run 'r1'" in str(err.value)
