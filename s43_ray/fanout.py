"""The fan-out: one persist task per member, references gathered as they finish.

At most ``max_in_flight`` tasks are submitted at a time (more as members finish): Ray keeps a
task's spec, arguments and ``ObjectRef`` in the driver until it finishes (~13 KiB a task), so
submitting a 20,000-member cohort at once cost the driver ~250 MiB before anything ran. A
finished member's ``ObjectRef`` is dropped as soon as its value is fetched, and what the driver
keeps of its reference is a :class:`Persisted` (its ledger entry and what the summary counts),
not the full :class:`~s43_ray.task.PredictionRef`.

Three things end a member: its reference, its task's failure, or the run giving up on it: a
stall (no member finished for ``stall_timeout``) or an open circuit (the store stopped
answering, :mod:`s43_ray.circuit`). When the circuit opens (or the run stalls), nothing more is
scheduled, every task still in flight is cancelled, and every member not persisted (in flight
or never submitted) is named.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError

from . import events as ev
from . import stopping
from .circuit import Circuit
from .errors import S43Error
from .keys import RunLayout
from .progress import Progress
from .task import PersistFailure, PersistOutcome, PredictionRef, TaskSpec, persist_task

# Tasks submitted and not yet finished, at most: enough to keep every CPU of a large cluster
# busy (see in_flight_limit), few enough that the driver's memory does not grow with the cohort.
MAX_IN_FLIGHT = 1024
# Per CPU of the cluster, when that allows more tasks in flight than MAX_IN_FLIGHT.
IN_FLIGHT_PER_CPU = 4
# Collect finished tasks in batches of this size so a 100,000-member run is not O(n^2) waits.
WAIT_BATCH = 256
# A run in which no member finishes for this long is stalled: its pending tasks are cancelled
# and reported (error_class "stalled") instead of hanging the job without a word.
STALL_TIMEOUT_S = 900.0
# How often the progress bar moves (and the circuit is looked at) when no task finishes.
WAIT_TIMEOUT_S = 0.5
# Error class of the members a run gave up on because the store stopped answering.
CIRCUIT_OPEN = "circuit_open"


class Persisted:
    """What the driver keeps of a member whose reference came back: the fields of its ledger
    entry and what the summary counts. A :class:`~s43_ray.task.PredictionRef` as Ray
    deserializes it is ~2 KiB of Python objects (its array specs, timings, strings of its
    own); this is a few hundred bytes, strings shared where every member has the same one."""

    __slots__ = ("attempt", "bytes", "checksum", "key", "member", "node_id", "s3_retries",
                 "schema", "write_seconds")

    def __init__(self, member: str, key: str, checksum: str, bytes: int, schema: str,
                 write_seconds: float, node_id: str, s3_retries: int, attempt: int) -> None:
        self.member, self.key, self.checksum, self.bytes = member, key, checksum, bytes
        self.schema, self.write_seconds, self.node_id = schema, write_seconds, node_id
        self.s3_retries, self.attempt = s3_retries, attempt

    @classmethod
    def of(cls, member: str, ref: PredictionRef) -> Persisted:
        """``ref`` as kept; ``member`` is the driver's own name for it (the cohort's string,
        not the copy Ray deserialized)."""
        return cls(member, ref.key, ref.checksum, ref.bytes, sys.intern(ref.schema),
                   ref.write_seconds, sys.intern(ref.node_id), ref.s3_retries, ref.attempt)

    def __repr__(self) -> str:
        return f"Persisted(member={self.member!r}, key={self.key!r}, bytes={self.bytes})"


# What fan_out returns for each member: what was persisted, or why not.
Kept = Persisted | PersistFailure


def in_flight_limit() -> int:
    """How many tasks fan_out keeps submitted: MAX_IN_FLIGHT, or more on a cluster with more
    than MAX_IN_FLIGHT / IN_FLIGHT_PER_CPU CPUs."""
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))  # type: ignore[no-untyped-call]
    except Exception:  # no answer from the cluster: the default still keeps it busy
        cpus = 0
    return max(MAX_IN_FLIGHT, IN_FLIGHT_PER_CPU * cpus)


def ray_failure(spec: TaskSpec, member: str, key: str, exc: RayError) -> PersistFailure:
    cause = exc.cause if isinstance(exc, RayTaskError) else None
    if isinstance(cause, S43Error):
        return PersistFailure(spec.run_id, member, key, cause.error_class, str(cause))
    name = type(exc).__name__
    klass = {"WorkerCrashedError": "worker_died", "NodeDiedError": "node_died",
             "TaskUnschedulableError": "unschedulable", "OutOfMemoryError": "oom",
             "TaskCancelledError": "cancelled"}.get(name, "task_error")
    return PersistFailure(spec.run_id, member, key, klass, first_line(exc))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:500]


def _give_up(spec: TaskSpec, pending: dict[Any, str], unsubmitted: Sequence[str],
             layout: RunLayout, error_class: str, why: str, hint: str = ""
             ) -> list[PersistFailure]:
    """Cancel every task still pending and fail its member with ``error_class``; fail every
    member not submitted yet (``unsubmitted``) the same way: it never will be."""
    failures = []
    for obj, member in pending.items():
        with contextlib.suppress(Exception):
            ray.cancel(obj, force=True)
        failures.append(PersistFailure(spec.run_id, member, layout.member_key(member, spec.codec),
                                       error_class, f"{why}; task cancelled{hint}"))
    pending.clear()
    failures.extend(PersistFailure(spec.run_id, member, layout.member_key(member, spec.codec),
                                   error_class, f"{why}; task never submitted")
                    for member in unsubmitted)
    return failures


def fan_out(spec: TaskSpec, members: Sequence[str], events: ev.EventLog,
            progress: Progress, task_options: Mapping[str, Any],
            stall_timeout: float = STALL_TIMEOUT_S,
            member_options: Callable[[str], Mapping[str, Any]] | None = None,
            on_outcome: Callable[[str, PersistOutcome], None] | None = None,
            circuit: Circuit | None = None, max_in_flight: int | None = None,
            ) -> dict[str, Kept]:
    """Submit one persist task per member, at most ``max_in_flight`` at a time (default:
    :func:`in_flight_limit`), and gather their references as they finish. ``on_outcome``
    sees each member's full outcome; what is returned keeps a :class:`Persisted` of each
    reference (or the member's :class:`~s43_ray.task.PersistFailure`)."""
    layout = spec.layout
    limit = max(1, max_in_flight if max_in_flight is not None else in_flight_limit())
    pending: dict[Any, str] = {}  # ObjectRef -> member: submitted, not fetched yet
    submitted = 0  # members[:submitted] were submitted

    def submit() -> None:
        nonlocal submitted
        while submitted < len(members) and len(pending) < limit:
            m = members[submitted]
            opts = {**task_options, **member_options(m)} if member_options else task_options
            pending[persist_task.options(**opts).remote(spec, m)] = m
            submitted += 1

    submit()
    outcomes: dict[str, Kept] = {}
    progress.start()
    last_done = time.monotonic()
    while pending:
        done, _ = ray.wait(list(pending), num_returns=min(len(pending), WAIT_BATCH),
                           timeout=WAIT_TIMEOUT_S)
        stopping.check()
        finished: list[tuple[str, PersistOutcome]] = []
        try:  # one call for the batch; one per object only when some task failed
            values = ray.get(done) if done else []
            finished += [(pending.pop(obj), v) for obj, v in zip(done, values, strict=True)]
        except RayError:
            for obj in done:
                member = pending.pop(obj)
                try:
                    finished.append((member, ray.get(obj)))
                except RayError as exc:
                    key = layout.member_key(member, spec.codec)
                    finished.append((member, ray_failure(spec, member, key, exc)))
        if done:
            last_done = time.monotonic()
        elif time.monotonic() - last_done > stall_timeout:
            finished.extend((f.member, f) for f in _give_up(
                spec, pending, members[submitted:], layout, "stalled",
                f"no member finished for {stall_timeout:.0f}s",
                " (hung predictor, or no resources to schedule it)"))
            submitted = len(members)
        for member, outcome in finished:
            if circuit is not None:
                if isinstance(outcome, PredictionRef):
                    circuit.progress()
                else:
                    circuit.failure(outcome.error_class)
            _record(member, outcome, outcomes, events, spec, progress, on_outcome)
        if (pending or submitted < len(members)) and circuit is not None and circuit.tick():
            unsubmitted = members[submitted:]
            lost = sorted([*pending.values(), *unsubmitted])
            events.emit(ev.STORE_CIRCUIT_OPEN, "error", error_class="unreachable",
                        reason=circuit.reason, store=spec.store.url,
                        endpoint=spec.store.endpoint_url, not_persisted=len(lost),
                        members=lost[:ev.MAX_LISTED])
            for f in _give_up(spec, pending, unsubmitted, layout, CIRCUIT_OPEN,
                              f"not persisted: {circuit.reason}"):
                _record(f.member, f, outcomes, events, spec, progress, on_outcome)
            submitted = len(members)
        submit()  # as many as finished: the ObjectRefs fetched are gone with their tasks
    progress.close()
    return outcomes


def _record(member: str, outcome: PersistOutcome, outcomes: dict[str, Kept],
            events: ev.EventLog, spec: TaskSpec, progress: Progress,
            on_outcome: Callable[[str, PersistOutcome], None] | None) -> None:
    if isinstance(outcome, PredictionRef):
        outcomes[member] = Persisted.of(member, outcome)
        events.emit(ev.PRED_PERSISTED, member=member, key=outcome.key,
                    bytes=outcome.bytes, write_seconds=round(outcome.write_seconds, 6),
                    node_id=outcome.node_id, s3_retries=outcome.s3_retries,
                    attempt=outcome.attempt, run_attempt=outcome.run_attempt)
    else:
        outcomes[member] = outcome
        events.emit(ev.PRED_PERSIST_FAILED, "error", member=member, key=outcome.key,
                    error_class=outcome.error_class, attempts=outcome.attempts,
                    node_id=outcome.node_id, seconds=round(outcome.seconds, 6),
                    endpoint=spec.store.endpoint_url, store=spec.store.url,
                    message=outcome.message, run_attempt=spec.attempt)
    progress.advance(failed=not isinstance(outcome, PredictionRef))
    if on_outcome is not None:
        on_outcome(member, outcome)
