"""The driver: claim the run, fan out one persist task per member, gather references only,
write the attempt's ledger, gate from the store, keep the verdict.

It never receives arrays: a task returns a :class:`~s43_ray.task.PredictionRef` of a few hundred
bytes, so the driver's memory does not grow with the payload. Every store call it makes itself
is watched by the run's circuit (:mod:`s43_ray.circuit`): a store that stops answering fails
the run in about a minute and a half, naming every member not persisted.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError, RayTaskError

from . import events as ev
from . import metrics, stopping
from .circuit import Circuit, CircuitConfig, WatchedStore, watched
from .cluster import ray_session
from .codec import DEFAULT_CODEC, Codec
from .config import AnyStoreConfig
from .early import EarlyChecks
from .errors import ClusterError, CodecMismatch, InputError, S43Error, StoreUnreachable
from .fanout import STALL_TIMEOUT_S, WAIT_BATCH, Kept, Persisted, fan_out, first_line
from .gate import GATE_CONCURRENCY, GateSpec, Verdict, gate_from_store, gate_task, run_gate
from .keys import RunLayout
from .ledger import AttemptKind, Ledger, LedgerEntry, claim_attempt, read_ledger, write_ledger
from .manifest import RunManifest, check_run, claim_run
from .outcome import Tally, newer_if_latest, persist_verdict, report_verdict, summarize
from .predict import (
    DEFAULT_PREDICTOR,
    PredictorLike,
    declared_schema,
    predictor_name,
    resolve_predictor,
)
from .progress import Progress
from .stores import open_store
from .stores.base import Store
from .summary import Summary
from .task import PersistFailure, PersistOutcome, PredictionRef, TaskSpec
from .verdicts import Saved
from .verify import VerifyMode

__all__ = ["STALL_TIMEOUT_S", "WAIT_BATCH", "RunConfig", "gate_existing", "run_cohort",
           "summarize"]

log = logging.getLogger("s43_ray.driver")

# The gate task must answer within this long (it lists and verifies; 10,000 members take
# seconds to minutes); past it the run exits 3.
GATE_TIMEOUT_S = 1800.0
# How often the wait for the gate's verdict looks for a stop asked by a signal (stopping.py).
GATE_POLL_S = 1.0
# How long the gate waits for the early checks still running when the last member lands;
# what is not done by then, the gate verifies itself.
EARLY_WAIT_S = 30.0


@dataclass(frozen=True)
class RunConfig:
    """One cohort run (everything but the store)."""

    run_id: str
    members: tuple[str, ...]
    rows: int = 10_000  # predictions per member: ~200 KiB a member with the default predictor
    codec: Codec = DEFAULT_CODEC
    predictor: PredictorLike = DEFAULT_PREDICTOR  # a function, or module:function
    address: str | None = None  # None: start a local Ray cluster
    num_cpus: int | None = None  # local cluster only; None: every core
    verify: VerifyMode = "full"  # full: GET + checksum + decode; head: store checksums only
    gate_concurrency: int = GATE_CONCURRENCY
    stall_timeout: float = STALL_TIMEOUT_S  # seconds without a finished member
    resume: bool = False  # keep members already in the store and verified; compute the rest
    gate_timeout: float = GATE_TIMEOUT_S
    circuit: CircuitConfig = field(default_factory=CircuitConfig)  # when a hung store fails
    task_options: Mapping[str, Any] = field(default_factory=dict)
    gate_options: Mapping[str, Any] = field(default_factory=dict)
    # Per-member Ray options on top of task_options (e.g. node affinity in the smoke).
    member_options: Callable[[str], Mapping[str, Any]] | None = None
    # Called in the driver for each member as it finishes (e.g. the smoke removes a node).
    on_outcome: Callable[[str, PersistOutcome], None] | None = None


def resume_plan(store: Store, layout: RunLayout, cfg: RunConfig, record: RunManifest,
                breaker: Circuit) -> tuple[dict[str, LedgerEntry], list[str]]:
    """For ``--resume``: the members to reuse, each with the ledger entry of the object already
    in the store (bound to this run and member, its schema the run's, its checksum verified and,
    when the attempt that wrote it left a ledger, equal to that ledger's), and the members to
    compute (missing, invalid, or written by an attempt whose ledger disagrees)."""
    check = run_gate(store, layout, members=cfg.members,
                     codec=cfg.codec, mode=cfg.verify, concurrency=cfg.gate_concurrency,
                     node_id="driver", declared_schema=record.schema_digest,
                     circuit=breaker.cfg)
    ledgers: dict[int, Ledger | None] = {}
    reuse: dict[str, LedgerEntry] = {}
    for c in check.checks:
        if c.status != "ok" or c.attempt is None:
            continue
        if c.attempt not in ledgers:
            number = c.attempt
            try:
                ledgers[number] = watched(breaker, partial(read_ledger, store, layout, number),
                                          what=f"reading {layout.ledger_key(number)}")
            except CodecMismatch:  # a ledger that is not its attempt's vouches for nothing
                ledgers[number] = Ledger(cfg.run_id, number, cfg.codec, entries={})
        ledger = ledgers[c.attempt]
        entry = ledger.entries.get(c.member) if ledger is not None else None
        if ledger is not None and (entry is None or entry.checksum != c.checksum):
            continue  # its attempt's ledger does not vouch for it: compute it again
        reuse[c.member] = LedgerEntry(c.key, c.checksum, c.bytes, c.schema, c.attempt)
    return reuse, [m for m in cfg.members if m not in reuse]


@dataclass(frozen=True)
class _Preflight:
    """What the driver knows once the store answered and the run id may be claimed."""

    store: Store
    breaker: Circuit
    wstore: WatchedStore
    layout: RunLayout
    wanted: RunManifest


def _preflight(cfg: RunConfig, store_cfg: AnyStoreConfig) -> _Preflight:
    """The store answers, and the run id may be claimed for this cohort: exit 3 or 2 before
    anything is written."""
    store = open_store(store_cfg)
    breaker = Circuit.for_store(store, cfg.circuit)
    wstore = WatchedStore(store, breaker)
    watched(breaker, wstore.check, what=f"checking {store_cfg.url}")
    layout = RunLayout(store_cfg.prefix, cfg.run_id)
    schema = declared_schema(resolve_predictor(cfg.predictor), cfg.rows)
    wanted = RunManifest.new(cfg.run_id, cfg.members, cfg.codec, cfg.rows,
                             predictor_name(cfg.predictor), schema)
    # Another cohort under this run id, or a --resume of nothing, is refused (exit 2); the
    # atomic claim decides races.
    existing = watched(breaker, lambda: check_run(wstore, layout, wanted, resume=cfg.resume),
                       what=f"reading {layout.manifest_key}")
    if cfg.resume and existing is None:
        raise InputError(f"cannot resume run {cfg.run_id!r}: it has no record in "
                         f"{store_cfg.url}; expected a run started earlier (drop --resume to "
                         "start it)")
    return _Preflight(store, breaker, wstore, layout, wanted)


def run_cohort(cfg: RunConfig, store_cfg: AnyStoreConfig, events: ev.EventLog,
               progress: Progress | None = None, *,
               store_starting: Callable[[], None] | None = None) -> Summary:
    """The main job: claim the run, persist every member through S3, write the ledger, then
    gate the cohort from the store.

    The store is checked and the run id's record read before Ray starts (bad input exits 2
    at once), except when ``store_starting`` is given: a server still coming up (the embedded
    one), which then starts while Ray does, and is waited for once Ray is up."""
    t0 = time.perf_counter()
    metrics.watch_stores()
    pre = None if store_starting is not None else _preflight(cfg, store_cfg)
    if progress is None:
        progress = Progress(len(cfg.members), enabled=False)
    with ray_session(cfg.address, cfg.num_cpus):
        if pre is None:
            assert store_starting is not None
            store_starting()
            pre = _preflight(cfg, store_cfg)
        store, breaker, wstore, layout, wanted = (pre.store, pre.breaker, pre.wstore,
                                                  pre.layout, pre.wanted)
        # Claimed only once the store and the cluster both answer: a refused run leaves nothing.
        claim = watched(breaker, lambda: claim_run(wstore, layout, wanted),
                        what=f"claiming {layout.manifest_key}")
        record = claim.record
        kind: AttemptKind = "resume" if cfg.resume else ("first" if claim.created else "rerun")
        attempt = watched(breaker, lambda: claim_attempt(wstore, layout, kind),
                          what=f"claiming an attempt of run {cfg.run_id!r}")
        reused: dict[str, LedgerEntry] = {}
        todo = list(cfg.members)
        if cfg.resume:
            reused, todo = resume_plan(store, layout, cfg, record, breaker)
        progress.total = len(todo)
        events.emit(ev.RUN_STARTED, members=len(cfg.members), codec=cfg.codec, rows=cfg.rows,
                    store=store_cfg.url, endpoint=store_cfg.endpoint_url,
                    predictor=wanted.predictor, created_at=record.created_at,
                    resume=cfg.resume, reused=len(reused), to_compute=len(todo),
                    attempt=attempt.number, attempt_kind=kind, holder=attempt.holder,
                    schema=record.schema_digest)
        spec = TaskSpec(store_cfg, cfg.run_id, cfg.codec, cfg.rows, cfg.predictor,
                        attempt=attempt.number, schema=record.schema_digest)
        early = EarlyChecks(wstore, layout, cfg.codec, cfg.verify, attempt.number,
                            record.schema_digest, cfg.gate_concurrency)

        def arrived(member: str, outcome: PersistOutcome) -> None:
            if isinstance(outcome, PredictionRef):
                early.submit(outcome)
            if cfg.on_outcome is not None:
                cfg.on_outcome(member, outcome)

        try:
            outcomes = fan_out(spec, todo, events, progress, cfg.task_options,
                               cfg.stall_timeout, cfg.member_options, arrived,
                               circuit=breaker)
            if breaker.is_open:
                progress.clear()
                return _circuit_summary(cfg, store_cfg, layout, events, outcomes, reused,
                                        attempt.number, breaker.reason, time.perf_counter() - t0)
            _write_ledger(breaker, wstore, layout, cfg, attempt.number, attempt.token,
                          reused, outcomes, events)
            # The ledger holds the references now: the summary needs only their counts, so
            # they go before the gate's verdict (one check per member) arrives.
            tally, reuses = Tally(outcomes.values()), len(reused)
            del outcomes, reused
            progress.status(f"gate: listing and verifying {len(cfg.members)} members ...")
            seen = early.results(EARLY_WAIT_S)
        finally:
            early.close()  # its threads end; what is unfinished, the gate verifies
        gate_ref = gate_task.options(**cfg.gate_options).remote(GateSpec(
            store_cfg, cfg.run_id, tuple(cfg.members), cfg.codec, attempt.number, cfg.verify,
            cfg.gate_concurrency, cfg.circuit, seen=seen))
        del seen  # shipped with the gate task
        verdict = _await_gate(gate_ref, cfg.gate_timeout)
        del gate_ref  # Ray frees the verdict's serialized copy
        # Inside the Ray session: the driver's metrics are flushed by ray.shutdown().
        metrics.record_gate(verdict.status)
        metrics.record_cohort(cfg.run_id, verdict.expected, verdict.cohort_count, store_cfg.url)
        # The verdict is kept before the session ends: a local cluster takes a second or more
        # to shut down, and the verdict does not wait for it.
        progress.clear()
        report_verdict(verdict, events, store_cfg.endpoint_url)
        saved = _persist(breaker, wstore, layout, verdict, events)
        newer = watched(breaker, lambda: newer_if_latest(wstore, layout, verdict, saved),
                        what=f"listing the attempts of run {cfg.run_id!r}")
    summary = summarize(verdict, command="run", store_cfg=store_cfg, gate_key=layout.gate_key,
                        gate_persisted=saved is not None, wall=time.perf_counter() - t0,
                        outcomes=tally, saved=saved, newer=newer)
    summary.reused = reuses
    summary.computed = tally.computed
    return summary


def _write_ledger(breaker: Circuit, store: Store, layout: RunLayout, cfg: RunConfig,
                  attempt: int, token: str, reused: Mapping[str, LedgerEntry],
                  outcomes: Mapping[str, Kept], events: ev.EventLog) -> None:
    """The attempt's ledger: every member reused or persisted, and why the others failed.
    Built, written and dropped here: the driver keeps no second copy of it through the gate."""
    ledger = Ledger(cfg.run_id, attempt, cfg.codec, entries={
        **reused, **{m: LedgerEntry(o.key, o.checksum, o.bytes, o.schema, attempt)
                     for m, o in outcomes.items() if isinstance(o, Persisted)}},
        failed={m: f"{o.error_class}: {o.message}"[:300] for m, o in outcomes.items()
                if isinstance(o, PersistFailure)},
        cohort=tuple(cfg.members), token=token)
    watched(breaker, lambda: write_ledger(store, layout, ledger),
            what=f"writing {layout.ledger_key(attempt)}")
    events.emit(ev.LEDGER_PERSISTED, key=layout.ledger_key(attempt), attempt=attempt,
                members=len(ledger.entries), failed=len(ledger.failed))


def _await_gate(gate_ref: Any, timeout: float) -> Verdict:
    deadline = time.monotonic() + timeout
    while not ray.wait([gate_ref], timeout=min(GATE_POLL_S, timeout))[0]:
        stopping.check()
        if time.monotonic() >= deadline:
            break  # ray.get below times out at once
    try:
        verdict: Verdict = ray.get(gate_ref, timeout=max(0.0, deadline - time.monotonic()))
    except RayTaskError as exc:
        if isinstance(exc.cause, S43Error):
            raise exc.cause from None
        raise ClusterError(f"gate task failed: {first_line(exc)}") from exc
    except GetTimeoutError as exc:
        with contextlib.suppress(Exception):
            ray.cancel(gate_ref, force=True)
        raise ClusterError(f"gate task gave no verdict within {timeout:.0f}s "
                           "(no resources to schedule it, or the store is too slow)") from exc
    except RayError as exc:
        raise ClusterError(f"gate task failed: {first_line(exc)}") from exc
    return verdict


def _persist(breaker: Circuit, store: Store, layout: RunLayout, verdict: Verdict,
             events: ev.EventLog) -> Saved | None:
    """:func:`persist_verdict`, abandoned (with its error event) if the store hangs."""
    try:
        return watched(breaker, lambda: persist_verdict(store, layout, verdict, events),
                       what=f"writing {layout.gate_key}")
    except StoreUnreachable as exc:
        events.emit(ev.GATE_PERSIST_FAILED, "error", key=layout.gate_key,
                    error_class=exc.error_class, message=str(exc), status=verdict.status,
                    store=store.url)
        return None


def _circuit_summary(cfg: RunConfig, store_cfg: AnyStoreConfig, layout: RunLayout,
                     events: ev.EventLog, outcomes: Mapping[str, Kept],
                     reused: Mapping[str, LedgerEntry], attempt: int, reason: str,
                     wall: float) -> Summary:
    """The run gave up on a store that stopped answering: no ledger, no gate (both need the
    store); every member not persisted is named, and the run exits 3."""
    done = set(reused) | {m for m, o in outcomes.items() if isinstance(o, Persisted)}
    lost = [m for m in cfg.members if m not in done]
    why = (f"run {cfg.run_id!r}: {reason}; circuit open after {len(done)} of "
           f"{len(cfg.members)} members persisted; {len(lost)} not persisted: "
           f"{lost[:10]}{f' (+{len(lost) - 10} more)' if len(lost) > 10 else ''}; the gate did "
           f"not run; `s43-ray run --run-id {cfg.run_id} --resume` finishes it")
    # cohort_count: members whose PUT the store confirmed (not gated: the gate needs the store).
    verdict = Verdict(run_id=cfg.run_id, store=store_cfg.url, codec=cfg.codec,
                      expected=len(cfg.members), cohort_count=len(done), status="failed",
                      reason=why, missing=lost, invalid={}, unexpected=[], attempt=attempt,
                      basis="none")
    events.emit(ev.RUN_FAILED, "error", command="run", error_class="unreachable", exit_code=3,
                message=why, attempt=attempt)
    tally = Tally(outcomes.values())
    summary = summarize(verdict, command="run", store_cfg=store_cfg, gate_key=layout.gate_key,
                        gate_persisted=False, wall=wall, outcomes=tally)
    summary.reused = len(reused)
    summary.computed = tally.computed
    summary.infra_errors = max(summary.infra_errors, len(lost))
    return summary


def gate_existing(store_cfg: AnyStoreConfig, layout: RunLayout, *, members: Sequence[str],
                  codec: Codec, expected: int | None, events: ev.EventLog,
                  verify: VerifyMode = "full",
                  concurrency: int = GATE_CONCURRENCY, circuit: CircuitConfig | None = None
                  ) -> Summary:
    """Re-check a run from the store alone: its record and its latest ledger, no references."""
    t0 = time.perf_counter()
    store = open_store(store_cfg)
    breaker = Circuit.for_store(store, circuit)
    verdict = gate_from_store(store, layout, members=members, codec=codec, expected=expected,
                              mode=verify, concurrency=concurrency, node_id="driver",
                              circuit=circuit)
    report_verdict(verdict, events, store_cfg.endpoint_url)
    saved = _persist(breaker, WatchedStore(store, breaker), layout, verdict, events)
    return summarize(verdict, command="gate", store_cfg=store_cfg, gate_key=layout.gate_key,
                     gate_persisted=saved is not None, wall=time.perf_counter() - t0,
                     saved=saved)
