"""``s43-ray runs`` (and ``s43-ray report`` without ``--run-id``): the runs under a store's
prefix, newest first, each with its latest verdict recomputed.

:func:`runs_report` (and :func:`list_runs`, its runs alone) reads, through the store protocols:

1. the run folders under ``<prefix>/``: one delimiter listing (:meth:`list_dirs`, one request
   per 1,000 runs), never the keys inside them, whatever the size of each run;
2. each run's record (``_run.json``), 16 at a time: its ``created_at`` orders the runs, newest
   first. A run without a record (objects only, or gated with ``gate --members``) is placed by
   its newest object instead (a listing of that run alone), and says so;
3. for the ``limit`` newest runs only, 16 at a time: the latest verdict (``_gate.json``), the
   ledger of the verdict's attempt and the run's ``_attempts/`` folder.

A verdict's ``status`` is never believed: pass/fail is recomputed by
:func:`s43_ray.verdicts.recheck` from the verdict's own checks, the run's record and the
ledger of its attempt, as ``s43-ray report --run-id`` does; a verdict that contradicts itself
(an edited or forged ``_gate.json``) is ``inconsistent``, never ``passed``. The member objects
are not read: whether they changed since the verdict is ``report --run-id``'s job.

A store that stops answering fails the listing within the circuit's time
(:mod:`s43_ray.circuit`, exit 3). Nothing is written; no Ray.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..circuit import Circuit, CircuitConfig, WatchedStore, daemon_map, watched
from ..errors import EXIT_PASSED, CodecMismatch, InvalidRunId, ObjectNotFound
from ..events import rfc3339
from ..keys import ATTEMPTS_DIR, GATE_OBJECT, MANIFEST_OBJECT, RunLayout
from ..ledger import Ledger, numbers_in, read_ledger
from ..manifest import RunManifest
from ..stores.base import Store
from ..verdicts import recheck
from ..version import __version__

# Runs read at once (records, verdicts, ledgers); below the S3 client's connection pool.
RUNS_CONCURRENCY = 16
# The CLI's default --limit: runs shown, newest first.
DEFAULT_LIMIT = 50
# A note longer than this is cut in the table (--json has it whole).
NOTE_WIDTH = 120

NO_VERDICT, INCONSISTENT = "no_verdict", "inconsistent"


@dataclass(frozen=True)
class RunListing:
    """One run: its record and its latest verdict, recomputed."""

    run_id: str
    created_at: str | None  # the record's created_at (RFC 3339); None without a record
    members: int | None  # the cohort's size: the record's, else the ledger's or the verdict's
    codec: str | None
    status: str  # passed | failed (recomputed) | inconsistent | no_verdict
    cohort_count: int | None  # members the verdict's checks found ok
    expected: int | None  # the record's cohort size, else the verdict's checks
    finished_at: str | None  # when the verdict says its gate finished
    attempt: int | None  # the attempt the verdict verified
    claimed: str | None = None  # the status the verdict claims (never believed)
    latest_attempt: int | None = None  # the newest attempt claimed in _attempts/
    newest_object_at: str | None = None  # a run without a record: what placed it
    notes: list[str] = field(default_factory=list)

    @property
    def note(self) -> str:
        return "; ".join(self.notes)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["note"] = self.note
        return record


@dataclass(frozen=True)
class RunsReport:
    """The runs under a prefix, newest first; ``human()`` and ``to_json()`` for the CLI."""

    store: str
    prefix: str
    runs: list[RunListing]  # the newest ``limit``, newest first
    total: int  # every run under the prefix
    limit: int | None
    ignored: list[str] = field(default_factory=list)  # folders whose names are no run id
    command: str = "runs"
    version: str = __version__

    exit_code = EXIT_PASSED  # a store failure raises StoreError (exit 3) instead

    @property
    def older(self) -> int:
        """Runs left out by the limit."""
        return self.total - len(self.runs)

    @property
    def where(self) -> str:
        return f"{self.prefix}/ in {self.store}" if self.prefix else self.store

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "store": self.store, "prefix": self.prefix,
                "total": self.total, "shown": len(self.runs), "older": self.older,
                "limit": self.limit, "runs": [r.to_dict() for r in self.runs],
                "ignored": self.ignored, "exit_code": self.exit_code, "version": self.version}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def human(self) -> str:
        if not self.runs:
            lines = [f"no runs under {self.where}"]
        else:
            lines = [f"{_count(self.total, 'run')} under {self.where}, newest first (each "
                     "verdict recomputed from its checks and its attempt's ledger)"]
            lines += _table(self.runs)
        if self.older:
            lines.append(f"  (+{_count(self.older, 'older run')}; --limit N shows more, "
                         "--limit 0 all)")
        if self.ignored:
            lines.append(f"  ignored {_count(len(self.ignored), 'folder')} whose name is not "
                         "a run id: " + ", ".join(self.ignored[:5])
                         + (f" (+{len(self.ignored) - 5} more)" if len(self.ignored) > 5
                            else ""))
        if self.runs:
            lines.append("  a run's objects now, and whether they changed since its verdict: "
                         "s43-ray report --run-id RUN")
        return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


COLUMNS = ("created", "run id", "verdict", "cohort", "members", "codec", "attempt",
           "finished", "note")


def _table(runs: Sequence[RunListing]) -> list[str]:
    def dash(value: object) -> str:
        return "-" if value is None else str(value)

    rows = [[_short(r.created_at), r.run_id, r.status.upper().replace("_", " "),
             f"{dash(r.cohort_count)}/{dash(r.expected)}" if r.expected is not None else "-",
             dash(r.members), dash(r.codec), dash(r.attempt), _short(r.finished_at),
             r.note if len(r.note) <= NOTE_WIDTH else r.note[:NOTE_WIDTH - 3] + "..."]
            for r in runs]
    widths = [max(len(row[i]) for row in [list(COLUMNS), *rows]) for i in range(len(COLUMNS))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in [list(COLUMNS), *rows]]


def _short(stamp: str | None) -> str:
    """``2026-12-01T10:50:12.345Z`` -> ``2026-12-01T10:50:12Z``: the table's width."""
    if not stamp:
        return "-"
    head, dot, rest = stamp.partition(".")
    return f"{head}Z" if dot and rest.endswith("Z") and rest[:-1].isdigit() else stamp


def _epoch(stamp: str) -> float | None:
    """RFC 3339 -> epoch seconds (a stamp without a zone is taken as UTC); None if unparsable."""
    try:
        when = datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


@dataclass(frozen=True)
class _Found:
    """A run as its record (or, without one, its objects) places it."""

    layout: RunLayout
    order: float | None  # epoch seconds: created_at, else the record's write, else newest object
    created_at: str | None
    has_record: bool
    newest_object: float | None = None
    problems: tuple[str, ...] = ()


def _place(store: Store, layout: RunLayout) -> _Found | None:
    """Read one run's record for its time; None when the run vanished since the listing."""
    try:
        body, info = store.get(layout.manifest_key)
    except ObjectNotFound:
        stamps = [o.last_modified for o in store.list(layout.run_prefix)]
        if not stamps:
            return None  # deleted (gc, lifecycle) since the listing
        newest = max((s for s in stamps if s is not None), default=None)
        return _Found(layout, newest, None, False, newest,
                      (f"no record ({MANIFEST_OBJECT}): placed by its newest object",))
    problems: list[str] = []
    created: str | None = None
    try:
        manifest = RunManifest.from_json(body)
        created = manifest.created_at or None
        if manifest.run_id != layout.run_id:
            problems.append(f"{MANIFEST_OBJECT} names run {manifest.run_id!r}")
    except CodecMismatch as exc:
        problems.append(f"{MANIFEST_OBJECT}: {exc}")
    order = _epoch(created) if created else None
    if order is None:
        order = info.last_modified
        if not problems:
            problems.append(f"{MANIFEST_OBJECT} has no valid created_at: placed by when it "
                            "was written")
    return _Found(layout, order, created, True, None, tuple(problems))


def _read_verdict(store: Store, layout: RunLayout) -> tuple[dict[str, Any] | None, str]:
    """``_gate.json`` as a dict (None if absent or unreadable) and what is wrong with it."""
    try:
        body, _ = store.get(layout.gate_key)
    except ObjectNotFound:
        return None, ""
    try:
        record = json.loads(bytes(body))
    except ValueError as exc:
        return None, f"{GATE_OBJECT} is not JSON ({exc})"
    if not isinstance(record, dict):
        return None, f"{GATE_OBJECT} is not a JSON object"
    return record, ""


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _describe(store: Store, found: _Found) -> RunListing:
    """One run's latest verdict, recomputed."""
    layout = found.layout
    notes = list(found.problems)
    manifest: RunManifest | None = None
    if found.has_record:
        try:
            body, _ = store.get(layout.manifest_key)
            manifest = RunManifest.from_json(body)
        except (ObjectNotFound, CodecMismatch):
            manifest = None  # noted when it was placed (or deleted since)
    verdict, problem = _read_verdict(store, layout)
    attempts = numbers_in((o.key for o in store.list(layout.control_dir(ATTEMPTS_DIR))),
                          layout, ATTEMPTS_DIR)
    latest = attempts[-1] if attempts else None
    attempt = _int((verdict or {}).get("attempt"))
    ledger: Ledger | None = None
    if attempt is not None and attempt > 0:
        try:
            ledger = read_ledger(store, layout, attempt)
        except CodecMismatch as exc:
            notes.append(f"{layout.ledger_key(attempt)[len(layout.run_prefix):]}: {exc}")
    checks = [c for c in ((verdict or {}).get("checks") or []) if isinstance(c, Mapping)] \
        if isinstance((verdict or {}).get("checks"), list) else []
    members = (len(manifest.members) if manifest else len(ledger.members) if ledger
               else len(checks) if checks else None)
    codec = manifest.codec if manifest else (str(verdict["codec"]) if verdict and
                                             verdict.get("codec") else None)
    if verdict is None:
        if problem:
            notes.append(problem)
        where = f" (attempt {latest} claimed)" if latest else ""
        notes.append(f"no verdict{where}: running, or stopped before its gate; "
                     f"s43-ray gate --run-id {layout.run_id}")
        return RunListing(layout.run_id, found.created_at, members, codec, NO_VERDICT, None,
                          None, None, None, None, latest, _stamp(found.newest_object), notes)
    recomputed, problems = recheck(verdict, layout.run_id, manifest, ledger, attempts)
    status = INCONSISTENT if problems else recomputed
    if problems:
        notes += problems
    elif recomputed != "passed" and verdict.get("reason"):
        reason = str(verdict["reason"])
        notes.append(reason.split(": ", 1)[-1] if reason.startswith("run ") else reason)
    if latest is not None and attempt is not None and latest > attempt:
        notes.append(f"attempt {latest} began after this verdict (attempt {attempt}): running, "
                     "or stopped before its gate")
    ok = sum(1 for c in checks if c.get("status") == "ok")
    expected = len(manifest.members) if manifest else len(checks)
    finished = verdict.get("finished_at")
    return RunListing(layout.run_id, found.created_at, members, codec, status, ok, expected,
                      str(finished) if finished else None, attempt,
                      str(verdict.get("status")) if verdict.get("status") is not None else None,
                      latest, _stamp(found.newest_object), notes)


def _stamp(ts: float | None) -> str | None:
    return None if ts is None else rfc3339(ts)


def runs_report(store: Store, prefix: str, *, limit: int | None = None,
                concurrency: int = RUNS_CONCURRENCY, circuit: CircuitConfig | None = None,
                command: str = "runs") -> RunsReport:
    """The runs under ``<prefix>/``, newest first: the ``limit`` newest described (None or 0:
    all), with how many there are in all. Raises the store's errors (exit 3), within the
    circuit's time when the store stops answering."""
    breaker = Circuit.for_store(store, circuit)
    watched_store = WatchedStore(store, breaker)
    prefix = prefix.strip("/")
    return watched(breaker, lambda: _build(watched_store, prefix, limit or None,
                                           max(1, concurrency), breaker, command),
                   what=f"runs under {prefix}/ in {store.url}")


def list_runs(store: Store, prefix: str, *, limit: int | None = None,
              concurrency: int = RUNS_CONCURRENCY,
              circuit: CircuitConfig | None = None) -> list[RunListing]:
    """The ``limit`` newest runs under ``<prefix>/`` (None: all), newest first (see
    :func:`runs_report`)."""
    return runs_report(store, prefix, limit=limit, concurrency=concurrency,
                       circuit=circuit).runs


def _build(store: Store, prefix: str, limit: int | None, concurrency: int, breaker: Circuit,
           command: str) -> RunsReport:
    store.check()  # a missing bucket or folder: exit 3 naming it, never "no runs"
    base = f"{prefix}/" if prefix else ""
    layouts: list[RunLayout] = []
    ignored: list[str] = []
    for folder in store.list_dirs(base):
        name = folder[len(base):].rstrip("/")
        try:
            layouts.append(RunLayout(prefix, name))
        except InvalidRunId:
            ignored.append(name)
    placed = [f for f in daemon_map(lambda lay: _place(store, lay), layouts, concurrency,
                                    breaker, what=f"records of {len(layouts)} runs")
              if f is not None]
    placed.sort(key=lambda f: (f.order is not None, f.order or 0.0, f.layout.run_id),
                reverse=True)
    shown = placed[:limit] if limit else placed
    described = {r.run_id: r for r in daemon_map(lambda f: _describe(store, f), shown,
                                                 concurrency, breaker,
                                                 what=f"verdicts of {len(shown)} runs")}
    return RunsReport(store=store.url, prefix=prefix,
                      runs=[described[f.layout.run_id] for f in shown], total=len(placed),
                      limit=limit, ignored=ignored, command=command)
