"""What a gate's verdict becomes: its events, its persisted copies, and the run's summary."""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from typing import Protocol

from . import events as ev
from .config import AnyStoreConfig
from .errors import INFRA_ERROR_CLASSES, S43Error
from .gate import Verdict
from .keys import RunLayout
from .stores.base import Store
from .summary import Summary, latency_stats
from .task import PersistFailure
from .verdicts import Saved, newer_attempt, save_verdict


class Written(Protocol):
    """What the summary counts of a member persisted: a
    :class:`~s43_ray.task.PredictionRef`, or what the driver keeps of one
    (:class:`~s43_ray.fanout.Persisted`)."""

    @property
    def bytes(self) -> int: ...
    @property
    def write_seconds(self) -> float: ...
    @property
    def node_id(self) -> str: ...
    @property
    def s3_retries(self) -> int: ...
    @property
    def attempt(self) -> int: ...


class Tally:
    """What a command's summary counts of the members it persisted, without keeping each
    member's reference: the driver builds it once the ledger is written and drops the
    references before the gate's verdict arrives. Failures (few) are kept whole."""

    def __init__(self, outcomes: Iterable[Written | PersistFailure] = ()) -> None:
        self.computed = 0
        self.bytes = 0
        self.write_seconds = array("d")
        self.nodes: set[str] = set()
        self.s3_retries = 0
        self.task_retries = 0
        self.failed: list[PersistFailure] = []
        for o in outcomes:
            self.add(o)

    def add(self, outcome: Written | PersistFailure) -> None:
        if isinstance(outcome, PersistFailure):
            self.failed.append(outcome)
            self.s3_retries += outcome.s3_retries
            return
        self.computed += 1
        self.bytes += outcome.bytes
        self.write_seconds.append(outcome.write_seconds)
        self.nodes.add(outcome.node_id)
        self.s3_retries += outcome.s3_retries
        self.task_retries += outcome.attempt


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
    error_class = "" if verdict.passed else (
        "no_ledger" if verdict.basis == "no_ledger" else "cohort_incomplete")
    events.emit(ev.GATE_OUTCOME, "info" if verdict.passed else "error",
                status=verdict.status, cohort_count=verdict.cohort_count,
                expected=verdict.expected, shortfall=verdict.shortfall,
                missing=verdict.missing[:ev.MAX_LISTED], invalid=sorted(verdict.invalid)[
                    :ev.MAX_LISTED], unexpected=len(verdict.unexpected),
                error_class=error_class, reason=verdict.reason, attempt=verdict.attempt,
                basis=verdict.basis,
                gate_node=verdict.node_id, gate_seconds=round(verdict.gate_seconds, 3),
                store=verdict.store, endpoint=endpoint)


def persist_verdict(store: Store, layout: RunLayout, verdict: Verdict,
                    events: ev.EventLog) -> Saved | None:
    """Keep the verdict (``_gates/``) and make it ``_gate.json`` unless the one there must stay;
    an error event (never an exception) and None if the store refuses."""
    try:
        saved = save_verdict(store, layout, verdict)
    except S43Error as exc:
        events.emit(ev.GATE_PERSIST_FAILED, "error", key=layout.gate_key,
                    error_class=exc.error_class, message=str(exc), status=verdict.status,
                    store=store.url)
        return None
    superseded = verdict.passed and not saved.latest
    events.emit(ev.GATE_PERSISTED, "warning" if superseded else "info",
                key=layout.gate_key if saved.latest else saved.history_key,
                history_key=saved.history_key, latest=saved.latest, status=verdict.status,
                attempt=verdict.attempt, latest_attempt=saved.latest_attempt or None,
                latest_status=saved.latest_status or None)
    return saved


def superseded(verdict: Verdict, gate_key: str, saved: Saved | None,
               newer: int | None) -> str:
    """Why a gate that passed does not vouch for the cohort now ("" when it does): the run's
    latest verdict is another (a newer attempt's, or a failing one another gate of this attempt
    wrote meanwhile: ``saved`` says), or attempt ``newer`` started meanwhile and may rewrite
    members (report and the library's reads call such a verdict stale). Either way the
    command does not report a pass."""
    if not verdict.passed:
        return ""
    run = verdict.run_id
    if saved is not None and not saved.latest:
        return (f"run {run!r}: superseded: this gate passed (attempt {verdict.attempt}), but "
                f"{gate_key} holds attempt {saved.latest_attempt}'s verdict "
                f"({saved.latest_status or 'unknown'}), written meanwhile; "
                f"`s43-ray report --run-id {run}` says what holds now")
    if newer:
        return (f"run {run!r}: superseded: this gate passed (attempt {verdict.attempt}), but "
                f"attempt {newer} started meanwhile and may rewrite members; "
                f"`s43-ray gate --run-id {run}` once it is done")
    return ""


def newer_if_latest(store: Store, layout: RunLayout, verdict: Verdict,
                    saved: Saved | None) -> int | None:
    """The attempt started after ``verdict``'s, asked only when that matters: the verdict
    passed and is the run's latest (no store call otherwise)."""
    if not verdict.passed or saved is None or not saved.latest:
        return None
    return newer_attempt(store, layout, verdict.attempt)


def summarize(verdict: Verdict, *, command: str, store_cfg: AnyStoreConfig, gate_key: str,
              gate_persisted: bool, wall: float,
              outcomes: Tally | None = None,
              saved: Saved | None = None, newer: int | None = None) -> Summary:
    """The command's summary of ``verdict``; ``saved``/``newer`` as for :func:`superseded`."""
    tally = outcomes if outcomes is not None else Tally()
    failed = tally.failed
    failures = {o.member: f"{o.error_class}: {o.message}" for o in failed}
    ok = [c for c in verdict.checks if c.status == "ok"]
    read = [c for c in ok if c.downloaded]
    counted = {c.member for c in ok}
    infra = {c.member for c in verdict.checks
             if c.status != "ok" and c.error_class in INFRA_ERROR_CLASSES}
    infra |= {o.member for o in failed
              if o.error_class in INFRA_ERROR_CLASSES and o.member not in counted}
    status, reason = verdict.status, verdict.reason
    why = superseded(verdict, gate_key, saved, newer)
    if why:
        status, reason = "failed", why
    return Summary(
        run_id=verdict.run_id, status=status, expected=verdict.expected,
        cohort_count=verdict.cohort_count, missing=verdict.missing, invalid=verdict.invalid,
        unexpected=verdict.unexpected, persist_failed=failures, reason=reason,
        command=command,
        codec=verdict.codec, store=store_cfg.url, endpoint=store_cfg.endpoint_url,
        bytes_written=tally.bytes, bytes_read=sum(c.bytes for c in read),
        write_latency_s=latency_stats(tally.write_seconds),
        read_latency_s=latency_stats([c.read_seconds for c in read]), infra_errors=len(infra),
        wall_seconds=round(wall, 3), writer_nodes=len(tally.nodes),
        gate_node=verdict.node_id, gate_key=gate_key, gate_persisted=gate_persisted,
        s3_retries=tally.s3_retries, task_retries=tally.task_retries, attempt=verdict.attempt,
        basis=verdict.basis, verdict_key=saved.history_key if saved else "",
        verdict_latest=saved.latest if saved else False)
