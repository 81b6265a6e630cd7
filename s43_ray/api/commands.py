"""What the CLI's ``run``, ``gate`` and ``report`` do, as functions: the CLI calls these and
nothing below them, so a library user gets exactly what an operator gets.

- :func:`run_cohort`: claim a run, compute and persist every member on Ray (one task per
  member, references only back to the driver), write the ledger, gate it from the store in a
  task of its own, keep the verdict. Returns the :class:`~s43_ray.summary.Summary`.
- :func:`gate_run`: re-check a run from the store alone.
- :func:`report_run`: what the store says of a run now, re-checked, writing nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import events as ev
from ..circuit import Circuit, WatchedStore, watched
from ..codec import DEFAULT_CODEC, Codec
from ..driver import RunConfig, gate_existing
from ..driver import run_cohort as drive
from ..errors import InputError
from ..keys import check_key_lengths, member_names, new_run_id, validate_run_id
from ..ledger import latest_ledger
from ..manifest import read_manifest
from ..ops.report import RunReport
from ..ops.report import report_run as report
from ..predict import PredictorLike, resolve_predictor
from ..progress import Progress
from ..summary import Summary
from ..verify import VerifyMode
from .store import Store, check_cohort

__all__ = ["gate_run", "report_run", "run_cohort"]

_DEFAULTS = RunConfig(run_id="", members=())


def run_cohort(store: Store, run_id: str | None, members: Sequence[str],
               predictor: PredictorLike = _DEFAULTS.predictor, *, rows: int = _DEFAULTS.rows,
               codec: Codec = DEFAULT_CODEC, address: str | None = None,
               num_cpus: int | None = None, verify: VerifyMode = _DEFAULTS.verify,
               resume: bool = False, stall_timeout: float = _DEFAULTS.stall_timeout,
               events: ev.EventLog | None = None, progress: Progress | None = None,
               task_options: Mapping[str, Any] | None = None) -> Summary:
    """``s43-ray run``: the whole job for ``members`` in ``store``.

    ``predictor`` is ``f(run_id, member, rows) -> {name: ndarray}`` or its ``module:function``
    path (a function is shipped to the workers by value; a path is imported there).
    ``address``: a running Ray cluster (None: the one this process is connected to, else a
    local one). ``resume``: finish an earlier run of the same cohort, keeping what verifies.
    Events go to ``events`` (default: stderr, warnings and errors only). Raises
    :class:`~s43_ray.errors.InputError` before anything is written for bad input, and the
    store's or the cluster's errors; a gate that fails is a :class:`Summary` with
    ``passed`` False, not an exception."""
    run_id = validate_run_id(run_id) if run_id is not None else new_run_id()
    cohort = check_cohort(run_id, members)
    resolve_predictor(predictor)  # refused here, before anything is written
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
        raise InputError(f"rows {rows!r} is not valid; expected a positive integer")
    check_key_lengths(store.prefix, run_id, cohort, codec)
    cfg = RunConfig(run_id=run_id, members=cohort, rows=rows, codec=codec, predictor=predictor,
                    address=address, num_cpus=num_cpus, verify=verify,
                    stall_timeout=float(stall_timeout), resume=resume,
                    task_options=dict(task_options or {}))
    log = events.for_run(run_id) if events is not None else ev.EventLog(
        run_id=run_id, min_severity="warning", keep=False)
    # An embedded server still starting comes up while Ray does.
    return drive(cfg, store.config, log, progress,
                 store_starting=store.wait_ready if store.starting else None)


def gate_run(store: Store, run_id: str, *, members: Sequence[str] | None = None,
             expected: int | None = None, codec: Codec | None = None,
             verify: VerifyMode = "full", events: ev.EventLog | None = None) -> Summary:
    """``s43-ray gate``: re-check run ``run_id`` from the store alone (its record and latest
    ledger) and keep the verdict. ``members``/``expected``/``codec`` must agree with the run's
    record, and name the cohort of a run that has none."""
    run_id = validate_run_id(run_id)
    if members is not None and expected is not None and expected != len(members):
        raise InputError(f"expected {expected} differs from the {len(members)} members "
                         "named; expected one of them, or both agreeing")
    client = store.client()
    breaker = Circuit.for_store(client)
    wstore = WatchedStore(client, breaker)
    layout = store.layout(run_id)
    watched(breaker, wstore.check, what=f"checking {store.url}")
    manifest = watched(breaker, lambda: read_manifest(wstore, layout),
                       what=f"reading {layout.manifest_key}")
    ledger = None if manifest else watched(breaker, lambda: latest_ledger(wstore, layout),
                                           what=f"reading {layout.run_prefix}_ledgers/")
    recorded = manifest.members if manifest else (ledger.members if ledger else None)
    cohort = _gate_members(run_id, store.url, recorded, members, expected)
    known: Codec | None = manifest.codec if manifest else (ledger.codec if ledger else None)
    if known and codec and codec != known:
        raise InputError(f"--format {codec} differs from the run's format {known}; expected "
                         f"{known}")
    chosen: Codec = codec or known or DEFAULT_CODEC
    check_key_lengths(store.prefix, run_id, cohort, chosen)
    log = events.for_run(run_id) if events is not None else ev.EventLog(
        run_id=run_id, min_severity="warning", keep=False)
    return gate_existing(store.config, layout, members=cohort, codec=chosen,
                         expected=len(cohort), events=log, verify=verify)


def _gate_members(run_id: str, url: str, cohort: Sequence[str] | None,
                  explicit: Sequence[str] | None, expected: int | None) -> list[str]:
    """The cohort a gate checks: the run's record (or, if it was lost, its latest ledger);
    ``members``/``expected`` must agree with it (a verdict over part of a cohort would read
    as the whole run's), and name it only when the run has neither."""
    if cohort is None:
        if explicit:
            return list(explicit)
        if expected:
            return member_names(expected)
        raise InputError(f"run {run_id!r} has no manifest in {url}; expected --expected N or "
                         "--members a,b,c")
    recorded = list(cohort)
    if explicit is not None and sorted(explicit) != sorted(recorded):
        gone = sorted(set(recorded) - set(explicit))
        extra = sorted(set(explicit) - set(recorded))
        raise InputError(f"--members names {len(explicit)} members but run {run_id!r} records "
                         f"{len(recorded)} (not named: {gone[:5]}, not in the run: {extra[:5]}); "
                         "expected the run's members, or no --members")
    if expected is not None and expected != len(recorded):
        raise InputError(f"--expected {expected} differs from the {len(recorded)} members run "
                         f"{run_id!r} records; expected {len(recorded)}, or no --expected")
    return recorded


def report_run(store: Store, run_id: str, *, head: bool = True) -> RunReport:
    """``s43-ray report --run-id``: the run's record, its latest verdict re-checked from its
    own checks and ledger, and each member's object as it is now. Writes nothing; raises
    :class:`~s43_ray.errors.InputError` when the store holds nothing of the run."""
    return report(store.client(), store.layout(validate_run_id(run_id)), head=head)

