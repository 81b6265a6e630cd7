"""The driver: fan out one persist task per member, gather references only, gate, persist verdict.

It never receives arrays: a task returns a :class:`~s43_ray.task.PredictionRef` of a few hundred
bytes, so the driver's memory does not grow with the payload.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError, RayTaskError

from . import events as ev
from . import metrics
from .codec import Codec
from .config import AnyStoreConfig
from .errors import INFRA_ERROR_CLASSES, ClusterError, InputError, S43Error
from .gate import Expectation, Verdict, VerifyMode, gate_task, run_gate
from .keys import RunLayout
from .manifest import RunManifest, claim_run, read_manifest, write_manifest
from .progress import Progress
from .store import Store, open_store
from .summary import Summary, latency_stats
from .task import PersistFailure, PersistOutcome, PredictionRef, TaskSpec, persist_task

log = logging.getLogger("s43_ray.driver")

# A local cluster's object store only ever holds references; Ray's minimum is 75 MiB.
LOCAL_OBJECT_STORE_BYTES = 128 * 1024**2
# Collect finished tasks in batches of this size so a 100,000-member run is not O(n^2) waits.
WAIT_BATCH = 256
# A Ray address that does not accept a TCP connection within this time is unreachable.
RAY_PROBE_TIMEOUT_S = 5.0
# A run in which no member finishes for this long is stalled: its pending tasks are cancelled
# and reported (error_class "stalled") instead of hanging the job without a word.
STALL_TIMEOUT_S = 900.0
# The gate task must answer within this long (it lists and verifies; 10,000 members take
# seconds to minutes); past it the run exits 3.
GATE_TIMEOUT_S = 1800.0
# How often the progress bar moves when no task finishes.
WAIT_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class RunConfig:
    """One cohort run (everything but the store)."""

    run_id: str
    members: tuple[str, ...]
    rows: int = 10_000  # predictions per member: ~200 KiB a member with the default predictor
    codec: Codec = "arrow"  # see the README's benchmark section for why
    predictor: str = "s43_ray.predict:default_predictor"
    address: str | None = None  # None: start a local Ray cluster
    num_cpus: int | None = None  # local cluster only; None: every core
    verify: VerifyMode = "full"  # full: GET + checksum + decode; head: store checksums only
    gate_concurrency: int = 16
    stall_timeout: float = STALL_TIMEOUT_S  # seconds without a finished member
    resume: bool = False  # keep members already in the store and verified; compute the rest
    gate_timeout: float = GATE_TIMEOUT_S
    task_options: Mapping[str, Any] = field(default_factory=dict)
    gate_options: Mapping[str, Any] = field(default_factory=dict)
    # Per-member Ray options on top of task_options (e.g. node affinity in the smoke).
    member_options: Callable[[str], Mapping[str, Any]] | None = None
    # Called in the driver for each member as it finishes (e.g. the smoke removes a node).
    on_outcome: Callable[[str, PersistOutcome], None] | None = None


def probe_address(address: str, timeout: float = RAY_PROBE_TIMEOUT_S) -> None:
    """Fail fast if a ``host:port`` (or ``ray://host:port``) Ray address does not answer:
    ``ray.init`` itself retries an unreachable GCS for minutes."""
    if address == "auto" or address.startswith("local"):
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"Ray address {address!r} is not valid; expected HOST:PORT, "
                         "ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(f"Ray at {address} is unreachable ({exc.strerror or exc}); expected "
                           "a running cluster's address") from exc


def _keep_every_worker_log_line() -> None:
    """Ray folds repeated worker lines ("[repeated 2x across cluster]") in the driver's output;
    each S3 retry warning names its attempt, so keep them all unless RAY_DEDUP_LOGS is set."""
    if "RAY_DEDUP_LOGS" in os.environ:
        return
    with contextlib.suppress(Exception):  # a private switch: never fail a run over it
        from ray._private import ray_logging

        ray_logging.RAY_DEDUP_LOGS = False  # type: ignore[attr-defined]


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to ``address`` or start a local cluster; disconnect (and stop it) afterwards.
    A session the caller already opened is reused and left open."""
    if ray.is_initialized():
        yield
        return
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        probe_address(address)
        kwargs["address"] = address
    else:
        # "local" starts a new cluster even when a `ray start` cluster runs on this machine.
        kwargs.update(address="local", num_cpus=num_cpus,
                      object_store_memory=LOCAL_OBJECT_STORE_BYTES, include_dashboard=False)
    _keep_every_worker_log_line()
    on_main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if on_main else None
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local cluster"
        raise ClusterError(f"Ray at {where} could not be reached or started: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                           ) from exc
    if on_main and sigterm is not None:
        # Ray's core worker installs a crash handler that aborts on SIGTERM; put the caller's
        # handler back so that SIGTERM cleans up (embedded server, local cluster) like Ctrl-C.
        signal.signal(signal.SIGTERM, sigterm)
    try:
        yield
    finally:
        ray.shutdown()  # drains forwarded worker logs before the summary is printed


def _ray_failure(spec: TaskSpec, member: str, key: str, exc: RayError) -> PersistFailure:
    cause = exc.cause if isinstance(exc, RayTaskError) else None
    if isinstance(cause, S43Error):
        return PersistFailure(spec.run_id, member, key, cause.error_class, str(cause))
    name = type(exc).__name__
    klass = {"WorkerCrashedError": "worker_died", "NodeDiedError": "node_died",
             "TaskUnschedulableError": "unschedulable", "OutOfMemoryError": "oom",
             "TaskCancelledError": "cancelled"}.get(name, "task_error")
    return PersistFailure(spec.run_id, member, key, klass, _first_line(exc))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:500]


def _stalled(spec: TaskSpec, pending: dict[Any, str], stall_timeout: float,
             layout: RunLayout) -> list[PersistFailure]:
    """Cancel every task still pending after no member finished for ``stall_timeout``."""
    failures = []
    for obj, member in pending.items():
        with contextlib.suppress(Exception):
            ray.cancel(obj, force=True)
        failures.append(PersistFailure(
            spec.run_id, member, layout.member_key(member, spec.codec), "stalled",
            f"no member finished for {stall_timeout:.0f}s; task cancelled "
            "(hung predictor, or no resources to schedule it)"))
    pending.clear()
    return failures


def fan_out(spec: TaskSpec, members: Sequence[str], events: ev.EventLog,
            progress: Progress, task_options: Mapping[str, Any],
            stall_timeout: float = STALL_TIMEOUT_S,
            member_options: Callable[[str], Mapping[str, Any]] | None = None,
            on_outcome: Callable[[str, PersistOutcome], None] | None = None,
            ) -> dict[str, PersistOutcome]:
    """Submit one persist task per member and gather their references as they finish."""
    layout = RunLayout(spec.store.prefix, spec.run_id)
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
        for obj in done:
            member = pending.pop(obj)
            try:
                finished.append((member, ray.get(obj)))
            except RayError as exc:
                key = layout.member_key(member, spec.codec)
                finished.append((member, _ray_failure(spec, member, key, exc)))
        if done:
            last_done = time.monotonic()
        elif time.monotonic() - last_done > stall_timeout:
            finished.extend((f.member, f) for f in _stalled(spec, pending, stall_timeout,
                                                            layout))
        for member, outcome in finished:
            outcomes[member] = outcome
            if isinstance(outcome, PredictionRef):
                events.emit(ev.PRED_PERSISTED, member=member, key=outcome.key,
                            bytes=outcome.bytes, write_seconds=round(outcome.write_seconds, 6),
                            node_id=outcome.node_id, s3_retries=outcome.s3_retries,
                            attempt=outcome.attempt)
            else:
                events.emit(ev.PRED_PERSIST_FAILED, "error", member=member, key=outcome.key,
                            error_class=outcome.error_class, attempts=outcome.attempts,
                            node_id=outcome.node_id, seconds=round(outcome.seconds, 6),
                            endpoint=spec.store.endpoint_url, store=spec.store.url,
                            message=outcome.message)
            progress.advance(failed=not isinstance(outcome, PredictionRef))
            if on_outcome is not None:
                on_outcome(member, outcome)
    progress.close()
    return outcomes


def report_verdict(verdict: Verdict, events: ev.EventLog, endpoint: str | None) -> None:
    """The gate's events: one load failure per invalid member, acquisition, then the outcome."""
    for check in verdict.checks:
        if check.status == "invalid":
            events.emit(ev.PRED_LOAD_FAILED, "error", member=check.member, key=check.key,
                        error_class=check.error_class, message=check.detail, endpoint=endpoint,
                        node_id=verdict.node_id, seconds=round(check.read_seconds, 6))
    events.emit(ev.ACQUIRE_OUTCOME, "info" if verdict.cohort_count == verdict.expected
                else "warning", keys=verdict.cohort_count, expected=verdict.expected,
                listed=verdict.listed_keys, missing=len(verdict.missing),
                invalid=len(verdict.invalid), unexpected=len(verdict.unexpected),
                outcome="complete" if verdict.cohort_count == verdict.expected else "partial",
                store=verdict.store)
    events.emit(ev.GATE_OUTCOME, "info" if verdict.passed else "error",
                status=verdict.status, cohort_count=verdict.cohort_count,
                expected=verdict.expected, shortfall=verdict.shortfall,
                missing=verdict.missing[:ev.MAX_LISTED], invalid=sorted(verdict.invalid)[
                    :ev.MAX_LISTED], unexpected=len(verdict.unexpected),
                error_class="" if verdict.passed else "cohort_incomplete",
                reason=verdict.reason,
                gate_node=verdict.node_id, gate_seconds=round(verdict.gate_seconds, 3),
                store=verdict.store, endpoint=endpoint)


def persist_verdict(store: Store, layout: RunLayout, verdict: Verdict,
                    events: ev.EventLog) -> bool:
    """Write ``_gate.json`` next to the data; an error event (never an exception) if it fails."""
    try:
        store.put(layout.gate_key, verdict.to_json(), metadata={"s43-kind": "gate",
                                                                "s43-status": verdict.status},
                  content_type="application/json")
    except S43Error as exc:
        events.emit(ev.GATE_PERSIST_FAILED, "error", key=layout.gate_key,
                    error_class=exc.error_class, message=str(exc), status=verdict.status,
                    store=store.url)
        return False
    events.emit(ev.GATE_PERSISTED, key=layout.gate_key, status=verdict.status)
    return True


def summarize(verdict: Verdict, *, command: str, store_cfg: AnyStoreConfig, gate_key: str,
              gate_persisted: bool, wall: float,
              outcomes: Mapping[str, PersistOutcome] | None = None) -> Summary:
    refs = [o for o in (outcomes or {}).values() if isinstance(o, PredictionRef)]
    failures = {o.member: f"{o.error_class}: {o.message}" for o in (outcomes or {}).values()
                if isinstance(o, PersistFailure)}
    ok = [c for c in verdict.checks if c.status == "ok"]
    read = [c for c in ok if c.downloaded]
    counted = {c.member for c in ok}
    infra = {c.member for c in verdict.checks
             if c.status != "ok" and c.error_class in INFRA_ERROR_CLASSES}
    infra |= {o.member for o in (outcomes or {}).values()
              if isinstance(o, PersistFailure) and o.error_class in INFRA_ERROR_CLASSES
              and o.member not in counted}
    return Summary(
        run_id=verdict.run_id, status=verdict.status, expected=verdict.expected,
        cohort_count=verdict.cohort_count, missing=verdict.missing, invalid=verdict.invalid,
        unexpected=verdict.unexpected, persist_failed=failures, reason=verdict.reason,
        command=command,
        codec=verdict.codec, store=store_cfg.url, endpoint=store_cfg.endpoint_url,
        bytes_written=sum(r.bytes for r in refs), bytes_read=sum(c.bytes for c in read),
        write_latency_s=latency_stats([r.write_seconds for r in refs]),
        read_latency_s=latency_stats([c.read_seconds for c in read]), infra_errors=len(infra),
        wall_seconds=round(wall, 3), writer_nodes=len({r.node_id for r in refs}),
        gate_node=verdict.node_id, gate_key=gate_key, gate_persisted=gate_persisted,
        s3_retries=sum(r.s3_retries for r in refs), task_retries=sum(r.attempt for r in refs))


def resume_plan(store: Store, cfg: RunConfig, store_cfg: AnyStoreConfig,
                wanted: RunManifest) -> tuple[RunManifest, list[str], list[str]]:
    """For ``--resume``: the run's recorded manifest, the members to reuse (present and
    verified, checksum included) and the members to compute (missing or invalid)."""
    layout = RunLayout(store_cfg.prefix, cfg.run_id)
    manifest = read_manifest(store, layout)
    if manifest is None:
        raise InputError(f"cannot resume run {cfg.run_id!r}: it has no record in "
                         f"{store_cfg.url}; expected a run started earlier (drop --resume to "
                         "start it)")
    diff = manifest.differences(wanted)
    if diff:
        raise InputError(f"cannot resume run {cfg.run_id!r}: it was started with a different "
                         f"cohort: {'; '.join(diff)}; expected the same members, --format, "
                         "--rows and --predictor")
    check = run_gate(store, run_id=cfg.run_id, prefix=store_cfg.prefix, members=cfg.members,
                     codec=cfg.codec, mode=cfg.verify, concurrency=cfg.gate_concurrency,
                     node_id="driver")
    reuse = [c.member for c in check.checks if c.status == "ok"]
    ok = set(reuse)
    return manifest, reuse, [m for m in cfg.members if m not in ok]


def run_cohort(cfg: RunConfig, store_cfg: AnyStoreConfig, events: ev.EventLog,
               progress: Progress | None = None) -> Summary:
    """The main job: persist every member through S3, then gate the cohort from the store."""
    t0 = time.perf_counter()
    store = open_store(store_cfg)
    store.check()  # exit 3 before anything is written if the store is unreachable or refuses
    layout = RunLayout(store_cfg.prefix, cfg.run_id)
    spec = TaskSpec(store_cfg, cfg.run_id, cfg.codec, cfg.rows, cfg.predictor)
    wanted = RunManifest.new(cfg.run_id, cfg.members, cfg.codec, cfg.rows, cfg.predictor)
    reused: list[str] = []
    todo = list(cfg.members)
    if cfg.resume:  # a resumed run must match what it was started with (exit 2 otherwise)
        manifest, reused, todo = resume_plan(store, cfg, store_cfg, wanted)
    else:  # a reused run id with another cohort is refused (exit 2) before Ray starts
        manifest = claim_run(store, layout, wanted, write=False)
    if progress is None:
        progress = Progress(len(todo), enabled=False)
    progress.total = len(todo)
    with ray_session(cfg.address, cfg.num_cpus):
        # Written only once the store and the cluster both answer: a refused run leaves nothing.
        if manifest is wanted:  # claim_run returned ours: the run is new
            write_manifest(store, layout, manifest)
        events.emit(ev.RUN_STARTED, members=len(cfg.members), codec=cfg.codec, rows=cfg.rows,
                    store=store_cfg.url, endpoint=store_cfg.endpoint_url,
                    predictor=cfg.predictor, created_at=manifest.created_at,
                    resume=cfg.resume, reused=len(reused), to_compute=len(todo))
        outcomes = fan_out(spec, todo, events, progress, cfg.task_options,
                           cfg.stall_timeout, cfg.member_options, cfg.on_outcome)
        refs = {m: Expectation(o.checksum, o.bytes) for m, o in outcomes.items()
                if isinstance(o, PredictionRef)}
        progress.status(f"gate: listing and verifying {len(cfg.members)} members ...")
        gate_ref = gate_task.options(**cfg.gate_options).remote(
            store_cfg, cfg.run_id, list(cfg.members), cfg.codec, None, refs, cfg.verify,
            cfg.gate_concurrency)
        try:
            verdict: Verdict = ray.get(gate_ref, timeout=cfg.gate_timeout)
        except RayTaskError as exc:
            if isinstance(exc.cause, S43Error):
                raise exc.cause from None
            raise ClusterError(f"gate task failed: {_first_line(exc)}") from exc
        except GetTimeoutError as exc:
            with contextlib.suppress(Exception):
                ray.cancel(gate_ref, force=True)
            raise ClusterError(f"gate task gave no verdict within {cfg.gate_timeout:.0f}s "
                               "(no resources to schedule it, or the store is too slow)"
                               ) from exc
        except RayError as exc:
            raise ClusterError(f"gate task failed: {_first_line(exc)}") from exc
        # Inside the Ray session: the driver's metrics are flushed by ray.shutdown().
        metrics.record_gate(verdict.status)
        metrics.record_cohort(cfg.run_id, verdict.expected, verdict.cohort_count, store_cfg.url)
    progress.clear()
    report_verdict(verdict, events, store_cfg.endpoint_url)
    persisted = persist_verdict(store, layout, verdict, events)
    summary = summarize(verdict, command="run", store_cfg=store_cfg, gate_key=layout.gate_key,
                        gate_persisted=persisted, wall=time.perf_counter() - t0,
                        outcomes=outcomes)
    summary.reused = len(reused)
    summary.computed = sum(isinstance(o, PredictionRef) for o in outcomes.values())
    return summary


def gate_existing(store_cfg: AnyStoreConfig, *, run_id: str, members: Sequence[str], codec: Codec,
                  expected: int | None, events: ev.EventLog, verify: VerifyMode = "full",
                  concurrency: int = 16) -> Summary:
    """Re-check a run from the store alone (no Ray tasks of the original run, no references)."""
    t0 = time.perf_counter()
    store = open_store(store_cfg)
    layout = RunLayout(store_cfg.prefix, run_id)
    verdict = run_gate(store, run_id=run_id, prefix=store_cfg.prefix, members=members,
                       codec=codec, expected=expected, mode=verify, concurrency=concurrency,
                       node_id="driver")
    report_verdict(verdict, events, store_cfg.endpoint_url)
    persisted = persist_verdict(store, layout, verdict, events)
    return summarize(verdict, command="gate", store_cfg=store_cfg, gate_key=layout.gate_key,
                     gate_persisted=persisted, wall=time.perf_counter() - t0)
