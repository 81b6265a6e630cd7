"""A circuit for a store that stops answering: fail the run in about a minute, not in hours.

Per-request timeouts and retries bound one call (5 s connect, 60 s read, 5 attempts: ~5 min),
not a run: a SIGSTOPped server accepts connections and never answers, so every member would take
its full budget in turn. The circuit watches progress instead. When no store operation (or, in
the driver, no member) has completed for ``probe_after`` seconds it probes the store with one
short, unretried request; ``probes`` failed probes in a row, or ``failures`` members failing
``unreachable``/``timeout`` in a row, open it. The caller then stops scheduling work, abandons
what is in flight and names every member not done (exit 3); ``--resume`` finishes the run.

With the defaults a hung store opens the circuit about 20 + 3 x (10 + 10) = 80 s after the last
progress, whatever the per-request timeouts.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from . import stopping
from .errors import S43Error, StoreError, StoreUnreachable
from .stores.base import ObjectInfo, Store

T = TypeVar("T")
R = TypeVar("R")
# Error classes that say the store itself stopped answering (not a refusal or a bad object).
CIRCUIT_ERROR_CLASSES = frozenset({"unreachable", "timeout"})
# How often a waiting caller looks at the circuit.
TICK_S = 0.25
# A probe that has not answered within its timeout plus this is counted as failed: the slack
# lets a probe whose own socket timeout fired report its real error (refused, denied) first.
PROBE_GRACE_S = 2.0


@dataclass(frozen=True)
class CircuitConfig:
    """When a store that stopped answering fails the run."""

    probe_after: float = 20.0  # seconds without progress before the first probe
    probe_interval: float = 10.0  # seconds between the end of one probe and the next
    probe_timeout: float = 10.0  # one probe's budget (connect + answer); no retries; one
    # that has not answered after probe_timeout + PROBE_GRACE_S counts as failed
    probes: int = 3  # failed probes in a row that open the circuit
    failures: int = 3  # members failing unreachable/timeout in a row that open it

    def __post_init__(self) -> None:
        for name in ("probe_after", "probe_interval", "probe_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"circuit {name} must be > 0")
        if self.probes < 1 or self.failures < 1:
            raise ValueError("circuit probes and failures must be >= 1")


class Circuit:
    """Progress, failures and probes of one store; ``tick()`` says whether it is open."""

    def __init__(self, probe: Callable[[float], None], cfg: CircuitConfig | None = None,
                 *, what: str = "store") -> None:
        self.cfg = cfg or CircuitConfig()
        self._probe_fn = probe
        self.what = what
        self._lock = threading.Lock()
        self.last_progress = time.monotonic()
        self.consecutive_failures = 0
        self.failed_probes = 0
        self.probes_made = 0
        self.reason = ""
        self._probe: _Probe | None = None  # the probe in flight, if any
        self._last_probe_end = 0.0

    @classmethod
    def for_store(cls, store: Store, cfg: CircuitConfig | None = None) -> Circuit:
        """The circuit of one store: probed with the store's own one-request probe."""
        return cls(store.probe, cfg, what=f"store {store.url}")

    @property
    def is_open(self) -> bool:
        return bool(self.reason)

    def progress(self) -> None:
        with self._lock:
            self.last_progress = time.monotonic()
            self.consecutive_failures = 0
            self.failed_probes = 0

    def failure(self, error_class: str) -> None:
        """A member or request failed; ``unreachable``/``timeout`` in a row open the circuit."""
        if error_class not in CIRCUIT_ERROR_CLASSES:
            return
        with self._lock:
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.cfg.failures and not self.reason:
                self.reason = (f"{self.what} failed {self.consecutive_failures} times in a row "
                               f"({error_class})")

    def tick(self) -> bool:
        """Start, collect or time out a probe when due; True when the circuit is open."""
        if self.reason:
            return True
        now = time.monotonic()
        probe = self._probe
        if probe is not None:
            overdue = now - probe.started > self.cfg.probe_timeout + PROBE_GRACE_S
            if not probe.done.is_set() and not overdue:
                return False
            # Each probe has its own result: a probe given up on that answers later changes
            # nothing (its thread writes only into its own _Probe). A store that answers with
            # a refusal (throttling, 5xx, access denied) answered: only silence or an
            # unreachable endpoint counts against it.
            failed = not probe.done.is_set() or _unanswered(probe.error)
            self._probe = None
            self._last_probe_end = now
            with self._lock:
                self.probes_made += 1
                if failed and now - self.last_progress >= self.cfg.probe_after:
                    self.failed_probes += 1
                elif not failed:
                    self.failed_probes = 0
                if self.failed_probes >= self.cfg.probes:
                    detail = (str(probe.error).splitlines()[0] if probe.error is not None
                              else f"no answer within {self.cfg.probe_timeout:g}s")
                    self.reason = (f"{self.what} stopped answering: {self.failed_probes} probes "
                                   f"failed in a row, nothing completed for "
                                   f"{now - self.last_progress:.0f}s ({detail})")
            return bool(self.reason)
        if now - self.last_progress < self.cfg.probe_after:
            return False
        if now - self._last_probe_end < self.cfg.probe_interval and self.probes_made:
            return False
        self._probe = _Probe.start(self._probe_fn, self.cfg.probe_timeout, now)
        return False


def _unanswered(error: BaseException | None) -> bool:
    if error is None:
        return False
    if isinstance(error, S43Error):
        return error.error_class in CIRCUIT_ERROR_CLASSES
    return True  # anything else (a bug, a crash in the client) proves nothing about the store


class _Probe:
    """One probe: its own thread and its own result."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.done = threading.Event()
        self.error: BaseException | None = None

    @classmethod
    def start(cls, fn: Callable[[float], None], timeout: float, now: float) -> _Probe:
        probe = cls(now)

        def run() -> None:
            try:
                fn(timeout)
            except BaseException as exc:  # the probe's verdict, whatever it is
                probe.error = exc
            finally:
                probe.done.set()

        threading.Thread(target=run, name="s43-probe", daemon=True).start()
        return probe


def watched(circuit: Circuit, fn: Callable[[], T], *, what: str) -> T:
    """Run ``fn`` in a daemon thread; raise :class:`StoreUnreachable` naming ``what`` if the
    circuit opens first (the thread is abandoned: it dies with its socket timeouts)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="s43-watched", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(TICK_S)
        stopping.check()
        if thread.is_alive() and circuit.tick():
            raise StoreUnreachable(f"{what}: {circuit.reason}; circuit open")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def daemon_map(fn: Callable[[T], R], items: Iterable[T], workers: int, circuit: Circuit,
               *, what: str) -> Iterator[R]:
    """``map`` on daemon threads, results in completion order; raises
    :class:`StoreUnreachable` when the circuit opens (work not started is dropped)."""
    todo: queue.Queue[T | None] = queue.Queue()
    done: queue.Queue[tuple[bool, Any]] = queue.Queue()
    count = 0
    for item in items:
        todo.put(item)
        count += 1
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            if item is None:
                return
            try:
                done.put((True, fn(item)))
            except BaseException as exc:
                done.put((False, exc))

    for _ in range(max(1, min(workers, count))):
        threading.Thread(target=worker, name="s43-gate", daemon=True).start()
    for _ in range(count):
        while True:
            try:
                ok, value = done.get(timeout=TICK_S)
                break
            except queue.Empty:
                if stopping.asked():
                    stop.set()
                    stopping.check()
                if circuit.tick():
                    stop.set()
                    raise StoreUnreachable(f"{what}: {circuit.reason}; circuit open") from None
        if not ok:
            stop.set()
            raise value
        yield value


class WatchedStore:
    """A :class:`Store` that tells a :class:`Circuit` of every completed or failed request."""

    def __init__(self, store: Store, circuit: Circuit) -> None:
        self.inner = store
        self.circuit = circuit

    @property
    def url(self) -> str:
        return self.inner.url

    @property
    def retries(self) -> int:
        return int(getattr(self.inner, "retries", 0))

    def _call(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        try:
            out = fn(*args, **kwargs)
        except StoreError as exc:
            if exc.error_class in CIRCUIT_ERROR_CLASSES:
                self.circuit.failure(exc.error_class)
            else:
                self.circuit.progress()  # the store answered, even if it said no
            raise
        except S43Error:
            self.circuit.progress()
            raise
        self.circuit.progress()
        return out

    def put(self, key: str, body: bytes | memoryview, *, metadata: Mapping[str, str],
            s3_checksum: str | None = None, content_type: str = "application/octet-stream",
            if_none_match: bool = False, if_match: str | None = None) -> str | None:
        return self._call(self.inner.put, key, body, metadata=metadata, s3_checksum=s3_checksum,
                          content_type=content_type, if_none_match=if_none_match,
                          if_match=if_match)

    def get(self, key: str, *, size_hint: int | None = None) -> tuple[memoryview, ObjectInfo]:
        return self._call(self.inner.get, key, size_hint=size_hint)

    def head(self, key: str) -> ObjectInfo:
        return self._call(self.inner.head, key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        it = iter(self.inner.list(prefix))
        while True:
            try:
                info = self._call(next, it)
            except StopIteration:
                return
            yield info

    def list_dirs(self, prefix: str) -> Iterator[str]:
        folders: Iterator[str] | None = None

        def step() -> str:  # the first call too is watched: it may be the request
            nonlocal folders
            if folders is None:
                folders = iter(self.inner.list_dirs(prefix))
            return next(folders)

        while True:
            try:
                name = self._call(step)
            except StopIteration:
                return
            yield name

    def delete(self, key: str) -> None:
        self._call(self.inner.delete, key)

    def check(self) -> None:
        self._call(self.inner.check)

    def probe(self, timeout: float) -> None:
        self.inner.probe(timeout)
