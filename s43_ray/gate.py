"""The cohort gate: what is really in the store decides, never what the scheduler reported.

The gate LISTs the run prefix (paginated), cross-checks every key against the expected members
and the attempt's ledger (:mod:`s43_ray.ledger`), verifies every member object concurrently
against its ledger entry (binding to run, member and attempt; schema; size; CRC64NVME checksum,
from the store's own checksum in head mode or the downloaded payload in full mode, with a safe
decode) and passes only if ``cohort_count == expected`` with nothing invalid.

Basis of a verdict: ``ledger`` (the normal case), ``no_ledger`` (the run has a record but no
attempt finished gathering its references: it cannot pass; ``run --resume`` completes it), or
``metadata`` (no record and no ledger: a run named only by ``gate --members/--expected``, each
object checked against its own metadata and binding).
"""

from __future__ import annotations

import io
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import ray

from . import metrics
from .circuit import Circuit, CircuitConfig, WatchedStore, daemon_map, watched
from .codec import Codec
from .config import AnyStoreConfig
from .early import Seen
from .errors import (
    InputError,
    NotInLedger,
    ObjectNotFound,
)
from .events import rfc3339_now
from .keys import RunLayout
from .ledger import Ledger, attempt_numbers, latest_ledger, read_ledger
from .manifest import RunManifest, read_manifest
from .stores import open_store
from .stores.base import ObjectInfo, Store
from .verify import Expectation, MemberCheck, VerifyMode, verify_member
from .version import __version__

# Concurrent verifications; below the client's connection pool (StoreConfig.max_pool_connections).
GATE_CONCURRENCY = 16
PASSED, FAILED = "passed", "failed"
Basis = Literal["ledger", "no_ledger", "metadata"]


@dataclass(frozen=True)
class Verdict:
    """The gate's decision and everything an operator needs to act on it."""

    run_id: str
    store: str
    codec: str
    expected: int
    cohort_count: int
    status: str
    reason: str  # one line: why it passed or failed, naming members
    missing: list[str]
    invalid: dict[str, str]  # member -> "error_class: detail"
    unexpected: list[str]  # keys under the run prefix that belong to no member
    checks: list[MemberCheck] = field(default_factory=list)
    verify: str = "full"
    listed_keys: int = 0  # every key under the run prefix, control objects included
    started_at: str = ""
    finished_at: str = ""
    gate_seconds: float = 0.0
    node_id: str = ""
    version: str = __version__
    attempt: int | None = None  # the attempt whose ledger the gate verified against
    basis: str = "ledger"  # ledger | no_ledger | metadata (see the module docstring)
    schema_digest: str = ""  # the run's declared schema, when it declares one
    token: str = field(default_factory=lambda: secrets.token_hex(4))  # names this verdict
    # The ETag of _gate.json when this gate started (None: there was none). Saving compares it
    # with the ETag then, so a verdict another gate wrote meanwhile is seen, with no clocks.
    prior_etag: str | None = None

    @property
    def shortfall(self) -> int:
        return max(0, self.expected - self.cohort_count)

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def to_record(self) -> dict[str, Any]:
        """The ``_gate.json`` body: the verdict, per-member checks (with the checksums seen),
        when and by which version."""
        record = asdict(self)
        record["shortfall"] = self.shortfall
        return record

    def to_json(self) -> bytes:
        """``json.dumps(self.to_record(), indent=1, sort_keys=True).encode()``, byte for byte,
        written one check at a time: the record of a 20,000-member verdict held at once (its
        dicts, then the encoder's million small strings) cost the driver ~60 MiB for an
        8 MiB body."""
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "checks"}
        record["shortfall"] = self.shortfall
        record["checks"] = self.checks
        out = io.BytesIO()
        out.write(b"{")
        for i, name in enumerate(sorted(record)):
            out.write(b"," if i else b"")
            out.write(f"\n {json.dumps(name)}: ".encode())
            if name == "checks":
                _write_checks(out, self.checks)
            else:
                out.write(_nested(record[name], "\n ").encode())
        out.write(b"\n}")
        return out.getvalue()


def _nested(value: Any, newline: str) -> str:
    """``value`` as json.dumps(indent=1, sort_keys=True) writes it nested: each line break
    followed by the indentation of its level (JSON strings hold no raw line break)."""
    return json.dumps(value, indent=1, sort_keys=True).replace("\n", newline)


def _write_checks(out: io.BytesIO, checks: Sequence[MemberCheck]) -> None:
    """The verdict's ``checks`` as the top-level record's entry at depth 1, one at a time."""
    if not checks:
        out.write(b"[]")
        return
    out.write(b"[")
    for i, check in enumerate(checks):
        out.write(b"," if i else b"")
        out.write(b"\n  ")
        out.write(_nested(asdict(check), "\n  ").encode())
    out.write(b"\n ]")


def run_gate(store: Store, layout: RunLayout, *, members: Sequence[str], codec: Codec,
             expected: int | None = None, refs: Mapping[str, Expectation] | None = None,
             mode: VerifyMode = "full", concurrency: int = GATE_CONCURRENCY,
             node_id: str = "", declared_schema: str = "", attempt: int | None = None,
             basis: Basis | None = None,
             circuit: CircuitConfig | None = None,
             failed: Mapping[str, str] | None = None,
             prior_etag: str | None = None,
             seen: Mapping[str, Seen] | None = None) -> Verdict:
    """Decide whether the run's cohort is complete, from the store's contents.

    ``refs`` is the attempt's ledger: when given, only members it lists can count, each
    verified against its entry (a present object of a member it does not list is
    ``not_in_ledger``). Without it every object is checked against its own metadata.
    ``basis="no_ledger"`` checks the objects but cannot pass. A store that stops answering
    opens the circuit: :class:`~s43_ray.errors.StoreUnreachable` (exit 3) within about a
    minute, whatever the per-request timeouts. ``seen``: members the driver verified as their
    references arrived (:mod:`s43_ray.early`); one whose listed object is still the one
    checked is not verified again."""
    started, t0 = rfc3339_now(), time.perf_counter()
    basis = basis or ("ledger" if refs is not None else "metadata")
    run_id = layout.run_id
    if len(set(members)) != len(members):
        raise InputError(f"run {run_id!r}: the member list names some members twice; "
                         "expected unique names")
    breaker = Circuit.for_store(store, circuit)
    watched_store = WatchedStore(store, breaker)
    wanted = set(members)
    present: dict[str, str] = {}  # member -> key in the run's codec
    sizes: dict[str, int] = {}  # key -> size as listed
    infos: dict[str, ObjectInfo] = {}  # key -> as listed (ETag, time)
    other_codec: dict[str, str] = {}  # member -> key written in another codec
    unexpected: list[str] = []
    listing = watched(breaker, lambda: list(watched_store.list(layout.run_prefix)),
                      what=f"gate of run {run_id!r}: LIST {layout.run_prefix}")
    listed = len(listing)
    for info in listing:
        sizes[info.key] = info.size
        infos[info.key] = info
        if layout.is_control(info.key):
            continue
        found = layout.classify(info.key)
        if found and found[0] in wanted:
            (present if found[1] == codec else other_codec)[found[0]] = info.key
        else:
            unexpected.append(info.key)
    # A member present in the run's format may also have a stray object in the other format.
    unexpected.extend(k for m, k in other_codec.items() if m in present)
    unexpected.sort()
    checks: dict[str, MemberCheck] = {}
    for m in members:
        if m not in present:
            if m in other_codec:
                checks[m] = MemberCheck(m, other_codec[m], "invalid", "codec",
                                        f"written as {other_codec[m].rsplit('.', 1)[-1]}; "
                                        f"the run's format is {codec}")
            else:
                checks[m] = MemberCheck(m, layout.member_key(m, codec), "missing", "not_found",
                                        "not in the store")
        elif refs is not None and m not in refs:
            why = (failed or {}).get(m)
            error = NotInLedger(f"present, but attempt {attempt}'s ledger does not list it "
                                + (f"(its task failed: {why})" if why else
                                   "(written by another attempt or driver)"))
            checks[m] = MemberCheck(m, present[m], "invalid", error.error_class, str(error))
    for m, early in (seen or {}).items():
        key = present.get(m)
        if key is not None and m not in checks \
                and early.still(infos[key], (refs or {}).get(m)):
            checks[m] = early.check(m)
    todo = [m for m in members if m in present and m not in checks]
    def verify(m: str) -> MemberCheck:
        return verify_member(watched_store, m, present[m], codec, (refs or {}).get(m), mode,
                           sizes.get(present[m]), run_id=run_id,
                           declared_schema=declared_schema)

    for check in daemon_map(verify, todo, concurrency, breaker,
                            what=f"gate of run {run_id!r}: {len(todo)} members to verify"):
        checks[check.member] = check
    ordered = [checks[m] for m in members]
    count = sum(c.status == "ok" for c in ordered)
    missing = [c.member for c in ordered if c.status == "missing"]
    invalid = {c.member: f"{c.error_class}: {c.detail}" for c in ordered if c.status == "invalid"}
    exp = len(members) if expected is None else expected
    status = PASSED if (count == exp and not missing and not invalid
                        and basis != "no_ledger") else FAILED
    reason = _reason(run_id, exp, len(members), count, missing, invalid)
    if basis == "no_ledger":
        which = (f": its newest attempt ({attempt}) left no ledger" if attempt
                 else " has no ledger")
        reason = (f"run {run_id!r}{which} (its driver stopped before gathering "
                  "its members' references, or is still running), so nothing can be verified "
                  f"against one; `s43-ray run --run-id {run_id} --resume` completes it "
                  f"({reason.split(': ', 1)[-1]})")
    return Verdict(run_id=run_id, store=store.url, codec=codec, expected=exp,
                   cohort_count=count, status=status, reason=reason,
                   missing=missing, invalid=invalid,
                   unexpected=unexpected, checks=ordered, verify=mode, listed_keys=listed,
                   started_at=started, finished_at=rfc3339_now(),
                   gate_seconds=time.perf_counter() - t0, node_id=node_id, attempt=attempt,
                   basis=basis, schema_digest=declared_schema, prior_etag=prior_etag)


def _reason(run_id: str, expected: int, listed: int, count: int, missing: list[str],
            invalid: dict[str, str]) -> str:
    """One line saying why the gate decided as it did, naming members (first 10) and, for
    invalid ones, why (their error class)."""
    def names(items: Sequence[str]) -> str:
        return str(list(items[:10])) + (f" (+{len(items) - 10} more)" if len(items) > 10 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} of {expected} members missing: {names(missing)}")
    if invalid:
        why = [f"{m} ({invalid[m].split(':', 1)[0]})" for m in sorted(invalid)]
        parts.append(f"{len(invalid)} invalid: {', '.join(why[:10])}"
                     + (f" (+{len(why) - 10} more)" if len(why) > 10 else ""))
    if listed != expected:
        parts.append(f"the cohort has {listed} members but {expected} are expected")
    if not parts:
        return f"run {run_id!r}: {count} of {expected} members present and verified"
    return f"run {run_id!r}: " + "; ".join(parts)


@dataclass(frozen=True)
class GateBasis:
    """What a gate from the store verifies against: the run's record, an attempt's ledger,
    the run's newest attempt (0: none), and the ETag of ``_gate.json`` when the gate began."""

    record: RunManifest | None
    ledger: Ledger | None
    newest_attempt: int = 0
    prior_etag: str | None = None


def load_basis(store: Store, layout: RunLayout, attempt: int | None = None) -> GateBasis:
    """The run's record and the ledger of ``attempt`` (default: the latest one written)."""
    try:
        prior: str | None = store.head(layout.gate_key).etag
    except ObjectNotFound:
        prior = None
    record = read_manifest(store, layout)
    ledger = (read_ledger(store, layout, attempt) if attempt is not None
              else latest_ledger(store, layout))
    newest = max(attempt_numbers(store, layout), default=0)
    return GateBasis(record, ledger, newest, prior)


def gate_from_store(store: Store, layout: RunLayout, *, members: Sequence[str], codec: Codec,
                    expected: int | None = None, mode: VerifyMode = "full",
                    concurrency: int = GATE_CONCURRENCY, node_id: str = "",
                    attempt: int | None = None, circuit: CircuitConfig | None = None,
                    seen: Mapping[str, Seen] | None = None) -> Verdict:
    """The gate as operators and the driver run it: record and ledger read from the store.
    The cohort must be the ledger's (exit 2 otherwise): a verdict over part of it would read
    as the whole run's."""
    breaker = Circuit.for_store(store, circuit)
    basis = watched(breaker, lambda: load_basis(WatchedStore(store, breaker), layout, attempt),
                    what=f"gate of run {layout.run_id!r}: reading its record and ledger")
    ledger = basis.ledger
    if ledger is not None and ledger.codec != codec:
        raise InputError(f"run {layout.run_id!r}: its ledger records format {ledger.codec}; "
                         f"expected --format {ledger.codec}")
    if ledger is not None and not ledger.covers(members):
        raise InputError(f"run {layout.run_id!r}: the gate was asked for {len(members)} "
                         f"members but attempt {ledger.attempt}'s ledger records a cohort of "
                         f"{len(ledger.members)}; expected the ledger's members (no "
                         "--members/--expected)")
    record = basis.record
    if record is not None and (sorted(record.members) != sorted(members)
                               or record.codec != codec):
        raise InputError(f"run {layout.run_id!r}: the gate was asked for {len(members)} members "
                         f"in {codec}, but the run's record has {len(record.members)} in "
                         f"{record.codec}; expected the record's cohort (a verdict over another "
                         "cohort would read as the run's)")
    refs = None
    kind: Basis = "metadata"
    newer = attempt is None and ledger is not None and basis.newest_attempt > ledger.attempt
    if ledger is not None and not newer:
        kind = "ledger"
        refs = {m: Expectation(e.checksum, e.bytes, e.schema, e.attempt)
                for m, e in ledger.entries.items()}
    elif ledger is not None:
        # A newer attempt started after this ledger and left none (its driver died, or is
        # still running): what the store holds now is that attempt's, unrecorded.
        kind = "no_ledger"
        ledger = None
        attempt = basis.newest_attempt
    elif basis.record is not None or basis.newest_attempt:
        kind = "no_ledger"  # a run s43 started, whose driver never recorded what it gathered
    declared = basis.record.schema_digest if basis.record else ""
    return run_gate(store, layout, members=members,
                    codec=codec, expected=expected, refs=refs, mode=mode,
                    concurrency=concurrency, node_id=node_id, declared_schema=declared,
                    attempt=ledger.attempt if ledger else attempt, basis=kind,
                    circuit=circuit, failed=ledger.failed if ledger else None,
                    prior_etag=basis.prior_etag, seen=seen if kind == "ledger" else None)


@dataclass(frozen=True)
class GateSpec:
    """What the gate task needs: small and picklable (no client, no reference, no array)."""

    store: AnyStoreConfig
    run_id: str
    members: tuple[str, ...]
    codec: Codec
    attempt: int | None = None  # the attempt's ledger to verify against; None: the latest
    mode: VerifyMode = "full"
    concurrency: int = GATE_CONCURRENCY
    circuit: CircuitConfig | None = None
    seen: Mapping[str, Seen] | None = None  # members the driver verified as they arrived

    @property
    def layout(self) -> RunLayout:
        """The run's keys, always under the store's own prefix."""
        return RunLayout(self.store.prefix, self.run_id)


@ray.remote(max_retries=2)
def gate_task(spec: GateSpec) -> Verdict:
    """The gate as its own Ray task (another "pod"): it sees only the store, and reads the
    run's record and the attempt's ledger from it."""
    metrics.watch_stores()
    node = str(ray.get_runtime_context().get_node_id())
    return gate_from_store(open_store(spec.store), spec.layout,
                           members=spec.members, codec=spec.codec, mode=spec.mode,
                           concurrency=spec.concurrency, node_id=node, attempt=spec.attempt,
                           circuit=spec.circuit, seen=spec.seen)
