"""Verdicts kept for good, and re-checked rather than believed.

Every gate's verdict is written once to ``_gates/<finished>-a<attempt>-<token>.json``
(``If-None-Match: *``), and then becomes ``_gate.json``, the latest verdict, through a
compare-and-swap (``If-Match`` on the ETag read): a verdict of an older attempt never replaces a
newer attempt's, a passing verdict never replaces a failing one another gate of the same
attempt wrote while it ran, no host's clock is trusted for the order, and two gates finishing
at once cannot interleave. Nothing is silently replaced: every verdict stays in ``_gates/``.

:func:`recheck` recomputes what a verdict record proves from its own per-member checks (and the
ledger of its attempt) instead of reading its ``status``: a verdict whose content disagrees with
what it claims, or that names another run, is reported as such.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .binding import META_ATTEMPT, META_RUN, object_attempt
from .errors import ObjectNotFound, PreconditionFailed, StoreError
from .gate import PASSED, Verdict
from .keys import RunLayout
from .ledger import Ledger, attempt_numbers
from .manifest import RunManifest
from .stores.base import ObjectInfo, Store, create_once

# Compare-and-swap rounds on _gate.json before giving up (other gates writing at the same time).
POINTER_TRIES = 8


def _stamp(finished_at: str) -> str:
    """``2026-12-01T10:50:12.345Z`` -> ``20261201T105012345Z`` (sorts like the time)."""
    return "".join(c for c in finished_at if c.isalnum()) or "0"


def _keeps_latest(current: ObjectInfo, verdict: Verdict) -> bool:
    """Whether ``_gate.json`` as it is now must stay the latest verdict instead of ours.

    No clock is compared (hosts' clocks drift): a newer attempt's verdict always stays; within
    one attempt, a verdict another gate wrote while ours ran (``_gate.json`` changed since ours
    began) stays if it failed and ours passed. Within one attempt the store only loses what the
    ledger records, so a concurrent gate that saw a member gone or altered saw the newer truth.
    """
    theirs = object_attempt(current.metadata) or 0
    ours = verdict.attempt or 0
    if theirs != ours:
        return theirs > ours
    changed_since_we_began = current.etag != verdict.prior_etag
    return (changed_since_we_began and verdict.passed
            and current.metadata.get("s43-status") != PASSED)


@dataclass(frozen=True)
class Saved:
    """Where a verdict was kept, whether it became ``_gate.json``, and if not, what
    ``_gate.json`` holds instead (its attempt and status)."""

    history_key: str
    latest: bool
    latest_attempt: int = 0
    latest_status: str = ""


def save_verdict(store: Store, layout: RunLayout, verdict: Verdict) -> Saved:
    """Keep ``verdict`` in ``_gates/`` and make it ``_gate.json`` unless the verdict there must
    stay (see :func:`_keeps_latest`). Raises the store's errors."""
    body = verdict.to_json()
    attempt = verdict.attempt or 0
    meta = {"s43-kind": "gate", "s43-status": verdict.status, META_ATTEMPT: str(attempt),
            META_RUN: verdict.run_id}
    history = layout.verdict_history_key(_stamp(verdict.finished_at), attempt, verdict.token)
    create_once(store, history, body, metadata=meta, content_type="application/json")
    for _ in range(POINTER_TRIES):
        try:
            current: ObjectInfo | None = store.head(layout.gate_key)
        except ObjectNotFound:
            current = None
        if current is not None and _keeps_latest(current, verdict):
            # Ours is kept in _gates/; the one there stays the latest.
            return Saved(history, False, object_attempt(current.metadata) or 0,
                         current.metadata.get("s43-status", ""))
        try:
            store.put(layout.gate_key, body, metadata=meta, content_type="application/json",
                      if_none_match=current is None,
                      if_match=current.etag if current is not None else None)
            return Saved(history, True)
        except PreconditionFailed:
            continue  # another gate wrote in between: look again
    raise StoreError(f"{layout.gate_key} in {store.url} kept changing under "
                     f"{POINTER_TRIES} conditional writes; the verdict is kept at {history}")


def recheck(record: Mapping[str, Any], run_id: str, manifest: RunManifest | None,
            ledger: Ledger | None, attempts: Sequence[int] = ()) -> tuple[str, list[str]]:
    """What a verdict record proves, recomputed from its checks: (``passed``/``failed``, the
    ways it contradicts itself, its run or its ledger). ``passed`` only with no problem.
    ``attempts``: the attempts the run has claimed (``_attempts/``); a run that has any is
    gated against a ledger, so a verdict checked against object metadata alone cannot be its
    (a forged one, once the record was deleted or expired)."""
    problems: list[str] = []
    if record.get("run_id") != run_id:
        problems.append(f"the verdict names run {record.get('run_id')!r}; expected {run_id!r}")
    raw = record.get("checks")
    if not isinstance(raw, list):
        problems.append(f"the verdict's checks are {type(raw).__name__}, not a list")
    checks = [c for c in (raw if isinstance(raw, list) else []) if isinstance(c, Mapping)]
    members = [str(c.get("member")) for c in checks]
    ok = [c for c in checks if c.get("status") == "ok"]
    if manifest is not None and sorted(members) != sorted(manifest.members):
        problems.append(f"the verdict checks {len(members)} members; the run's record has "
                        f"{len(manifest.members)}")
    expected = len(manifest.members) if manifest is not None else len(members)
    for name, value in (("expected", expected), ("cohort_count", len(ok))):
        if record.get(name) != value:
            problems.append(f"the verdict says {name} {record.get(name)!r}; its checks give "
                            f"{value}")
    basis = record.get("basis", "ledger")
    if basis == "ledger" and (ledger is None or record.get("attempt") != ledger.attempt):
        problems.append(f"the verdict says it verified against attempt "
                        f"{record.get('attempt')!r}'s ledger, which "
                        + ("does not exist" if ledger is None else
                           f"is attempt {ledger.attempt}'s"))
    if basis == "metadata" and (manifest is not None or attempts):
        problems.append("the verdict was checked against object metadata alone, but the run "
                        + ("has a record" if manifest is not None else
                           f"has claimed attempts ({max(attempts)})")
                        + ": its gate verifies against a ledger")
    if ledger is not None and record.get("attempt") == ledger.attempt:
        if not ledger.covers(members):
            problems.append(f"the verdict checks {len(members)} members; attempt "
                            f"{ledger.attempt}'s ledger records a cohort of "
                            f"{len(ledger.members)}")
        for c in ok:
            entry = ledger.entries.get(str(c.get("member")))
            if entry is None or entry.checksum != c.get("checksum"):
                problems.append(f"member {c.get('member')!r}: the verdict's checksum "
                                f"{c.get('checksum')!r} is not the ledger's "
                                f"{entry.checksum if entry else None!r}")
                break
    # "metadata": a run with neither record nor ledger, named by gate --members/--expected.
    proves = (len(ok) == expected == len(checks) and expected > 0
              and basis in ("ledger", "metadata"))
    status = PASSED if proves and not problems else "failed"
    claimed = record.get("status")
    if claimed == PASSED and status != PASSED:
        problems.insert(0, f"the verdict claims {claimed!r} but its own checks do not prove it "
                           f"({len(ok)} of {expected} members ok): edited or forged?")
    return status, problems


def newer_attempt(store: Store, layout: RunLayout, attempt: int | None) -> int | None:
    """The newest attempt of the run if it is newer than ``attempt`` (it may rewrite members
    after a gate of ``attempt`` passed), else None."""
    newest = max(attempt_numbers(store, layout), default=0)
    return newest if newest > (attempt or 0) else None
