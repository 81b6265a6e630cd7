"""Members verified as their references arrive, so that the gate's tail is one LIST.

While the fan-out runs, the driver verifies each member from the store as soon as its
reference comes back (a GET, checksum and decode in full mode; a HEAD in head mode), against
what the reference says the store confirmed: the same check the gate makes, made early, from
the store, never from the scheduler's word. The gate still lists the run and decides: it
reuses an early check only when the object it lists is the one that was checked (same key,
ETag, size and modification second; the ledger's checksum and attempt), and verifies every
other member itself.

An object rewritten after its early check has another ETag, or a later modification second.
The exception is byte-identical content rewritten in the same second, with other metadata: S3's
ETag is the body's MD5, and the metadata binds the object to its run, member and attempt (a
late task of an older attempt writing the same bytes). So a member is checked only once
:data:`SETTLE_S` has passed since its reference arrived. Its write happened before that, so
by the store's own clock the check reads the object in a later second than the one it was
modified in, and any rewrite after the check carries a later second that the gate's listing
shows. This holds whatever the skew between the driver's clock and the store's. Members whose
reference arrived less than :data:`SETTLE_S` before the fan-out ended are verified by the gate
itself.

Checks run on daemon threads: a store that hangs leaves them waiting, never the driver (the
gate verifies whatever has no early result).

Only members of at most :data:`EARLY_MAX_BYTES` are checked here. The driver holds references,
not payloads: 16 checks of 16 MiB members would hold 256 MiB in it. Larger members are
verified by the gate task, in a worker, as before; for them the GET, not the wait for the
gate, is the time anyway.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass

from . import stopping
from .codec import Codec
from .keys import RunLayout
from .stores.base import ObjectInfo, Store
from .task import PredictionRef
from .verify import Expectation, MemberCheck, VerifyMode, verify_member

# Verifications in flight at once: the gate's own concurrency.
EARLY_CONCURRENCY = 16
# Larger members are left to the gate task: at most 16 x 1 MiB of payload in the driver.
EARLY_MAX_BYTES = 1024**2
# A member is checked no sooner than this after its reference arrived: modification times are
# whole seconds (see the module docstring); the margin covers the clocks' rates.
SETTLE_S = 1.1


@dataclass(frozen=True, slots=True)
class Seen:
    """An early check that passed: what the gate compares with its listing."""

    key: str
    etag: str
    size: int
    modified_s: int | None  # whole seconds (HEAD and LIST differ below that)
    checksum: str
    attempt: int | None
    schema: str
    downloaded: bool
    read_seconds: float

    def still(self, info: ObjectInfo, expect: Expectation | None) -> bool:
        """Whether ``info`` (from the gate's LIST) is the object this check verified, and it
        was verified against ``expect`` (the ledger's entry)."""
        if info.key != self.key or info.etag != self.etag or info.size != self.size:
            return False
        if _second(info.last_modified) != self.modified_s:
            return False
        if expect is None:
            return True
        return (expect.checksum == self.checksum and expect.bytes == self.size
                and (expect.attempt is None or expect.attempt == self.attempt)
                and (not expect.schema or expect.schema == self.schema))

    def check(self, member: str) -> MemberCheck:
        return MemberCheck(member, self.key, "ok", bytes=self.size,
                           read_seconds=self.read_seconds, downloaded=self.downloaded,
                           checksum=self.checksum, attempt=self.attempt, schema=self.schema,
                           etag=self.etag)


# A reference as queued for its check: member, key, checksum, bytes, schema, and when the
# check may start (time.monotonic()).
_Todo = tuple[str, str, str, int, str, float]


def _second(ts: float | None) -> int | None:
    return None if ts is None else int(ts)


class EarlyChecks:
    """Verify members as their references arrive (see the module docstring)."""

    def __init__(self, store: Store, layout: RunLayout, codec: Codec, mode: VerifyMode,
                 attempt: int, declared_schema: str,
                 concurrency: int = EARLY_CONCURRENCY) -> None:
        self._store, self._layout, self._codec, self._mode = store, layout, codec, mode
        self._attempt, self._schema = attempt, declared_schema
        # What a check needs of each reference (member, key, checksum, bytes, schema), not the
        # reference: the queue may hold thousands when the store is slower than the cluster.
        self._todo: queue.Queue[_Todo | None] = queue.Queue()
        self._seen: dict[str, Seen] = {}
        self._lock = threading.Lock()
        self._submitted = 0
        self._finished = 0
        self._done = threading.Condition(self._lock)
        self._closed = False
        self._closing = threading.Event()  # set: checks not yet due are left to the gate
        self._workers = [threading.Thread(target=self._work, daemon=True,
                                          name=f"s43-early-{i}") for i in range(concurrency)]
        for w in self._workers:
            w.start()

    def submit(self, ref: PredictionRef) -> None:
        """Queue ``ref``'s member for its check; one larger than :data:`EARLY_MAX_BYTES` is
        left to the gate."""
        if ref.bytes > EARLY_MAX_BYTES:
            return
        with self._lock:
            self._submitted += 1
        self._todo.put((ref.member, ref.key, ref.checksum, ref.bytes, ref.schema,
                        time.monotonic() + SETTLE_S))

    def _work(self) -> None:
        while (todo := self._todo.get()) is not None:
            wait = todo[5] - time.monotonic()
            if wait > 0 and self._closing.wait(wait):
                seen = None  # not due when the fan-out ended: the gate verifies it
            else:
                try:
                    seen = self._verify(todo)
                except Exception:  # the gate verifies it itself: nothing is lost here
                    seen = None
            with self._lock:
                if seen is not None:
                    self._seen[todo[0]] = seen
                self._finished += 1
                self._done.notify_all()

    def _verify(self, todo: _Todo) -> Seen | None:
        member, key, checksum, size, schema, _ = todo
        expect = Expectation(checksum, size, schema, self._attempt)
        c = verify_member(self._store, member, key, self._codec, expect, self._mode,
                          size, run_id=self._layout.run_id, declared_schema=self._schema)
        if c.status != "ok" or not c.etag:
            return None
        # One schema string for every member (the run declares one): the gate task's checks
        # built from these share it too, and so does the verdict the driver gets back.
        return Seen(c.key, c.etag, c.bytes, _second(c.last_modified), c.checksum, c.attempt,
                    sys.intern(c.schema), c.downloaded, c.read_seconds)

    def results(self, timeout: float) -> dict[str, Seen]:
        """The checks that passed, once every submitted one finished or ``timeout`` passed
        (those still running are left to the gate); stops the workers. Hands its results
        over: a second call has only what finished after the first."""
        deadline = time.monotonic() + timeout
        self._closing.set()  # what is not due yet is the gate's
        with self._lock:
            while self._finished < self._submitted:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._done.wait(min(left, 1.0))
                stopping.check()
            # Handed over, not copied: a check finishing late lands in a dict nobody reads.
            seen, self._seen = self._seen, {}
        self.close()
        return seen

    def close(self) -> None:
        """Stop the workers once the queued checks already due are done; those not due are
        left to the gate (idempotent)."""
        self._closing.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for _ in self._workers:
            self._todo.put(None)
