"""stopping: a stop asked by a signal is raised again by the wait loops, even if the signal
handler's own KeyboardInterrupt was lost."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from s43_ray import stopping
from s43_ray.circuit import Circuit, CircuitConfig, watched


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    stopping.clear()
    yield
    stopping.clear()


def test_check_raises_only_once_a_stop_was_asked() -> None:
    stopping.check()
    stopping.ask(15)

    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        stopping.check()

    stopping.clear()
    stopping.check()


def test_a_watched_store_call_that_hangs_is_left_when_a_stop_is_asked() -> None:
    """A store that hangs while an interrupt's KeyboardInterrupt was lost: the watch loop
    raises it at its next tick, long before the circuit would open."""
    release = threading.Event()
    circuit = Circuit(CircuitConfig())
    threading.Timer(0.3, stopping.ask, args=(15,)).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            watched(circuit, lambda: release.wait(60), what="a PUT that hangs")
    finally:
        release.set()
    assert not circuit.is_open
