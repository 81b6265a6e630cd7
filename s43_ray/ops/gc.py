"""``s43-ray gc``: delete whole runs older than a cut-off, for stores without lifecycle rules.

A run's age is the newest LastModified of *any* object under ``<prefix>/<run_id>/``: a run that
is still being written (or was re-triggered) has a fresh object and is left whole, so a live run
is never partially deleted. Dry run by default. With ``delete=True`` each expired run is listed
again just before it is deleted; its other objects go first (batch DeleteObjects on S3, 1000
keys a call) and its control objects (``_run.json``, ``_gate.json``) last, so a run interrupted
half-way is still recognisable. If anything is written to the run meanwhile, its control
objects are kept and the run is reported ``skipped``. Nothing outside ``<prefix>/`` is listed or
deleted; keys directly under ``<prefix>/`` (in no run folder) are counted, never deleted.

Needs s3:ListBucket on the prefix and s3:DeleteObject on ``<prefix>/*``: the s43 application's
own grants suffice.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import EXIT_PASSED, InputError
from ..events import rfc3339
from ..keys import CONTROL_DIRS, GATE_OBJECT, MANIFEST_OBJECT
from ..stores.base import BatchDeletes, ObjectInfo, Store
from ..summary import human_size

# Units of --older-than: days, hours, minutes.
AGE_UNITS = {"d": 86_400, "h": 3_600, "m": 60}
_AGE_RE = re.compile(r"([0-9]{1,7})([dhm])")
# A run whose newest object is under an hour old may still be running (members finish minutes
# apart, the gate writes last); a shorter cut-off could delete a live run.
MIN_AGE_S = 3_600
# Deleted last, so a half-deleted run still shows what it was.
CONTROL_OBJECTS = (MANIFEST_OBJECT, GATE_OBJECT)


def _is_control(name: str) -> bool:
    """A run's control object, by its name under the run prefix (record, verdicts, attempts,
    ledgers): deleted last, so an interrupted deletion still names its run."""
    return name in CONTROL_OBJECTS or name.split("/", 1)[0] in CONTROL_DIRS

Action = Literal["expired", "deleted", "kept", "skipped"]


def parse_age(text: str) -> int:
    """``"7d"``, ``"36h"``, ``"90m"`` -> seconds; :class:`InputError` (exit 2) otherwise."""
    m = _AGE_RE.fullmatch(text.strip())
    if not m or int(m.group(1)) == 0:
        raise InputError(f"age {text!r} is not valid; expected a positive whole number and a "
                         "unit d, h or m, such as 7d, 36h or 90m")
    return int(m.group(1)) * AGE_UNITS[m.group(2)]


def _age_text(seconds: float) -> str:
    for unit, size in AGE_UNITS.items():
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _utc(ts: float | None) -> str | None:
    return None if ts is None else rfc3339(ts, "seconds")


@dataclass(frozen=True)
class GcRun:
    """One run folder and what gc did with it."""

    run_id: str
    objects: int
    bytes: int
    newest: float | None  # epoch seconds of the newest LastModified; None if undated
    action: Action  # expired (dry run), deleted, kept (fresh), skipped (written meanwhile)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "objects": self.objects, "bytes": self.bytes,
                "newest": _utc(self.newest), "action": self.action, "note": self.note}


@dataclass(frozen=True)
class GcReport:
    """What ``s43-ray gc`` found and did."""

    store: str
    prefix: str
    older_than_seconds: int
    now: float
    delete: bool
    runs: tuple[GcRun, ...]
    loose_keys: int  # keys directly under <prefix>/, in no run folder: never deleted

    exit_code = EXIT_PASSED  # a store failure raises StoreError (exit 3) instead

    @property
    def cutoff(self) -> float:
        return self.now - self.older_than_seconds

    def with_action(self, *actions: Action) -> list[GcRun]:
        return [r for r in self.runs if r.action in actions]

    def to_dict(self) -> dict[str, Any]:
        gone = self.with_action("expired", "deleted")
        return {"command": "gc", "store": self.store, "prefix": self.prefix,
                "older_than_seconds": self.older_than_seconds, "now": _utc(self.now),
                "cutoff": _utc(self.cutoff), "dry_run": not self.delete,
                "runs": [r.to_dict() for r in self.runs],
                "expired_runs": len(gone), "expired_objects": sum(r.objects for r in gone),
                "expired_bytes": sum(r.bytes for r in gone),
                "kept_runs": len(self.with_action("kept")),
                "skipped_runs": len(self.with_action("skipped")),
                "loose_keys": self.loose_keys, "exit_code": self.exit_code}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def human(self) -> str:
        mode = "deleting" if self.delete else "dry run, nothing deleted"
        lines = [f"gc {self.prefix}/ on {self.store}: runs whose newest object is older "
                 f"than {_age_text(self.older_than_seconds)} (before {_utc(self.cutoff)}); "
                 f"{mode}"]
        for r in self.runs:
            if r.action != "kept":
                lines.append(f"  {r.action:<8} {r.run_id}  {r.objects} objects, "
                             f"{human_size(r.bytes)}, newest {_utc(r.newest)}"
                             + (f"  ({r.note})" if r.note else ""))
        kept = self.with_action("kept")
        if kept:
            lines.append(f"  kept     {len(kept)} run(s) with an object newer than the cut-off")
        if self.loose_keys:
            lines.append(f"  ignored  {self.loose_keys} key(s) directly under {self.prefix}/")
        gone = self.with_action("expired", "deleted")
        total = (f"{len(gone)} run(s), {sum(r.objects for r in gone)} objects, "
                 f"{human_size(sum(r.bytes for r in gone))}")
        lines.append(f"  {total} deleted" if self.delete else
                     f"  {total} would be deleted; run again with --yes to delete them")
        return "\n".join(lines)


def _newest(objs: Sequence[ObjectInfo]) -> float | None:
    stamps = [o.last_modified for o in objs]
    return None if not stamps or any(s is None for s in stamps) else max(
        s for s in stamps if s is not None)


def _delete_keys(store: Store, keys: Sequence[str]) -> None:
    """In batches where the store can (S3: 1000 a request), else one by one."""
    if isinstance(store, BatchDeletes):
        store.delete_many(keys)
        return
    for key in keys:
        store.delete(key)


def _delete_run(store: Store, run_prefix: str, cutoff: float) -> tuple[Action, str, int, int]:
    """Delete one expired run: re-listed first, control objects last. ``(action, note, n, b)``."""
    current = [o for o in store.list(run_prefix) if o.key.startswith(run_prefix)]
    if not current:
        return "deleted", "already gone", 0, 0
    newest = _newest(current)
    if newest is None or newest >= cutoff:
        return "skipped", "written to since it was listed", len(current), sum(
            o.size for o in current)
    control = [o.key for o in current if _is_control(o.key[len(run_prefix):])]
    _delete_keys(store, [o.key for o in current if o.key not in control])
    late = [o for o in store.list(run_prefix) if o.key not in control]
    if late:
        return ("skipped", f"{len(late)} object(s) written during the deletion; control "
                "objects kept", len(current), sum(o.size for o in current))
    _delete_keys(store, control)
    return "deleted", "", len(current), sum(o.size for o in current)


def gc_runs(store: Store, prefix: str, older_than_seconds: int, *, now: float | None = None,
            delete: bool = False) -> GcReport:
    """List the runs under ``<prefix>/``; with ``delete=True`` delete those whose newest object
    is older than ``now - older_than_seconds`` (``now`` defaults to the clock; tests pass a
    later one). Raises InputError (exit 2) for an empty prefix or a cut-off under an hour, and
    StoreError (exit 3) when the store refuses or is unreachable."""
    prefix = prefix.strip("/")
    if not prefix:
        raise InputError("gc prefix '' is the bucket root; expected the s43 prefix such as "
                         "'s43-predictions'")
    if older_than_seconds < MIN_AGE_S:
        raise InputError(f"gc age {older_than_seconds}s is under {MIN_AGE_S // 60} minutes; "
                         "expected at least 1h, so a running job is never deleted")
    now = time.time() if now is None else now
    cutoff = now - older_than_seconds
    base = f"{prefix}/"
    by_run: dict[str, list[ObjectInfo]] = defaultdict(list)
    loose = 0
    for info in store.list(base):
        if not info.key.startswith(base):
            continue  # never act on a key outside the prefix, whatever the store returned
        rest = info.key[len(base):]
        if "/" not in rest:
            loose += 1
            continue
        by_run[rest.split("/", 1)[0]].append(info)
    runs = []
    for run_id in sorted(by_run):
        objs = by_run[run_id]
        newest = _newest(objs)
        count, size = len(objs), sum(o.size for o in objs)
        if newest is None or newest >= cutoff:
            note = "" if newest is not None else "an object has no timestamp"
            runs.append(GcRun(run_id, count, size, newest, "kept", note))
        elif not delete:
            runs.append(GcRun(run_id, count, size, newest, "expired"))
        else:
            action, note, count, size = _delete_run(store, f"{base}{run_id}/", cutoff)
            runs.append(GcRun(run_id, count, size, newest, action, note))
    return GcReport(store.url, prefix, older_than_seconds, now, delete, tuple(runs), loose)
