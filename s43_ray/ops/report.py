"""``s43-ray report --run-id RUN``: what an operator needs to know about one run, from the store.

:func:`report_run` reads the run's record (``_run.json``), its latest verdict (``_gate.json``)
and the ledger of the verdict's attempt, lists the run's prefix and HEADs each member object, and
returns a :class:`RunReport`. Pass/fail is recomputed, never read from the verdict's ``status``:
from the verdict's own per-member checks (:func:`s43_ray.verdicts.recheck`: a verdict that
contradicts itself, its ledger or names another run is ``inconsistent``), then from the store
now (each member's object must still carry the checksum and attempt the verdict saw, else the
verdict is ``stale``). Needs no Ray, writes nothing.

Exit codes (:attr:`RunReport.exit_code`): 0 the recomputed verdict passed and still matches the
store; 1 it failed, is missing, inconsistent or stale; 2 the run does not exist (``InputError``,
raised by :func:`report_run`); 3 the store is unreachable or refuses (the store's own errors).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..binding import object_attempt
from ..circuit import Circuit, CircuitConfig, WatchedStore, daemon_map, watched
from ..codec import DEFAULT_CODEC, META_CHECKSUM, META_CODEC
from ..errors import (
    EXIT_GATE_FAILED,
    EXIT_PASSED,
    CodecMismatch,
    InputError,
    ObjectNotFound,
)
from ..events import rfc3339
from ..keys import ATTEMPTS_DIR, RunLayout
from ..ledger import Ledger, latest_ledger, numbers_in, read_ledger
from ..manifest import RunManifest, read_manifest
from ..stores.base import ObjectInfo, Store
from ..summary import human_size
from ..verdicts import recheck
from ..version import __version__

# HEADs in flight at once; below the S3 client's connection pool, as for the gate.
HEAD_CONCURRENCY = 16
# Members named one by one in the human report; counts are always complete, --json lists all.
HUMAN_LISTED = 20


@dataclass(frozen=True)
class MemberReport:
    """One member: the verdict's check of it, and its object as the store holds it now."""

    member: str
    key: str
    verdict: str  # ok | missing | invalid as the persisted verdict says; "" without a verdict
    error_class: str = ""
    detail: str = ""
    present: bool = False  # an object under the member's key now
    size: int | None = None
    written_at: str | None = None  # RFC 3339, the object's last modification
    codec: str | None = None  # the object's s43-codec metadata (HEAD); None if absent or not read
    changed: str = ""  # how the store differs from the verdict for this member, if it does


@dataclass(frozen=True)
class RunReport:
    """The run as the store holds it; ``human()`` and ``to_json()`` for the CLI."""

    run_id: str
    store: str
    run_prefix: str
    manifest: dict[str, Any] | None  # _run.json: members (count), codec, rows, predictor, ...
    verdict: dict[str, Any] | None  # _gate.json as written (checks omitted), None if absent
    verdict_written_at: str | None
    members: list[MemberReport]
    unexpected: list[str]  # keys under the run prefix that belong to no member, now
    objects: int  # every key under the run prefix, control objects included
    bytes_total: int  # of the member objects present now
    last_written_at: str | None  # the newest member object
    problems: list[str] = field(default_factory=list)  # e.g. a manifest that does not parse
    recomputed: str = ""  # passed | failed: what the verdict's own checks prove
    verdict_problems: list[str] = field(default_factory=list)  # how the verdict contradicts
    # itself, its ledger or its run (an edited or forged verdict)
    version: str = __version__

    @property
    def status(self) -> str:
        """Recomputed: ``passed``/``failed``; ``no_verdict``; ``inconsistent`` when the verdict
        contradicts itself or names another run; ``stale`` if the store changed since."""
        if self.verdict is None:
            return "no_verdict"
        if self.verdict_problems:
            return "inconsistent"
        if self.stale:
            return "stale"
        return self.recomputed or "failed"

    @property
    def stale(self) -> bool:
        return any(m.changed for m in self.members)

    @property
    def missing(self) -> list[str]:
        return [m.member for m in self.members if not m.present]

    @property
    def invalid(self) -> dict[str, str]:
        return {m.member: f"{m.error_class}: {m.detail}" for m in self.members
                if m.verdict == "invalid"}

    @property
    def exit_code(self) -> int:
        return EXIT_PASSED if self.status == "passed" else EXIT_GATE_FAILED

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record.update(status=self.status, stale=self.stale, missing=self.missing,
                      invalid=self.invalid, command="report")
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    def human(self) -> str:
        v = self.verdict
        lines = [f"run {self.run_id} in {self.store}"]
        if self.manifest:
            man = self.manifest
            lines.append(f"  started {man.get('created_at') or '?'}: {man.get('members')} "
                         f"members, {man.get('codec')}, {man.get('rows')} rows, predictor "
                         f"{man.get('predictor')}")
        else:
            lines.append("  no manifest (_run.json): members taken from the verdict or listing")
        if v is None:
            lines.append("  verdict: NONE (no _gate.json): the gate never wrote one; run "
                         f"`s43-ray gate --run-id {self.run_id}`")
        else:
            lines.append(f"  verdict: {self.status.upper()} (recomputed from its checks and "
                         f"the store; it claims {str(v.get('status', '?')).upper()} "
                         f"{v.get('cohort_count')}/{v.get('expected')} members, shortfall "
                         f"{v.get('shortfall')}; attempt {v.get('attempt')}, {v.get('verify')} "
                         f"verify, written {self.verdict_written_at}, by s43_ray "
                         f"{v.get('version')})")
            if v.get("reason"):
                lines.append(f"    {v['reason']}")
            for problem in self.verdict_problems:
                lines.append(f"  INCONSISTENT: {problem}")
        present = len(self.members) - len(self.missing)
        lines.append(f"  store now: {present}/{len(self.members)} member objects, "
                     f"{human_size(self.bytes_total)}, "
                     f"newest written {self.last_written_at or '-'}; "
                     f"{self.objects} keys under {self.run_prefix}")
        if self.stale:
            lines.append("  STALE: the store changed since the verdict; re-check with "
                         f"`s43-ray gate --run-id {self.run_id}`")
        groups = (("missing now", self.missing),
                  ("invalid at the gate", [f"{k} ({v})" for k, v in self.invalid.items()]),
                  ("changed since the verdict",
                   [f"{m.member} ({m.changed})" for m in self.members if m.changed]),
                  ("unexpected keys", self.unexpected), ("problems", self.problems))
        for label, items in groups:
            if items:
                shown = ", ".join(items[:HUMAN_LISTED])
                more = f" (+{len(items) - HUMAN_LISTED} more)" if len(items) > HUMAN_LISTED else ""
                lines.append(f"  {label} ({len(items)}): {shown}{more}")
        if len(self.members) <= HUMAN_LISTED:
            lines.append("  member        verdict  size        codec  written")
            for m in self.members:
                size = human_size(m.size) if m.size is not None else "-"
                lines.append(f"  {m.member:<13} {m.verdict or '-':<8} {size:<11} "
                             f"{m.codec or '-':<6} {m.written_at or '-'}")
        return "\n".join(lines)


def _rfc3339(ts: float | None) -> str | None:
    return None if ts is None else rfc3339(ts)


def _read_verdict(store: Store, layout: RunLayout) -> tuple[dict[str, Any] | None,
                                                             float | None, list[str]]:
    """``_gate.json`` as a dict, when it was written, and what is wrong with it, if anything."""
    try:
        body, info = store.get(layout.gate_key)
    except ObjectNotFound:
        return None, None, []
    try:
        record = json.loads(bytes(body))
    except ValueError as exc:
        return None, info.last_modified, [f"{layout.gate_key} is not JSON: {exc}"]
    if not isinstance(record, dict):
        return None, info.last_modified, [f"{layout.gate_key} is not a JSON object"]
    return record, info.last_modified, []


def _head_all(store: Store, keys: Sequence[str], concurrency: int,
              circuit: Circuit) -> dict[str, ObjectInfo]:
    def head(key: str) -> tuple[str, ObjectInfo | None]:
        try:
            return key, store.head(key)
        except ObjectNotFound:  # deleted since the listing
            return key, None

    found = daemon_map(head, keys, concurrency, circuit, what=f"HEAD of {len(keys)} members")
    return {k: info for k, info in found if info is not None}


def _changed(check: Mapping[str, Any] | None, info: ObjectInfo | None,
             detailed: ObjectInfo | None) -> str:
    """How the store differs from the verdict for one member ("" when it does not): by the
    checksum and attempt the verdict saw, never by modification times."""
    if check is None:
        return "not in the verdict"
    was = check.get("status")
    if info is None:
        return "counted, now absent" if was == "ok" else ""
    if was == "missing":
        return "missing at the gate, present now"
    if was != "ok":
        return ""
    if check.get("bytes") not in (None, 0, info.size):
        return f"{check.get('bytes')} bytes at the gate, {info.size} now"
    etag = check.get("etag")
    if etag and info.etag and info.etag != etag:  # the listing's ETag: no HEAD needed
        return f"rewritten since the verdict (ETag {etag} -> {info.etag})"
    if detailed is None:
        return ""
    seen = str(check.get("checksum") or "")
    now = detailed.metadata.get(META_CHECKSUM, "")
    if seen and now != seen:
        return f"rewritten since the verdict (checksum {seen} -> {now or 'none'})"
    if detailed.s3_checksum is not None and seen.split(":", 1)[-1] != detailed.s3_checksum:
        return f"content changed since the verdict (store checksum {detailed.s3_checksum})"
    attempt = check.get("attempt")
    if attempt is not None and object_attempt(detailed.metadata) != attempt:
        return (f"rewritten by attempt {detailed.metadata.get('s43-attempt')!r} since the "
                f"verdict (attempt {attempt})")
    return ""


def report_run(store: Store, layout: RunLayout, *, head: bool = True,
                 concurrency: int = HEAD_CONCURRENCY,
                 circuit: CircuitConfig | None = None) -> RunReport:
    """Everything the store says about one run. Raises :class:`InputError` when the store holds
    nothing of the run, and the store's own errors when it cannot be read; a store that stops
    answering fails it within about a minute and a half (:mod:`s43_ray.circuit`)."""
    breaker = Circuit.for_store(store, circuit)
    watched_store = WatchedStore(store, breaker)
    return watched(breaker, lambda: _build(watched_store, layout, head, concurrency, breaker),
                   what=f"report of run {layout.run_id!r}")


def _build(store: Store, layout: RunLayout, head: bool, concurrency: int,
           breaker: Circuit) -> RunReport:
    store.check()  # an unreachable store or a missing bucket: exit 3 naming them
    problems: list[str] = []
    manifest: RunManifest | None
    try:
        manifest = read_manifest(store, layout)
    except CodecMismatch as exc:
        manifest = None
        problems.append(f"{layout.manifest_key}: {exc}")
    verdict, verdict_ts, verdict_problems = _read_verdict(store, layout)
    problems += verdict_problems
    listed = list(store.list(layout.run_prefix))
    if manifest is None and verdict is None and not listed:
        raise InputError(f"run {layout.run_id!r} does not exist in {store.url}: nothing under "
                         f"{layout.run_prefix}; expected the id of a run started earlier")
    raw_checks = (verdict or {}).get("checks")
    checks = {str(c.get("member")): c for c in
              (raw_checks if isinstance(raw_checks, list) else []) if isinstance(c, dict)}
    codec = manifest.codec if manifest else str((verdict or {}).get("codec") or "")
    by_member: dict[str, ObjectInfo] = {}
    unexpected: list[str] = []
    for info in listed:
        if layout.is_control(info.key):
            continue
        found = layout.classify(info.key)
        if found and (not codec or found[1] == codec) and found[0] not in by_member:
            by_member[found[0]] = info
        else:
            unexpected.append(info.key)
    attempts = numbers_in((info.key for info in listed), layout, ATTEMPTS_DIR)  # no 2nd LIST
    ledger: Ledger | None = None
    verdict_attempt = (verdict or {}).get("attempt")
    if isinstance(verdict_attempt, int) and verdict_attempt > 0:
        try:
            ledger = read_ledger(store, layout, verdict_attempt)
        except CodecMismatch as exc:
            problems.append(f"{layout.ledger_key(verdict_attempt)}: {exc}")
    if manifest is None and ledger is None:
        try:
            ledger = latest_ledger(store, layout)
        except CodecMismatch as exc:
            problems.append(f"latest ledger: {exc}")
    if manifest:
        members = list(manifest.members)
    elif ledger is not None:  # the record was lost: the ledger still says what the cohort is
        members = list(ledger.members)
    elif checks:
        members = list(checks)
    else:
        members = sorted(by_member)
    unexpected += [by_member.pop(m).key for m in sorted(set(by_member) - set(members))]
    heads = _head_all(store, [by_member[m].key for m in members if m in by_member],
                      concurrency, breaker) if head else {}
    reports = []
    for m in members:
        obj = by_member.get(m)
        detailed = heads.get(obj.key) if obj else None
        check = checks.get(m)
        key = obj.key if obj else (str(check.get("key")) if check else
                                   layout.member_key(m, codec or DEFAULT_CODEC))
        reports.append(MemberReport(
            member=m, key=key, verdict=str(check.get("status", "")) if check else "",
            error_class=str(check.get("error_class", "")) if check else "",
            detail=str(check.get("detail", "")) if check else "",
            present=obj is not None, size=obj.size if obj else None,
            written_at=_rfc3339(obj.last_modified) if obj else None,
            codec=(detailed.metadata.get(META_CODEC) if detailed else None),
            changed=_changed(check, obj, detailed) if verdict is not None else ""))
    present = [by_member[m] for m in members if m in by_member]
    newest = max((i.last_modified for i in present if i.last_modified is not None),
                 default=None)
    recomputed, verdict_problems = "", []
    newer = [n for n in attempts if isinstance(verdict_attempt, int) and n > verdict_attempt]
    if verdict is not None:
        if ledger is not None and ledger.attempt != verdict_attempt:
            ledger = None  # the latest ledger is not the verdict's: recheck finds it missing
        recomputed, verdict_problems = recheck(verdict, layout.run_id, manifest, ledger,
                                               attempts)
        verdict = {k: v for k, v in verdict.items() if k != "checks"}
        if newer:  # an attempt ran (or runs) after this verdict: it may have rewritten members
            reports = [replace(r, changed=r.changed or f"attempt {newer[-1]} ran after the "
                               f"verdict (attempt {verdict_attempt})") for r in reports]
    return RunReport(
        run_id=layout.run_id, store=store.url, run_prefix=layout.run_prefix,
        manifest=_manifest_record(manifest), verdict=verdict,
        verdict_written_at=_rfc3339(verdict_ts), members=reports, unexpected=sorted(unexpected),
        objects=len(listed), bytes_total=sum(i.size for i in present),
        last_written_at=_rfc3339(newest), problems=problems, recomputed=recomputed,
        verdict_problems=verdict_problems)


def _manifest_record(manifest: RunManifest | None) -> dict[str, Any] | None:
    if manifest is None:
        return None
    return {"members": len(manifest.members), "codec": manifest.codec, "rows": manifest.rows,
            "predictor": manifest.predictor, "created_at": manifest.created_at,
            "s43_version": manifest.s43_version}
