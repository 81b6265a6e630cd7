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

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import ray

from . import __version__
from . import codec as codecs
from .binding import META_SCHEMA, check_binding, object_attempt, schema_digest
from .circuit import Circuit, CircuitConfig, WatchedStore, daemon_map, watched
from .codec import ArraySpec, Codec
from .config import AnyStoreConfig
from .errors import (
    ChecksumMismatch,
    CodecMismatch,
    InputError,
    LoadError,
    NotInLedger,
    ObjectNotFound,
    S43Error,
    SchemaMismatch,
    TruncatedObject,
)
from .events import rfc3339_now
from .keys import RunLayout
from .ledger import Ledger, attempt_numbers, latest_ledger, read_ledger
from .manifest import RunManifest, read_manifest
from .store import ObjectInfo, Store, open_store

VerifyMode = Literal["full", "head"]
# Concurrent verifications; below the client's connection pool (StoreConfig.max_pool_connections).
GATE_CONCURRENCY = 16
PASSED, FAILED = "passed", "failed"
Basis = Literal["ledger", "no_ledger", "metadata"]


@dataclass(frozen=True)
class Expectation:
    """What the gate knows of a member before it looks: its ledger entry."""

    checksum: str
    bytes: int
    schema: str = ""  # schema digest; "" when not recorded
    attempt: int | None = None  # the attempt that wrote the object; None: not checked


@dataclass(frozen=True)
class MemberCheck:
    member: str
    key: str
    status: Literal["ok", "missing", "invalid"]
    error_class: str = ""
    detail: str = ""
    bytes: int = 0
    read_seconds: float = 0.0
    last_modified: float | None = None
    downloaded: bool = False  # False for head-mode checks verified by the store's own checksum
    checksum: str = ""  # the checksum verified (ok) or recorded in the object's metadata
    attempt: int | None = None  # the attempt named in the object's metadata
    schema: str = ""  # the object's schema digest
    etag: str | None = None  # the object's ETag as the gate read it (a rewrite changes it)


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
        return json.dumps(self.to_record(), indent=1, sort_keys=True).encode()


@dataclass(frozen=True)
class _Want:
    checksum: str
    bytes: int | None
    schema: str
    attempt: int | None


def _verify_one(store: Store, member: str, key: str, codec: Codec,
                expect: Expectation | None, mode: VerifyMode,
                listed_size: int | None = None, *, run_id: str = "",
                declared_schema: str = "") -> MemberCheck:
    """Verify one object against its ledger entry (``expect``) or, without a ledger, against
    its own metadata. ``run_id`` "" skips the binding check (benchmarks of the codec path)."""
    t0 = time.perf_counter()
    meta: Mapping[str, str] = {}
    try:
        if mode == "head":
            info = store.head(key)
            meta = info.metadata
            want = _want(info, member, codec, expect, run_id, declared_schema)
            if info.size == 0 or (want.bytes is not None and info.size != want.bytes):
                raise TruncatedObject(f"object has {info.size} bytes; expected {want.bytes}")
            if info.s3_checksum is not None:
                if want.checksum.split(":", 1)[-1] != info.s3_checksum:
                    raise ChecksumMismatch(f"store checksum {info.s3_checksum} does not match "
                                           f"the recorded {want.checksum}")
                return MemberCheck(member, key, "ok", bytes=info.size,
                                   read_seconds=time.perf_counter() - t0,
                                   last_modified=info.last_modified, checksum=want.checksum,
                                   attempt=object_attempt(meta), schema=want.schema,
                                   etag=info.etag)
            # The store keeps no checksum of its own for this object: download and verify.
            t0 = time.perf_counter()
        body, info = store.get(key, size_hint=expect.bytes if expect else listed_size)
        elapsed = time.perf_counter() - t0
        meta = info.metadata
        want = _want(info, member, codec, expect, run_id, declared_schema)
        codecs.verify(body, codec=codec, expected_checksum=want.checksum,
                      expected_bytes=want.bytes)
        try:
            arrays = codecs.decode(body, codec)  # proves it opens safely; nothing is unpickled
        except LoadError:
            raise
        except Exception as exc:  # a crafted payload may break a decoder in any way
            raise CodecMismatch(f"does not decode: {type(exc).__name__}: {exc}") from exc
        if want.schema:
            found = schema_digest({n: ArraySpec(tuple(a.shape), a.dtype.str)
                                   for n, a in arrays.items()})
            if found != want.schema:
                raise SchemaMismatch(f"object's arrays have schema {found}; expected "
                                     f"{want.schema}")
        return MemberCheck(member, key, "ok", bytes=info.size, read_seconds=elapsed,
                           last_modified=info.last_modified, downloaded=True,
                           checksum=want.checksum, attempt=object_attempt(meta),
                           schema=want.schema, etag=info.etag)
    except LoadError as exc:
        return MemberCheck(member, key, "invalid", exc.error_class, str(exc),
                           checksum=str(meta.get(codecs.META_CHECKSUM, "")),
                           attempt=object_attempt(meta), schema=str(meta.get(META_SCHEMA, "")))
    except InputError:
        raise  # e.g. an SSE-C object and no key: the command is wrong, not the member
    except S43Error as exc:
        if exc.error_class == "not_found":  # deleted between LIST and GET
            return MemberCheck(member, key, "missing", "not_found", str(exc))
        # The store refused or failed this read after retries: not verified, so not counted.
        return MemberCheck(member, key, "invalid", exc.error_class, str(exc))


def _want(info: ObjectInfo, member: str, codec: Codec, expect: Expectation | None, run_id: str,
          declared_schema: str) -> _Want:
    """What to verify the object against: its ledger entry, cross-checked with the object's
    metadata and binding; or, with no ledger, the object's own metadata and binding."""
    meta = info.metadata
    if not expect and info.size == 0:
        raise TruncatedObject("object is empty (0 bytes)")
    meta_codec = meta.get(codecs.META_CODEC)
    meta_sum = meta.get(codecs.META_CHECKSUM)
    if meta_codec is not None and meta_codec != codec:
        raise CodecMismatch(f"object metadata says codec {meta_codec}; expected {codec}")
    if run_id:
        check_binding(meta, run_id=run_id, member=member,
                      attempt=expect.attempt if expect else None,
                      schema=declared_schema or (expect.schema if expect else ""))
    if expect is not None:
        if meta_sum is not None and meta_sum != expect.checksum:
            raise ChecksumMismatch(f"object metadata checksum {meta_sum} differs from the "
                                   f"ledger's {expect.checksum} (overwritten?)")
        return _Want(expect.checksum, expect.bytes, expect.schema or declared_schema,
                     expect.attempt)
    if not meta_sum or not meta_codec:
        raise CodecMismatch("object has no s43 metadata (codec, checksum); not written by s43")
    size = meta.get(codecs.META_BYTES)
    return _Want(meta_sum, int(size) if size and size.isdigit() else None,
                 declared_schema or str(meta.get(META_SCHEMA, "")), object_attempt(meta))


def run_gate(store: Store, *, run_id: str, prefix: str, members: Sequence[str], codec: Codec,
             expected: int | None = None, refs: Mapping[str, Expectation] | None = None,
             mode: VerifyMode = "full", concurrency: int = GATE_CONCURRENCY,
             node_id: str = "", declared_schema: str = "", attempt: int | None = None,
             basis: Basis | None = None, bind: bool = True,
             circuit: CircuitConfig | None = None,
             failed: Mapping[str, str] | None = None,
             prior_etag: str | None = None) -> Verdict:
    """Decide whether the run's cohort is complete, from the store's contents.

    ``refs`` is the attempt's ledger: when given, only members it lists can count, each
    verified against its entry (a present object of a member it does not list is
    ``not_in_ledger``). Without it every object is checked against its own metadata.
    ``basis="no_ledger"`` checks the objects but cannot pass. A store that stops answering
    opens the circuit: :class:`~s43_ray.errors.StoreUnreachable` (exit 3) within about a
    minute, whatever the per-request timeouts."""
    started, t0 = rfc3339_now(), time.perf_counter()
    basis = basis or ("ledger" if refs is not None else "metadata")
    layout = RunLayout(prefix, run_id)
    if len(set(members)) != len(members):
        raise InputError(f"run {run_id!r}: the member list names some members twice; "
                         "expected unique names")
    probe = getattr(store, "probe", None)
    breaker = Circuit(probe if probe is not None else (lambda _t: None), circuit,
                      what=f"store {store.url}")
    watched_store = WatchedStore(store, breaker)
    wanted = set(members)
    present: dict[str, str] = {}  # member -> key in the run's codec
    sizes: dict[str, int] = {}  # key -> size as listed
    other_codec: dict[str, str] = {}  # member -> key written in another codec
    unexpected: list[str] = []
    listing = watched(breaker, lambda: list(watched_store.list(layout.run_prefix)),
                      what=f"gate of run {run_id!r}: LIST {layout.run_prefix}")
    listed = len(listing)
    for info in listing:
        sizes[info.key] = info.size
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
    todo = [m for m in members if m in present and m not in checks]
    run_for_binding = run_id if bind else ""

    def verify(m: str) -> MemberCheck:
        return _verify_one(watched_store, m, present[m], codec, (refs or {}).get(m), mode,
                           sizes.get(present[m]), run_id=run_for_binding,
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
        reason = (f"run {run_id!r} has no ledger: no attempt finished gathering its members' "
                  "references, so nothing can be verified against one; `s43-ray run --run-id "
                  f"{run_id} --resume` completes it ({reason.split(': ', 1)[-1]})")
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
    whether the run has attempts at all, and the ETag of ``_gate.json`` when the gate began."""

    record: RunManifest | None
    ledger: Ledger | None
    has_attempts: bool = False
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
    has_attempts = bool(attempt_numbers(store, layout)) if ledger is None else True
    return GateBasis(record, ledger, has_attempts, prior)


def gate_from_store(store: Store, layout: RunLayout, *, members: Sequence[str], codec: Codec,
                    expected: int | None = None, mode: VerifyMode = "full",
                    concurrency: int = GATE_CONCURRENCY, node_id: str = "",
                    attempt: int | None = None, circuit: CircuitConfig | None = None
                    ) -> Verdict:
    """The gate as operators and the driver run it: record and ledger read from the store.
    The cohort must be the ledger's (exit 2 otherwise): a verdict over part of it would read
    as the whole run's."""
    probe = getattr(store, "probe", None)
    breaker = Circuit(probe if probe is not None else (lambda _t: None), circuit,
                      what=f"store {store.url}")
    basis = watched(breaker, lambda: load_basis(WatchedStore(store, breaker), layout, attempt),
                    what=f"gate of run {layout.run_id!r}: reading its record and ledger")
    ledger = basis.ledger
    if ledger is not None and ledger.codec != codec:
        raise InputError(f"run {layout.run_id!r}: its ledger records format {ledger.codec}; "
                         f"expected --format {ledger.codec}")
    if ledger is not None and (sorted(members) != sorted(ledger.cohort) if ledger.cohort
                               else not set(ledger.members) <= set(members)):
        raise InputError(f"run {layout.run_id!r}: the gate was asked for {len(members)} "
                         f"members but attempt {ledger.attempt}'s ledger records a cohort of "
                         f"{len(ledger.members)}; expected the ledger's members (no "
                         "--members/--expected)")
    refs = None
    kind: Basis = "metadata"
    if ledger is not None:
        kind = "ledger"
        refs = {m: Expectation(e.checksum, e.bytes, e.schema, e.attempt)
                for m, e in ledger.entries.items()}
    elif basis.record is not None or basis.has_attempts:
        kind = "no_ledger"  # a run s43 started, whose driver never recorded what it gathered
    declared = basis.record.schema_digest if basis.record else ""
    return run_gate(store, run_id=layout.run_id, prefix=layout.prefix, members=members,
                    codec=codec, expected=expected, refs=refs, mode=mode,
                    concurrency=concurrency, node_id=node_id, declared_schema=declared,
                    attempt=ledger.attempt if ledger else attempt, basis=kind,
                    circuit=circuit, failed=ledger.failed if ledger else None,
                    prior_etag=basis.prior_etag)


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


@ray.remote(max_retries=2)
def gate_task(spec: GateSpec) -> Verdict:
    """The gate as its own Ray task (another "pod"): it sees only the store, and reads the
    run's record and the attempt's ledger from it."""
    node = str(ray.get_runtime_context().get_node_id())
    return gate_from_store(open_store(spec.store), RunLayout(spec.store.prefix, spec.run_id),
                           members=spec.members, codec=spec.codec, mode=spec.mode,
                           concurrency=spec.concurrency, node_id=node, attempt=spec.attempt,
                           circuit=spec.circuit)
