"""circuit: a store that stops answering fails the work in seconds, not after every timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

import s43_ray.circuit as circuit_module
from s43_ray.circuit import (
    PROBE_GRACE_S,
    Circuit,
    CircuitConfig,
    WatchedStore,
    daemon_map,
    watched,
)
from s43_ray.errors import (
    AccessDenied,
    ChecksumMismatch,
    ObjectNotFound,
    StoreError,
    StoreUnreachable,
    Throttled,
)
from s43_ray.stores.base import ObjectInfo
from s43_ray.stores.memory import MemoryStore

# Tiny timings: a probe is due 50 ms after the last progress; one probe's budget is 200 ms.
FAST = CircuitConfig(probe_after=0.05, probe_interval=0.05, probe_timeout=0.2, probes=2,
                     failures=3)
NEVER_PROBE = CircuitConfig(probe_after=60, probe_interval=60, probe_timeout=1, failures=3)
# Real time a test waits, at most, for something that should take well under it.
DEADLINE_S = 3.0


def _no_probe(_timeout: float) -> None:
    raise AssertionError("no probe expected")


def _failing_probe(calls: list[float]) -> Callable[[float], None]:
    def probe(timeout: float) -> None:
        calls.append(timeout)
        raise StoreUnreachable("HEAD memory://x: connection refused\nsecond line")
    return probe


def _tick_until_open(circuit: Circuit, within: float = DEADLINE_S) -> float:
    """Tick as a waiting caller does until the circuit opens; the seconds it took."""
    t0 = time.monotonic()
    while not circuit.tick():
        assert time.monotonic() - t0 < within, "the circuit did not open"
        time.sleep(0.01)
    return time.monotonic() - t0


def _tick_until_probed(circuit: Circuit, probes: int) -> None:
    """Tick until ``probes`` probes were made, asserting the circuit never opens."""
    t0 = time.monotonic()
    while circuit.probes_made < probes:
        assert not circuit.tick()
        assert time.monotonic() - t0 < DEADLINE_S, "the probes were not made"
        time.sleep(0.01)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown: lets every 'hung' probe or call in the test finish."""
    event = threading.Event()
    yield event
    event.set()


class FakeClock:
    """The circuit's clock, moved by hand: probes that hang past their budget without waiting
    seconds of real time (the probe threads themselves are real)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(circuit_module, "time", fake)
    return fake


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [{"probe_after": 0}, {"probe_interval": -1},
                                 {"probe_timeout": 0}, {"probes": 0}, {"failures": 0}])
def test_circuit_config_refuses_non_positive_values(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="circuit"):
        CircuitConfig(**bad)  # type: ignore[arg-type]


# --- failures in a row -----------------------------------------------------------------------


def test_circuit_opens_after_failures_unreachable_failures_in_a_row() -> None:
    circuit = Circuit(_no_probe, NEVER_PROBE, what="store s3://b")

    circuit.failure("unreachable")
    circuit.failure("timeout")
    assert not circuit.is_open and not circuit.tick()
    circuit.failure("unreachable")

    assert circuit.is_open and circuit.tick()
    assert circuit.reason == "store s3://b failed 3 times in a row (unreachable)"


def test_progress_starts_the_failure_count_again() -> None:
    circuit = Circuit(_no_probe, NEVER_PROBE)

    for _ in range(2):
        circuit.failure("unreachable")
    circuit.progress()
    for _ in range(2):
        circuit.failure("unreachable")

    assert not circuit.is_open
    circuit.failure("unreachable")
    assert circuit.is_open


@pytest.mark.parametrize("error_class", ["auth", "not_found", "checksum", "conflict",
                                         "throttled", "predictor", "store"])
def test_circuit_ignores_failures_that_are_not_the_store_going_silent(error_class: str) -> None:
    circuit = Circuit(_no_probe, NEVER_PROBE)

    for _ in range(10):
        circuit.failure(error_class)

    assert not circuit.is_open and circuit.consecutive_failures == 0


def test_other_failures_do_not_interrupt_a_run_of_unreachable_ones() -> None:
    circuit = Circuit(_no_probe, NEVER_PROBE)

    circuit.failure("unreachable")
    circuit.failure("auth")
    circuit.failure("unreachable")
    circuit.failure("checksum")
    circuit.failure("timeout")

    assert circuit.is_open


def test_an_open_circuit_stays_open_and_keeps_its_first_reason() -> None:
    circuit = Circuit(_no_probe, CircuitConfig(probe_after=60, failures=1))
    circuit.failure("timeout")
    reason = circuit.reason

    circuit.progress()
    circuit.failure("unreachable")

    assert circuit.is_open and circuit.tick() and circuit.reason == reason


# --- probes ----------------------------------------------------------------------------------


def test_no_probe_is_made_while_the_store_makes_progress() -> None:
    calls: list[float] = []
    circuit = Circuit(_failing_probe(calls), CircuitConfig(probe_after=60))

    for _ in range(20):
        assert not circuit.tick()

    assert calls == [] and circuit.probes_made == 0


def test_circuit_opens_after_probes_failed_probes_without_progress() -> None:
    calls: list[float] = []
    circuit = Circuit(_failing_probe(calls), FAST, what="store s3://b")

    took = _tick_until_open(circuit)

    assert calls == [0.2, 0.2]  # each probe gets the probe budget, no retries
    assert circuit.probes_made == 2 and circuit.failed_probes == 2
    assert circuit.reason.startswith("store s3://b stopped answering: 2 probes failed in a row")
    assert "(HEAD memory://x: connection refused)" in circuit.reason  # the first line only
    assert took < 1.0


def test_progress_between_failed_probes_starts_the_probe_count_again() -> None:
    calls: list[float] = []
    circuit = Circuit(_failing_probe(calls), FAST)
    _tick_until_probed(circuit, 1)
    assert circuit.failed_probes == 1

    circuit.progress()
    _tick_until_open(circuit)

    assert circuit.probes_made == 3


def test_a_succeeding_probe_keeps_the_circuit_closed() -> None:
    calls: list[float] = []
    circuit = Circuit(calls.append, FAST)

    _tick_until_probed(circuit, 4)  # twice as many as would open it, had they failed

    assert not circuit.is_open and circuit.reason == ""
    assert calls == [0.2] * 4
    assert circuit.failed_probes == 0


def test_a_probe_that_hangs_is_not_counted_while_within_its_budget(
        clock: FakeClock, release: threading.Event) -> None:
    calls: list[float] = []

    def hang(timeout: float) -> None:
        calls.append(timeout)
        release.wait(DEADLINE_S)

    circuit = Circuit(hang, CircuitConfig(probe_after=0.05, probe_interval=0.05,
                                          probe_timeout=0.2, probes=1))
    clock.advance(0.1)
    assert not circuit.tick()  # the probe starts
    clock.advance(0.1)

    assert not circuit.tick()
    assert circuit.probes_made == 0 and not circuit.is_open


def test_a_probe_that_hangs_forever_counts_as_failed_once_overdue(
        clock: FakeClock, release: threading.Event) -> None:
    def hang(_timeout: float) -> None:
        release.wait(DEADLINE_S)

    circuit = Circuit(hang, CircuitConfig(probe_after=0.05, probe_interval=0.05,
                                          probe_timeout=0.2, probes=1), what="store s3://b")
    clock.advance(0.1)
    assert not circuit.tick()  # the probe starts, and hangs

    clock.advance(60)  # long past its 0.2 s budget, and any grace the circuit gives it

    assert circuit.tick()
    assert circuit.probes_made == 1 and circuit.failed_probes == 1
    assert "stopped answering: 1 probes failed in a row" in circuit.reason
    assert "no answer within" in circuit.reason


def test_a_probe_that_hangs_counts_as_failed_once_its_timeout_and_grace_are_past(
        clock: FakeClock, release: threading.Event) -> None:
    def hang(_timeout: float) -> None:
        release.wait(DEADLINE_S)

    circuit = Circuit(hang, CircuitConfig(probe_after=0.05, probe_interval=0.05,
                                          probe_timeout=0.2, probes=1))
    clock.advance(0.1)
    circuit.tick()

    clock.advance(0.2 + PROBE_GRACE_S - 0.1)  # within its budget and grace: still waited for
    assert not circuit.tick()
    clock.advance(0.2)  # past them
    assert circuit.tick()
    assert "no answer within 0.2s" in circuit.reason


def test_a_late_answer_of_an_abandoned_probe_does_not_count_for_the_current_probe(
        clock: FakeClock, release: threading.Event) -> None:
    first_released = threading.Event()
    probe_threads: list[threading.Thread] = []

    def probe(_timeout: float) -> None:
        probe_threads.append(threading.current_thread())
        if len(probe_threads) == 1:
            first_released.wait(DEADLINE_S)  # hangs past its budget, then answers "ok"
        else:
            release.wait(DEADLINE_S)  # hangs for the rest of the test

    circuit = Circuit(probe, CircuitConfig(probe_after=0.05, probe_interval=0.05,
                                           probe_timeout=0.2, probes=2))
    clock.advance(0.1)
    circuit.tick()  # probe 1 starts
    clock.advance(60)
    assert not circuit.tick()  # probe 1 overdue: 1 failed probe
    assert circuit.failed_probes == 1
    clock.advance(0.1)
    circuit.tick()  # probe 2 starts
    first_released.set()
    probe_threads[0].join(DEADLINE_S)  # probe 1 answers, long after it was given up on

    clock.advance(60)  # probe 2 is overdue too
    circuit.tick()

    assert circuit.failed_probes == 2  # the bug: 0, probe 2 taken for a success
    assert circuit.is_open


# --- watched ---------------------------------------------------------------------------------


def test_watched_returns_the_value_of_fn() -> None:
    circuit = Circuit(_no_probe, NEVER_PROBE)

    assert watched(circuit, lambda: {"answer": 42}, what="reading") == {"answer": 42}


def test_watched_raises_the_exception_of_fn_itself() -> None:
    circuit = Circuit(_no_probe, NEVER_PROBE)
    error = ChecksumMismatch("checksum differs")

    def fn() -> None:
        raise error

    with pytest.raises(ChecksumMismatch) as info:
        watched(circuit, fn, what="reading")

    assert info.value is error
    assert not circuit.is_open


def test_watched_waits_for_a_slow_fn_while_the_circuit_stays_closed() -> None:
    circuit = Circuit(_no_probe, NEVER_PROBE)

    def slow() -> str:
        time.sleep(0.3)
        return "done"

    assert watched(circuit, slow, what="reading") == "done"


def test_watched_gives_up_on_a_hung_fn_when_the_circuit_opens(
        release: threading.Event) -> None:
    circuit = Circuit(_no_probe, CircuitConfig(probe_after=60, failures=1), what="store s3://b")

    def hung() -> None:
        circuit.failure("unreachable")  # e.g. another request saw the store go silent
        release.wait(DEADLINE_S)

    t0 = time.monotonic()
    with pytest.raises(StoreUnreachable) as info:
        watched(circuit, hung, what="writing p/r/_gate.json")

    assert time.monotonic() - t0 < 1.5
    assert str(info.value) == ("writing p/r/_gate.json: store s3://b failed 1 times in a row "
                               "(unreachable); circuit open")
    assert info.value.exit_code == 3


def test_watched_gives_up_on_a_hung_fn_when_probes_fail(release: threading.Event) -> None:
    calls: list[float] = []
    circuit = Circuit(_failing_probe(calls), CircuitConfig(
        probe_after=0.05, probe_interval=0.05, probe_timeout=0.2, probes=1))

    t0 = time.monotonic()
    with pytest.raises(StoreUnreachable, match=r"stopped answering.*circuit open"):
        watched(circuit, lambda: release.wait(DEADLINE_S), what="LIST p/r/")

    assert time.monotonic() - t0 < 1.5
    assert calls == [0.2]


# --- daemon_map ------------------------------------------------------------------------------


def test_daemon_map_returns_every_result() -> None:
    circuit = Circuit(_no_probe, NEVER_PROBE)

    results = list(daemon_map(lambda x: x * 2, range(50), 8, circuit, what="gate"))

    assert sorted(results) == [x * 2 for x in range(50)]


def test_daemon_map_of_nothing_is_nothing() -> None:
    circuit = Circuit(_no_probe, NEVER_PROBE)

    assert list(daemon_map(lambda x: x, [], 8, circuit, what="gate")) == []


def test_daemon_map_raises_the_exception_of_fn() -> None:
    circuit = Circuit(_no_probe, NEVER_PROBE)

    def fn(x: int) -> int:
        if x == 3:
            raise ChecksumMismatch("member 3")
        return x

    with pytest.raises(ChecksumMismatch, match="member 3"):
        list(daemon_map(fn, range(5), 2, circuit, what="gate"))


def test_daemon_map_raises_store_unreachable_when_the_circuit_opens_and_drops_the_rest(
        release: threading.Event) -> None:
    circuit = Circuit(_no_probe, CircuitConfig(probe_after=60, failures=1), what="store s3://b")
    started: list[int] = []
    workers: list[threading.Thread] = []

    def fn(x: int) -> int:
        started.append(x)
        workers.append(threading.current_thread())
        circuit.failure("timeout")
        release.wait(DEADLINE_S)
        return x

    t0 = time.monotonic()
    with pytest.raises(StoreUnreachable) as info:
        list(daemon_map(fn, range(5), 1, circuit, what="gate of run 'r': 5 members to verify"))

    assert time.monotonic() - t0 < 1.5
    assert str(info.value).startswith("gate of run 'r': 5 members to verify: store s3://b "
                                      "failed 1 times in a row (timeout)")
    release.set()
    workers[0].join(DEADLINE_S)
    assert started == [0]  # work not started when the circuit opened is dropped


# --- WatchedStore ----------------------------------------------------------------------------


class DownStore(MemoryStore):
    """Answers LIST; every GET times out after its retries."""

    def get(self, key: str, *, size_hint: int | None = None
            ) -> tuple[memoryview, ObjectInfo]:
        raise StoreUnreachable(f"GET {self.url}/{key}: unreachable (ReadTimeoutError)")


class RefusingStore(MemoryStore):
    def head(self, key: str) -> ObjectInfo:
        raise AccessDenied(f"HEAD {self.url}/{key}: access denied")


def test_watched_store_reports_progress_on_every_answered_request() -> None:
    circuit = Circuit(_no_probe, NEVER_PROBE)
    store = WatchedStore(MemoryStore(), circuit)

    for step in range(5):
        circuit.failure("unreachable")
        circuit.failure("unreachable")
        before = circuit.last_progress
        if step == 0:
            assert store.put("k", b"abc", metadata={"a": "1"}) is not None
        elif step == 1:
            body, info = store.get("k")
            assert bytes(body) == b"abc" and info.metadata == {"a": "1"}
        elif step == 2:
            assert store.head("k").size == 3
        elif step == 3:
            assert [i.key for i in store.list("")] == ["k"]
        else:
            store.delete("k")
        assert circuit.consecutive_failures == 0, step
        assert circuit.last_progress >= before

    assert not circuit.is_open
    assert store.url == "memory://memory"


def test_watched_store_counts_an_unreachable_store_as_a_failure_and_reraises() -> None:
    circuit = Circuit(_no_probe, NEVER_PROBE, what="store memory://memory")
    store = WatchedStore(DownStore(), circuit)

    for n in range(1, 4):
        with pytest.raises(StoreUnreachable, match="ReadTimeoutError"):
            store.get("p/r/m00000.npz")
        assert circuit.consecutive_failures == n

    assert circuit.is_open
    assert circuit.reason == "store memory://memory failed 3 times in a row (unreachable)"


def test_watched_store_counts_a_refusal_or_a_missing_key_as_progress() -> None:
    circuit = Circuit(_no_probe, NEVER_PROBE)
    circuit.failure("unreachable")
    circuit.failure("unreachable")

    with pytest.raises(ObjectNotFound):
        WatchedStore(MemoryStore(), circuit).get("nope")
    assert circuit.consecutive_failures == 0

    circuit.failure("unreachable")
    circuit.failure("unreachable")
    with pytest.raises(AccessDenied):
        WatchedStore(RefusingStore(), circuit).head("k")
    assert circuit.consecutive_failures == 0
    assert not circuit.is_open


@pytest.mark.parametrize("answer", [Throttled("503 SlowDown"), AccessDenied("403"),
                                    StoreError("500 InternalError")],
                         ids=["throttled", "denied", "5xx"])
def test_a_probe_the_store_answers_with_a_refusal_is_not_a_failed_probe(
        answer: StoreError) -> None:
    def refuse(_timeout: float) -> None:
        raise answer

    circuit = Circuit(refuse, CircuitConfig(probe_after=0.01, probe_interval=0.01,
                                            probe_timeout=0.5, probes=1))
    time.sleep(0.02)
    deadline = time.monotonic() + DEADLINE_S
    while circuit.probes_made < 3 and time.monotonic() < deadline:
        assert not circuit.tick()  # a slow run on a throttling store is not killed
        time.sleep(0.01)
    assert circuit.probes_made >= 3 and circuit.failed_probes == 0 and not circuit.is_open
