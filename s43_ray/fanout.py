"""The fan-out: one persist task per member, references gathered as they finish.

Three things end a member: its reference, its task's failure, or the run giving up on it: a
stall (no member finished for ``stall_timeout``) or an open circuit (the store stopped
answering, :mod:`s43_ray.circuit`). When the circuit opens, nothing more is scheduled, every
task still in flight is cancelled and every member not persisted is named.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError

from . import events as ev
from .circuit import Circuit
from .errors import S43Error
from .keys import RunLayout
from .progress import Progress
from .task import PersistFailure, PersistOutcome, PredictionRef, TaskSpec, persist_task

# Collect finished tasks in batches of this size so a 100,000-member run is not O(n^2) waits.
WAIT_BATCH = 256
# A run in which no member finishes for this long is stalled: its pending tasks are cancelled
# and reported (error_class "stalled") instead of hanging the job without a word.
STALL_TIMEOUT_S = 900.0
# How often the progress bar moves (and the circuit is looked at) when no task finishes.
WAIT_TIMEOUT_S = 0.5
# Error class of the members a run gave up on because the store stopped answering.
CIRCUIT_OPEN = "circuit_open"


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


def _give_up(spec: TaskSpec, pending: dict[Any, str], layout: RunLayout, error_class: str,
             message: str) -> list[PersistFailure]:
    """Cancel every task still pending and fail its member with ``error_class``."""
    failures = []
    for obj, member in pending.items():
        with contextlib.suppress(Exception):
            ray.cancel(obj, force=True)
        failures.append(PersistFailure(spec.run_id, member, layout.member_key(member, spec.codec),
                                       error_class, message))
    pending.clear()
    return failures


def fan_out(spec: TaskSpec, members: Sequence[str], events: ev.EventLog,
            progress: Progress, task_options: Mapping[str, Any],
            stall_timeout: float = STALL_TIMEOUT_S,
            member_options: Callable[[str], Mapping[str, Any]] | None = None,
            on_outcome: Callable[[str, PersistOutcome], None] | None = None,
            circuit: Circuit | None = None,
            ) -> dict[str, PersistOutcome]:
    """Submit one persist task per member and gather their references as they finish."""
    layout = spec.layout
    pending = {}
    for m in members:
        opts = {**task_options, **member_options(m)} if member_options else task_options
        pending[persist_task.options(**opts).remote(spec, m)] = m
    outcomes: dict[str, PersistOutcome] = {}
    progress.start()
    last_done = time.monotonic()
    while pending:
        done, _ = ray.wait(list(pending), num_returns=min(len(pending), WAIT_BATCH),
                           timeout=WAIT_TIMEOUT_S)
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
                spec, pending, layout, "stalled",
                f"no member finished for {stall_timeout:.0f}s; task cancelled "
                "(hung predictor, or no resources to schedule it)"))
        for member, outcome in finished:
            if circuit is not None:
                if isinstance(outcome, PredictionRef):
                    circuit.progress()
                else:
                    circuit.failure(outcome.error_class)
            _record(member, outcome, outcomes, events, spec, progress, on_outcome)
        if pending and circuit is not None and circuit.tick():
            events.emit(ev.STORE_CIRCUIT_OPEN, "error", error_class="unreachable",
                        reason=circuit.reason, store=spec.store.url,
                        endpoint=spec.store.endpoint_url, not_persisted=len(pending),
                        members=sorted(pending.values())[:ev.MAX_LISTED])
            for f in _give_up(spec, pending, layout, CIRCUIT_OPEN,
                              f"not persisted: {circuit.reason}; task cancelled"):
                _record(f.member, f, outcomes, events, spec, progress, on_outcome)
    progress.close()
    return outcomes


def _record(member: str, outcome: PersistOutcome, outcomes: dict[str, PersistOutcome],
            events: ev.EventLog, spec: TaskSpec, progress: Progress,
            on_outcome: Callable[[str, PersistOutcome], None] | None) -> None:
    outcomes[member] = outcome
    if isinstance(outcome, PredictionRef):
        events.emit(ev.PRED_PERSISTED, member=member, key=outcome.key,
                    bytes=outcome.bytes, write_seconds=round(outcome.write_seconds, 6),
                    node_id=outcome.node_id, s3_retries=outcome.s3_retries,
                    attempt=outcome.attempt, run_attempt=outcome.run_attempt)
    else:
        events.emit(ev.PRED_PERSIST_FAILED, "error", member=member, key=outcome.key,
                    error_class=outcome.error_class, attempts=outcome.attempts,
                    node_id=outcome.node_id, seconds=round(outcome.seconds, 6),
                    endpoint=spec.store.endpoint_url, store=spec.store.url,
                    message=outcome.message, run_attempt=spec.attempt)
    progress.advance(failed=not isinstance(outcome, PredictionRef))
    if on_outcome is not None:
        on_outcome(member, outcome)
