"""A run as a library user holds it: persist members from any Ray task, gate the cohort, load a
member, and read the verified cohort back.

A :class:`Run` is a few fields (the store's config, the run id, the cohort, the attempt): it
pickles cheaply and holds no client, so it is passed to ``@ray.remote`` tasks as an argument.
Every read verifies before it returns: :meth:`Run.load` against the run's ledger,
:meth:`Run.read_table` and :meth:`Run.read_dataset` against the run's latest verdict, which must
have passed and must still match every object.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import events as ev
from ..circuit import Circuit, WatchedStore, watched
from ..codec import Codec
from ..errors import (
    InputError,
    NotInLedger,
    PreconditionFailed,
    StoreError,
)
from ..gate import GATE_CONCURRENCY, Verdict, gate_from_store
from ..keys import RunLayout
from ..ledger import (
    Ledger,
    LedgerEntry,
    latest_ledger,
    read_attempt,
    read_ledger,
    write_ledger,
)
from ..manifest import read_manifest
from ..ops.report import RunReport, report_run
from ..outcome import newer_if_latest, persist_verdict, report_verdict, superseded
from ..task import PredictionRef, TaskSpec, write_member
from ..verify import VERIFY_MODES, Expectation, VerifyMode, load_member
from .reading import read_cohort_dataset, read_cohort_table, verified_cohort

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

    from .store import Store

__all__ = ["LIBRARY_PREDICTOR", "Run"]

# What a run started through the library records as its predictor: its members' arrays come
# from the user's own tasks (Run.persist), not from a predictor s43 calls.
LIBRARY_PREDICTOR = "library:Run.persist"


@dataclass(frozen=True)
class Run:
    """One run of a cohort in a :class:`~s43_ray.api.store.Store`.

    From :meth:`Store.start_run <s43_ray.api.store.Store.start_run>` it carries the attempt it
    claimed and can persist; from :meth:`Store.open_run
    <s43_ray.api.store.Store.open_run>` it reads and gates only. Iterating a run yields its
    members.
    """

    store: Store
    run_id: str
    members: tuple[str, ...]
    codec: Codec
    schema_digest: str = ""
    attempt: int | None = None  # the attempt this run persists as; None: opened, read-only
    token: str = ""  # the attempt's claim token (its ledger must carry it)
    created_at: str = ""

    # -- what it is ----------------------------------------------------------------------------
    def __repr__(self) -> str:
        mode = f"attempt {self.attempt}" if self.attempt is not None else "read-only"
        return (f"Run({self.run_id!r}, {len(self.members)} members, {self.codec}, {mode}, "
                f"{self.store.url})")

    def __iter__(self) -> Iterator[str]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, member: object) -> bool:
        return member in self.members

    @property
    def layout(self) -> RunLayout:
        return self.store.layout(self.run_id)

    @property
    def url(self) -> str:
        """Where the run's objects are: ``s3://bucket/prefix/<run_id>/``."""
        return f"{self.store.url.rstrip('/')}/{self.run_id}/"

    def key(self, member: str) -> str:
        """The object key of ``member``."""
        return self.layout.member_key(self._member(member), self.codec)

    def _member(self, member: str) -> str:
        if member not in self.members:
            raise InputError(f"member {member!r} is not in run {self.run_id!r} "
                             f"({len(self.members)} members: {list(self.members[:5])}"
                             f"{' ...' if len(self.members) > 5 else ''}); expected one of "
                             "its members")
        return member

    # -- writing -------------------------------------------------------------------------------
    def persist(self, member: str, arrays: Mapping[str, np.ndarray]) -> PredictionRef:
        """Write one member's arrays (in any process: a Ray task, the driver) and return its
        small reference. The object carries the run, member, attempt and schema it belongs
        to, and the store verifies its CRC64NVME checksum on upload. Raises
        :class:`~s43_ray.errors.InputError` for bad arrays or a member not in the cohort
        (nothing is written), and the store's errors after its retries."""
        if self.attempt is None:
            raise InputError(f"run {self.run_id!r} was opened read-only (Store.open_run); "
                             "expected a run from Store.start_run to persist members")
        self._member(member)
        if not isinstance(arrays, Mapping) or not arrays:
            raise InputError(f"member {member!r}: arrays {type(arrays).__name__} is not valid; "
                             "expected a non-empty dict of name -> numpy array")
        for name, value in arrays.items():
            if not isinstance(value, (np.ndarray, np.generic)):
                raise InputError(f"member {member!r}: array {name!r} is a "
                                 f"{type(value).__name__}; expected a numpy array")
        spec = TaskSpec(self.store.config, self.run_id, self.codec, 0, LIBRARY_PREDICTOR,
                        attempt=self.attempt, schema=self.schema_digest)
        client = self.store.client()
        breaker = Circuit.for_store(client)
        before = client.retries
        # Bounded like every other call: a store that hangs fails it within the circuit's time.
        ref = watched(breaker, lambda: write_member(WatchedStore(client, breaker), spec, member,
                                                    arrays, source="run.persist"),
                      what=f"persisting member {member!r} of run {self.run_id!r}")
        return replace(ref, s3_retries=client.retries - before)

    # -- the gate ------------------------------------------------------------------------------
    def gate(self, refs: Iterable[PredictionRef | Any] | None = None, *,
             verify: VerifyMode = "full", events: ev.EventLog | None = None,
             concurrency: int = GATE_CONCURRENCY) -> Verdict:
        """Decide whether the whole cohort is in the store, and keep the verdict.

        With ``refs`` (the :class:`PredictionRef` objects, or Ray ``ObjectRef`` of them, that
        this attempt's tasks returned), the attempt's ledger is written from them first; then
        the store is listed and every member verified against the ledger: ``passed`` only if
        every member is present, bound to this run and attempt, with the checksum its task
        reported. Without ``refs``, the run is re-checked against its latest ledger.

        The verdict is saved (``_gates/`` and ``_gate.json``); ``verdict.passed`` is False
        when another gate's failing or newer verdict stays the run's latest. Raises
        :class:`~s43_ray.errors.StoreError` when the verdict cannot be saved."""
        if verify not in VERIFY_MODES:
            raise InputError(f"verify {verify!r} is not valid; expected one of "
                             f"{list(VERIFY_MODES)}")
        log = events if events is not None else ev.EventLog(run_id=self.run_id,
                                                            min_severity="warning", keep=False)
        client = self.store.client()
        breaker = Circuit.for_store(client)
        wstore = WatchedStore(client, breaker)
        attempt = None
        if refs is not None:
            ledger = self._ledger(_resolve(refs))
            attempt = ledger.attempt
            watched(breaker, lambda: self._check_claim(wstore),
                    what=f"reading the claim of attempt {attempt} of run {self.run_id!r}")
            watched(breaker, lambda: self._write_ledger(wstore, ledger),
                    what=f"writing {self.layout.ledger_key(ledger.attempt)}")
            log.emit(ev.LEDGER_PERSISTED, key=self.layout.ledger_key(ledger.attempt),
                     attempt=ledger.attempt, members=len(ledger.entries), failed=0)
        verdict = gate_from_store(client, self.layout, members=self.members, codec=self.codec,
                                  mode=verify, concurrency=concurrency, node_id="driver",
                                  attempt=attempt)
        report_verdict(verdict, log, self.store.config.endpoint_url)
        saved = watched(breaker, lambda: persist_verdict(wstore, self.layout, verdict, log),
                        what=f"writing {self.layout.gate_key}")
        if saved is None:
            raise StoreError(f"run {self.run_id!r}: the verdict ({verdict.status}) could not "
                             f"be saved to {self.layout.gate_key}; nothing vouches for the "
                             "cohort until a gate's verdict is saved")
        newer = watched(breaker, lambda: newer_if_latest(wstore, self.layout, verdict, saved),
                        what=f"listing the attempts of run {self.run_id!r}")
        why = superseded(verdict, self.layout.gate_key, saved, newer)
        return replace(verdict, status="failed", reason=why) if why else verdict

    def _check_claim(self, store: WatchedStore) -> None:
        """The attempt this Run persists as must be the one it claimed: a ledger is written
        once per attempt, so a Run whose attempt or token is not the claim's would burn it."""
        claimed = read_attempt(store, self.layout, self.attempt or 0)
        if claimed is None or claimed.token != self.token:
            raise InputError(f"run {self.run_id!r}: attempt {self.attempt} "
                             + ("was never claimed" if claimed is None else
                                "was claimed by another driver")
                             + "; expected a Run from Store.start_run")
        record = read_manifest(store, self.layout)
        if record is not None and (record.members != self.members
                                   or record.codec != self.codec
                                   or record.schema_digest != self.schema_digest):
            raise InputError(f"run {self.run_id!r}: this Run's cohort ({len(self.members)} "
                             f"members, {self.codec}) is not the run's record "
                             f"({len(record.members)} members, {record.codec}); expected the "
                             "Run that Store.start_run returned")

    def _ledger(self, refs: list[PredictionRef]) -> Ledger:
        if self.attempt is None:
            raise InputError(f"run {self.run_id!r} was opened read-only: it has no attempt to "
                             "gate references of; expected run.gate() without references, or "
                             "a run from Store.start_run")
        if not refs:
            raise InputError(f"run {self.run_id!r}: gate() got no references; expected the "
                             "PredictionRefs run.persist returned (or no argument, to re-check "
                             "the run from the store)")
        entries: dict[str, LedgerEntry] = {}
        cohort = frozenset(self.members)  # once: a 20,000-member cohort is not scanned per ref
        for ref in refs:
            if not isinstance(ref, PredictionRef):
                raise InputError(f"run {self.run_id!r}: gate() got a {type(ref).__name__}; "
                                 "expected the PredictionRef objects run.persist returned")
            if ref.run_id != self.run_id or ref.run_attempt != self.attempt:
                raise InputError(f"reference of member {ref.member!r} is of run {ref.run_id!r} "
                                 f"attempt {ref.run_attempt}; expected run {self.run_id!r} "
                                 f"attempt {self.attempt}")
            if ref.member not in cohort:
                self._member(ref.member)  # raises, naming the cohort
            key = self.layout.member_key(ref.member, self.codec)
            if ref.key != key:
                raise InputError(f"reference of member {ref.member!r} names key {ref.key!r}; "
                                 f"expected {key!r}")
            entry = LedgerEntry(ref.key, ref.checksum, ref.bytes, ref.schema, self.attempt)
            if ref.member in entries and entries[ref.member] != entry:
                raise InputError(f"member {ref.member!r} has two references with different "
                                 "checksums (persisted twice with other arrays); expected one")
            entries[ref.member] = entry
        return Ledger(self.run_id, self.attempt, self.codec, entries=entries,
                      cohort=self.members, token=self.token)

    def _write_ledger(self, store: WatchedStore, ledger: Ledger) -> None:
        try:
            write_ledger(store, self.layout, ledger)
        except PreconditionFailed:
            # This attempt's ledger exists: the same references gated again is fine.
            existing = read_ledger(store, self.layout, ledger.attempt)
            if existing is None or existing.entries != ledger.entries:
                raise InputError(f"run {self.run_id!r}: attempt {ledger.attempt} already "
                                 "recorded other references; expected one set of references "
                                 "per attempt (Store.start_run starts a new attempt; "
                                 "run.gate() re-checks without references)") from None

    # -- reading -------------------------------------------------------------------------------
    def load(self, member: str) -> dict[str, np.ndarray]:
        """One member's arrays, verified before they are returned: against the run's latest
        ledger (the checksum its task reported, its size, schema, and the run, member and
        attempt it is bound to); a run with no ledger yet, against the object's own metadata
        and binding. Raises :class:`~s43_ray.errors.LoadError` (the subclass says why), or
        ``ObjectNotFound``."""
        self._member(member)
        client = self.store.client()
        breaker = Circuit.for_store(client)
        wstore = WatchedStore(client, breaker)
        ledger = watched(breaker, lambda: latest_ledger(wstore, self.layout),
                         what=f"reading the ledger of run {self.run_id!r}")
        expect = None
        if ledger is not None:
            entry = ledger.entries.get(member)
            if entry is None:
                raise NotInLedger(f"member {member!r} of run {self.run_id!r}: attempt "
                                  f"{ledger.attempt}'s ledger does not list it (its task "
                                  "failed or never reported); expected a member the run "
                                  "recorded")
            expect = Expectation(entry.checksum, entry.bytes, entry.schema, entry.attempt)
        arrays, _ = watched(breaker, lambda: load_member(
            wstore, member, self.key(member), self.codec, expect, run_id=self.run_id,
            declared_schema=self.schema_digest), what=f"reading member {member!r}")
        return arrays

    def read_table(self, *, concurrency: int = GATE_CONCURRENCY) -> pa.Table:
        """The whole cohort as one ``pyarrow.Table``: a ``member`` column, then one column per
        array, one row per prediction (arrays share their first dimension; scalars repeat;
        N-D arrays are ``fixed_shape_tensor`` columns of their trailing shape).

        Refuses (:class:`~s43_ray.errors.GateFailed`) unless the run's latest verdict passed,
        proves it from its own checks and ledger, and is of the newest attempt; every member is
        then verified against it as it is read (a changed object raises
        :class:`~s43_ray.errors.LoadError` naming it). A cohort larger than memory is
        :meth:`read_dataset`'s job."""
        basis = verified_cohort(self)
        return read_cohort_table(self, basis, concurrency)

    def read_dataset(self, *, parallelism: int = -1) -> ray.data.Dataset:
        """The verified cohort as a ``ray.data.Dataset`` of the same rows as
        :meth:`read_table`, read lazily and in parallel, each member verified against the
        passed verdict as it is read. Needs Ray Data (``pip install 's43_ray[data]'``)."""
        basis = verified_cohort(self)
        return read_cohort_dataset(self, basis, parallelism)

    def report(self, *, head: bool = True) -> RunReport:
        """What the store says of this run now (``s43-ray report``): its record, its latest
        verdict re-checked from its own checks, and each member's object as it is now."""
        return report_run(self.store.client(), self.layout, head=head)


def _resolve(refs: Iterable[Any]) -> list[PredictionRef]:
    """References as given: PredictionRef objects, or Ray ObjectRefs of them (fetched)."""
    if isinstance(refs, (PredictionRef, str, bytes)) or type(refs).__name__ == "ObjectRef":
        raise InputError(f"gate() got one {type(refs).__name__}; expected a list of the "
                         "references run.persist returned")
    items: list[Any] = list(refs)
    pending = [i for i, r in enumerate(items) if type(r).__name__ == "ObjectRef"]
    if pending:
        import ray

        for i, value in zip(pending, ray.get([items[i] for i in pending]), strict=True):
            items[i] = value
    return items

