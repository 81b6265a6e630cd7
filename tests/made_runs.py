"""Runs made as a driver makes them, without Ray: the record claimed, an attempt claimed,
members persisted, the ledger written, the gate's verdict saved (for the ``runs`` tests)."""

from __future__ import annotations

from dataclasses import replace

from s43_ray.config import AnyStoreConfig
from s43_ray.gate import gate_from_store
from s43_ray.keys import RunLayout, member_names
from s43_ray.ledger import Ledger, LedgerEntry, claim_attempt, write_ledger
from s43_ray.manifest import RunManifest, claim_run
from s43_ray.predict import DEFAULT_PREDICTOR, declared_schema, default_predictor
from s43_ray.stores.base import Store
from s43_ray.task import PredictionRef, TaskSpec, persist_member
from s43_ray.verdicts import save_verdict

ROWS = 8
MEMBERS = member_names(3)


def make_run(store: Store, cfg: AnyStoreConfig, run_id: str, created_at: str, *,
             persisted: list[str] = MEMBERS, gate: bool = True) -> RunLayout:
    """A run's first attempt as the driver makes it; members not in ``persisted`` failed."""
    layout = RunLayout(cfg.prefix, run_id)
    record = replace(RunManifest.new(run_id, tuple(MEMBERS), "npz", ROWS, DEFAULT_PREDICTOR,
                                     declared_schema(default_predictor, ROWS)),
                     created_at=created_at)
    claim_run(store, layout, record)
    attempt = claim_attempt(store, layout, "first")
    spec = TaskSpec(store=cfg, run_id=run_id, codec="npz", rows=ROWS,
                    predictor=DEFAULT_PREDICTOR, attempt=attempt.number,
                    schema=record.schema_digest)
    refs = {m: persist_member(store, spec, m) for m in persisted}
    write_ledger(store, layout, Ledger(
        run_id, attempt.number, "npz",
        {m: LedgerEntry(r.key, r.checksum, r.bytes, r.schema, r.run_attempt)
         for m, r in refs.items() if isinstance(r, PredictionRef)},
        failed={m: "predictor: boom" for m in MEMBERS if m not in persisted},
        cohort=tuple(MEMBERS), token=attempt.token))
    if gate:
        save_verdict(store, layout, gate_from_store(store, layout, members=MEMBERS,
                                                    codec="npz"))
    return layout
