"""Structured events: one JSON object per line, the records operators alert on.

Every event has ``ts`` (RFC 3339, UTC), ``severity``, ``event`` and ``run_id``. Failures are
``severity="error"`` with an ``error_class``. Events go to stderr (stdout stays for the summary),
so Loki or any log shipper can pick them up from the job's logs.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Literal, TextIO

from .config import Secret

Severity = Literal["debug", "info", "warning", "error"]
SEVERITIES: tuple[Severity, ...] = ("debug", "info", "warning", "error")

# The names operators alert on; pinned by tests/test_contracts.py.
RUN_STARTED = "s43_run_started"
PRED_PERSISTED = "s43_pred_persisted"
PRED_PERSIST_FAILED = "s43_pred_persist_failed"
PRED_LOAD_FAILED = "s43_pred_load_failed"
ACQUIRE_OUTCOME = "s43_acquire_outcome"
GATE_OUTCOME = "s43_gate_outcome"
GATE_PERSISTED = "s43_gate_persisted"
GATE_PERSIST_FAILED = "s43_gate_persist_failed"
RUN_FAILED = "s43_run_failed"  # the command stopped before a verdict (store, cluster, interrupt)
SMOKE_OUTCOME = "s43_smoke_outcome"  # s43-ray smoke: S3 passed and pod-local caught failing?
STORE_CIRCUIT_OPEN = "s43_store_circuit_open"  # the store stopped answering: the run gives up
LEDGER_PERSISTED = "s43_ledger_persisted"  # the attempt's ledger is next to the data
EVENT_NAMES = (RUN_STARTED, PRED_PERSISTED, PRED_PERSIST_FAILED, PRED_LOAD_FAILED,
               ACQUIRE_OUTCOME, GATE_OUTCOME, GATE_PERSISTED, GATE_PERSIST_FAILED, RUN_FAILED,
               SMOKE_OUTCOME, STORE_CIRCUIT_OPEN, LEDGER_PERSISTED)
# A gate event lists at most this many member names; counts are always complete.
MAX_LISTED = 50


def rfc3339(ts: float, timespec: str = "milliseconds") -> str:
    """Epoch seconds as RFC 3339 UTC: ``2026-11-30T08:00:19.123Z``."""
    stamp = datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec=timespec)
    return stamp.replace("+00:00", "Z")


def rfc3339_now() -> str:
    return rfc3339(datetime.now(timezone.utc).timestamp())


def _safe(value: Any) -> Any:
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, dict):
        return {k: _safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    return value


class EventLog:
    """Writes events as JSON lines to a stream; keeps them for the caller's summary and tests."""

    def __init__(self, stream: TextIO | None = None, *, run_id: str = "",
                 min_severity: Severity = "info",
                 before_write: Callable[[], None] | None = None, keep: bool = True) -> None:
        """``keep``: remember every record (for a caller that reads them back, e.g. tests); a
        command that only writes them keeps none (a 20,000-member run emits 20,000)."""
        self.stream = stream if stream is not None else sys.stderr
        self.run_id = run_id
        self.min_level = SEVERITIES.index(min_severity)  # lower ones are kept, not written
        self.records: list[dict[str, Any]] = []
        self.keep = keep
        self._lock = threading.Lock()
        self.before_write = before_write  # e.g. clear a progress bar on the terminal

    def emit(self, event: str, severity: Severity = "info", **fields: Any) -> dict[str, Any]:
        record: dict[str, Any] = {"ts": rfc3339_now(), "severity": severity, "event": event,
                                  "run_id": fields.pop("run_id", self.run_id)}
        record.update(_safe(fields))
        line = json.dumps(record, separators=(",", ":"), default=str)
        with self._lock:
            if self.keep:
                self.records.append(record)
            if SEVERITIES.index(severity) < self.min_level:
                return record
            if self.before_write:
                self.before_write()
            self.stream.write(line + "\n")
            self.stream.flush()
        return record

    def for_run(self, run_id: str, *, before_write: Callable[[], None] | None = None
                ) -> EventLog:
        """The same log (stream, records, threshold) for another run's events; its hook is
        ``before_write``, else this log's."""
        other = EventLog(self.stream, run_id=run_id, min_severity=SEVERITIES[self.min_level],
                         before_write=before_write or self.before_write, keep=self.keep)
        other.records, other._lock = self.records, self._lock
        return other

    def named(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["event"] == event]
