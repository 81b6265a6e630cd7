"""Reading a gated cohort back, verified: what :meth:`Run.read_table
<s43_ray.api.run.Run.read_table>` and :meth:`Run.read_dataset
<s43_ray.api.run.Run.read_dataset>` stand on.

:func:`verified_cohort` decides whether the cohort may be read at all: the run's latest verdict
must pass when recomputed from its own checks and its attempt's ledger
(:func:`s43_ray.verdicts.recheck`, so a forged ``_gate.json`` is refused), no attempt may have
started after it, and it must cover the run's members. It returns what each member must still
be; every read then verifies its object against that (checksum, size, schema, binding) before a
row of it is returned.

Table layout: one row per prediction. A member's arrays share their first dimension (its
rows); 0-d arrays repeat on every row; an array of shape ``(rows, *trailing)`` becomes a
``fixed_shape_tensor`` column of shape ``trailing``. A ``member`` column comes first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..circuit import Circuit, WatchedStore, daemon_map, watched
from ..errors import CodecMismatch, GateFailed, InputError, LoadError, ObjectNotFound
from ..gate import PASSED
from ..ledger import attempt_numbers, read_ledger
from ..manifest import read_manifest
from ..stores.base import Store as Client
from ..verdicts import recheck
from ..verify import Expectation, load_member

if TYPE_CHECKING:
    import ray.data

    from .run import Run

MEMBER_COLUMN = "member"


@dataclass(frozen=True)
class VerifiedCohort:
    """What every member must still be for the cohort to be read: its passed verdict's view."""

    run_id: str
    attempt: int | None
    verdict_token: str
    expect: Mapping[str, Expectation]
    bytes_total: int


def verified_cohort(run: Run) -> VerifiedCohort:
    """The run's passed verdict, re-checked, as per-member expectations; raises
    :class:`GateFailed` naming why the cohort may not be read."""
    client = run.store.client()
    breaker = Circuit.for_store(client)
    wstore = WatchedStore(client, breaker)
    return watched(breaker, lambda: _verified(run, wstore),
                   what=f"reading the verdict of run {run.run_id!r}")


def _refuse(run: Run, why: str) -> GateFailed:
    return GateFailed(f"run {run.run_id!r} in {run.store.url}: {why}; expected a passed verdict "
                      f"that still holds (gate it: run.gate(refs), or `s43-ray gate --run-id "
                      f"{run.run_id}`)")


def _verified(run: Run, store: Client) -> VerifiedCohort:
    layout = run.layout
    try:
        record = read_manifest(store, layout)
        body, _ = store.get(layout.gate_key)
    except ObjectNotFound:
        raise _refuse(run, "it has no verdict") from None
    except CodecMismatch as exc:
        raise _refuse(run, f"its record is not valid ({exc})") from None
    try:
        verdict = json.loads(bytes(body))
        if not isinstance(verdict, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise _refuse(run, f"{layout.gate_key} is not a verdict ({exc})") from None
    attempt = verdict.get("attempt")
    try:
        ledger = (read_ledger(store, layout, attempt)
                  if isinstance(attempt, int) and attempt > 0 else None)
    except CodecMismatch as exc:
        raise _refuse(run, f"the ledger of its verdict's attempt is not valid ({exc})") from None
    attempts = attempt_numbers(store, layout)
    status, problems = recheck(verdict, run.run_id, record, ledger, attempts)
    if status != PASSED:
        said = verdict.get("status")
        why = "; ".join(problems[:3]) or str(verdict.get("reason") or "")
        raise _refuse(run, f"its latest verdict {'claims passed but ' if said == PASSED else ''}"
                           f"did not pass ({why})")
    newest = max(attempts, default=0)
    if newest > (attempt if isinstance(attempt, int) else 0):
        raise _refuse(run, f"attempt {newest} started after its latest verdict (attempt "
                           f"{attempt}) and may have rewritten members")
    if record is not None and (sorted(record.members) != sorted(run.members)
                               or record.codec != run.codec):
        raise InputError(f"run {run.run_id!r}: this Run's cohort ({len(run.members)} members, "
                         f"{run.codec}) is not the run's record ({len(record.members)} members, "
                         f"{record.codec}); expected the Run that Store.open_run returns")
    checks = {str(c.get("member")): c for c in verdict.get("checks", [])
              if isinstance(c, dict)}
    if sorted(checks) != sorted(run.members):
        raise _refuse(run, f"its verdict checked {len(checks)} members, the run has "
                           f"{len(run.members)}")
    expect: dict[str, Expectation] = {}
    for m in run.members:
        if ledger is not None:
            e = ledger.entries[m]  # recheck proved every ok member is the ledger's
            expect[m] = Expectation(e.checksum, e.bytes, e.schema, e.attempt)
        else:  # a run named only by its members: each object against the verdict's view
            c = checks[m]
            expect[m] = Expectation(str(c.get("checksum") or ""), int(c.get("bytes") or 0),
                                    str(c.get("schema") or ""), c.get("attempt"))
    return VerifiedCohort(run.run_id, attempt if isinstance(attempt, int) else None,
                          str(verdict.get("token", "")), expect,
                          sum(e.bytes for e in expect.values()))


def read_member(run: Run, cohort: VerifiedCohort, member: str,
                store: Client | None = None) -> dict[str, np.ndarray]:
    """One member's arrays, verified against the passed verdict; raises :class:`LoadError`
    (its class says why) naming the member when the object no longer matches."""
    try:
        arrays, _ = load_member(store or run.store.client(), member, run.key(member), run.codec,
                                cohort.expect[member], run_id=run.run_id,
                                declared_schema=run.schema_digest)
    except LoadError as exc:
        raise type(exc)(f"member {member!r} of run {run.run_id!r} no longer matches its "
                        f"passed verdict: {exc}") from None
    except ObjectNotFound:
        raise ObjectNotFound(f"member {member!r} of run {run.run_id!r} was counted by its "
                             f"passed verdict but is gone from {run.store.url}") from None
    return arrays


def member_table(member: str, arrays: Mapping[str, np.ndarray]) -> pa.Table:
    """One member's arrays as rows (see the module docstring for the layout)."""
    lengths = {name: a.shape[0] for name, a in arrays.items() if a.ndim >= 1}
    if len(set(lengths.values())) > 1:
        raise InputError(f"member {member!r}: arrays of different lengths {lengths}; a table "
                         "has one row per prediction, so expected arrays sharing their first "
                         "dimension (use run.load(member) for this record)")
    rows = next(iter(lengths.values()), 1)
    if MEMBER_COLUMN in arrays:
        raise InputError(f"member {member!r} has an array named {MEMBER_COLUMN!r}; expected "
                         "other names (the table's first column is the member)")
    columns: dict[str, pa.Array] = {
        MEMBER_COLUMN: pa.array([member], pa.string()).take(
            pa.array(np.zeros(rows, dtype=np.int32)))}
    for name, a in arrays.items():
        columns[name] = _column(member, name, a, rows)
    return pa.table(columns)


def _column(member: str, name: str, a: np.ndarray, rows: int) -> pa.Array:
    if a.dtype.kind == "c":
        raise InputError(f"member {member!r}: array {name!r} is complex ({a.dtype}); Arrow "
                         "tables hold no complex numbers, so expected run.load(member) for it")
    if a.ndim == 0:
        return pa.array(np.full(rows, a, dtype=a.dtype))
    if a.ndim == 1:
        return pa.array(a)
    if 0 in a.shape[1:]:
        raise InputError(f"member {member!r}: array {name!r} has shape {a.shape}; a table "
                         "column needs a non-empty shape per row, so expected run.load(member) "
                         "for it")
    return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(a))


def read_cohort_table(run: Run, cohort: VerifiedCohort, concurrency: int) -> pa.Table:
    """Every member read (``concurrency`` at once), verified, and laid out as one table."""
    client = run.store.client()
    breaker = Circuit.for_store(client)
    wstore = WatchedStore(client, breaker)

    def one(member: str) -> tuple[str, pa.Table]:
        return member, member_table(member, read_member(run, cohort, member, wstore))

    tables = dict(daemon_map(one, run.members, concurrency, breaker,
                             what=f"reading {len(run.members)} members of run {run.run_id!r}"))
    ordered = [tables[m] for m in run.members]
    try:
        table = pa.concat_tables(ordered)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"run {run.run_id!r}: its members hold different arrays ({exc}); "
                         "expected one schema across the cohort (declare it: "
                         "start_run(schema=...)), or run.load(member) one by one") from None
    return table.replace_schema_metadata(_metadata(run, cohort))


def _metadata(run: Run, cohort: VerifiedCohort) -> dict[str, str]:
    return {"s43.run_id": run.run_id, "s43.store": run.store.url,
            "s43.attempt": str(cohort.attempt or ""), "s43.verdict": cohort.verdict_token,
            "s43.codec": run.codec}


def read_cohort_dataset(run: Run, cohort: VerifiedCohort, parallelism: int
                        ) -> ray.data.Dataset:
    """The cohort as a lazily read ``ray.data.Dataset`` (see :mod:`s43_ray.api.dataset`)."""
    try:
        from .dataset import cohort_dataset
    except ImportError as exc:
        raise InputError(f"run.read_dataset needs Ray Data, which cannot be imported here "
                         f"({exc}); expected it installed: pip install 's43_ray[data]'"
                         ) from None
    return cohort_dataset(run, cohort, parallelism)

