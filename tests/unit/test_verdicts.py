"""verdicts: every verdict kept in ``_gates/``, the newest attempt's in ``_gate.json``, and a
verdict re-checked from its own checks rather than believed."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from typing import Any

import pytest
from helpers import write_claimed

from s43_ray.config import StoreConfig
from s43_ray.gate import Verdict, gate_from_store
from s43_ray.keys import RunLayout, member_names
from s43_ray.ledger import Ledger, LedgerEntry, read_ledger
from s43_ray.manifest import RunManifest, claim_run, read_manifest
from s43_ray.predict import DEFAULT_PREDICTOR, declared_schema, default_predictor
from s43_ray.stores.memory import MemoryStore
from s43_ray.task import PredictionRef, TaskSpec, persist_member
from s43_ray.verdicts import recheck, save_verdict

PREFIX = "p"

RUN = "manual__2026-11-28T10:00:00+00:00"
LAYOUT = RunLayout(PREFIX, RUN)
ROWS = 16
MEMBERS = member_names(3)


def _verdict(attempt: int | None, finished_at: str, status: str = "passed",
             token: str = "") -> Verdict:
    return Verdict(run_id=RUN, store="memory://memory", codec="npz", expected=1,
                   cohort_count=1 if status == "passed" else 0, status=status, reason="r",
                   missing=[], invalid={}, unexpected=[], attempt=attempt,
                   started_at=finished_at, finished_at=finished_at,
                   token=token or f"{attempt or 0:04d}{len(finished_at):04d}")


def _history(store: MemoryStore) -> list[str]:
    return sorted(k for k in store.objects if k.startswith(LAYOUT.control_dir("_gates")))


def _latest(store: MemoryStore) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(store.objects[LAYOUT.gate_key][0])
    return record


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


# --- save_verdict ----------------------------------------------------------------------------


def test_save_verdict_keeps_the_verdict_under_gates_and_makes_it_the_latest(
        store: MemoryStore) -> None:
    verdict = _verdict(1, "2026-12-01T10:50:12.345Z", token="abcd0123")

    saved = save_verdict(store, LAYOUT, verdict)

    history, latest = saved.history_key, saved.latest

    assert latest
    assert history == f"p/{RUN}/_gates/20261201T105012345Z-a000001-abcd0123.json"
    assert _history(store) == [history]
    assert store.objects[history][0] == verdict.to_json()
    assert store.objects[LAYOUT.gate_key][0] == verdict.to_json()
    assert store.objects[LAYOUT.gate_key][1]["s43-status"] == "passed"


def test_a_later_verdict_of_the_same_attempt_replaces_the_latest_and_both_are_kept(
        store: MemoryStore) -> None:
    first = _verdict(1, "2026-12-01T10:00:00.000Z", status="failed")
    save_verdict(store, LAYOUT, first)
    # The second gate began after the first verdict was written (it saw its ETag).
    second = replace(_verdict(1, "2026-12-01T11:00:00.000Z"),
                     prior_etag=store.head(LAYOUT.gate_key).etag)

    saved = save_verdict(store, LAYOUT, second)

    _, latest = saved.history_key, saved.latest

    assert latest
    assert _latest(store)["token"] == second.token
    assert len(_history(store)) == 2


def test_a_passing_verdict_never_replaces_a_failing_one_written_while_it_ran(
        store: MemoryStore) -> None:
    # Gate A began with no verdict there; gate B began later, saw a member gone, and finished
    # first. A's pass, however late its clock says it finished, must not hide B's failure.
    slow_pass = _verdict(1, "2026-12-01T23:00:00.000Z")
    fast_fail = _verdict(1, "2026-12-01T10:00:00.000Z", status="failed")
    save_verdict(store, LAYOUT, fast_fail)

    saved = save_verdict(store, LAYOUT, slow_pass)

    history, latest = saved.history_key, saved.latest

    assert not latest and history in _history(store)
    assert _latest(store)["token"] == fast_fail.token


def test_a_host_clock_ahead_cannot_pin_a_passing_verdict(store: MemoryStore) -> None:
    ahead = _verdict(1, "2027-12-01T10:00:00.000Z")  # a host whose clock is a year ahead
    save_verdict(store, LAYOUT, ahead)
    later = replace(_verdict(1, "2026-12-01T10:00:00.000Z", status="failed"),
                    prior_etag=store.head(LAYOUT.gate_key).etag)

    saved = save_verdict(store, LAYOUT, later)

    _, latest = saved.history_key, saved.latest

    assert latest and _latest(store)["status"] == "failed"


def test_an_older_attempts_verdict_does_not_replace_a_newer_attempts_but_is_kept(
        store: MemoryStore) -> None:
    newer = _verdict(2, "2026-12-01T10:00:00.000Z", status="failed")
    older = _verdict(1, "2026-12-01T11:00:00.000Z")  # finished later, but of attempt 1
    save_verdict(store, LAYOUT, newer)

    saved = save_verdict(store, LAYOUT, older)

    history, latest = saved.history_key, saved.latest

    assert latest is False
    assert _latest(store)["attempt"] == 2 and _latest(store)["status"] == "failed"
    assert history in _history(store) and len(_history(store)) == 2
    assert json.loads(store.objects[history][0])["token"] == older.token


def test_a_verdict_without_an_attempt_does_not_replace_an_attempts_verdict(
        store: MemoryStore) -> None:
    save_verdict(store, LAYOUT, _verdict(1, "2026-12-01T10:00:00.000Z"))

    saved = save_verdict(store, LAYOUT, _verdict(None, "2026-12-01T11:00:00.000Z"))

    _, latest = saved.history_key, saved.latest

    assert latest is False
    assert _latest(store)["attempt"] == 1


def test_racing_gates_leave_the_newest_attempts_verdict_as_the_latest(
        store: MemoryStore) -> None:
    verdicts = [_verdict(a, f"2026-12-01T10:00:0{a}.000Z") for a in range(1, 9)]
    start = threading.Barrier(len(verdicts))
    errors: list[BaseException] = []

    def gate(v: Verdict) -> None:
        try:
            start.wait(timeout=5)
            save_verdict(store, LAYOUT, v)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=gate, args=(v,)) for v in verdicts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)

    assert errors == []
    assert _latest(store)["attempt"] == 8
    assert len(_history(store)) == 8


# --- recheck ---------------------------------------------------------------------------------


def _gated_run(store: MemoryStore, members: list[str] = MEMBERS, *,
               ledger: bool = True) -> tuple[dict[str, Any], RunManifest, Ledger | None]:
    """A run's attempt 1 and its gate: the verdict as read back, the record and the ledger."""
    record = RunManifest.new(RUN, tuple(MEMBERS), "npz", ROWS, DEFAULT_PREDICTOR,
                             declared_schema(default_predictor, ROWS))
    claim_run(store, LAYOUT, record)
    spec = TaskSpec(store=StoreConfig(bucket="memory", prefix=PREFIX), run_id=RUN, codec="npz",
                    rows=ROWS, predictor=DEFAULT_PREDICTOR, attempt=1,
                    schema=record.schema_digest)
    refs = {m: persist_member(store, spec, m) for m in members}
    if ledger:
        write_claimed(store, LAYOUT, Ledger(RUN, 1, "npz", {
            m: LedgerEntry(r.key, r.checksum, r.bytes, r.schema, r.run_attempt)
            for m, r in refs.items() if isinstance(r, PredictionRef)}))
    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz")
    save_verdict(store, LAYOUT, verdict)
    manifest = read_manifest(store, LAYOUT)
    assert manifest is not None
    return _latest(store), manifest, read_ledger(store, LAYOUT, 1)


def test_recheck_of_an_honest_passed_verdict_is_passed_without_problems(
        store: MemoryStore) -> None:
    record, manifest, ledger = _gated_run(store)
    assert record["status"] == "passed"

    assert recheck(record, RUN, manifest, ledger) == ("passed", [])


def test_recheck_of_an_honest_failed_verdict_is_failed_without_problems(
        store: MemoryStore) -> None:
    record, manifest, ledger = _gated_run(store, MEMBERS[:2])
    assert record["status"] == "failed"

    assert recheck(record, RUN, manifest, ledger) == ("failed", [])


def test_recheck_refuses_a_failed_verdict_edited_to_say_passed(store: MemoryStore) -> None:
    record, manifest, ledger = _gated_run(store, MEMBERS[:2])
    record["status"] = "passed"

    status, problems = recheck(record, RUN, manifest, ledger)

    assert status == "failed"
    assert "claims 'passed'" in problems[0]
    assert "2 of 3 members ok" in problems[0]


def test_recheck_refuses_a_verdict_edited_to_say_passed_with_its_counts_edited_too(
        store: MemoryStore) -> None:
    record, manifest, ledger = _gated_run(store, MEMBERS[:2])
    record.update(status="passed", cohort_count=3, missing=[], shortfall=0)

    status, problems = recheck(record, RUN, manifest, ledger)

    assert status == "failed"
    assert any("claims 'passed'" in p for p in problems)
    assert any("cohort_count 3" in p for p in problems)


def test_recheck_reports_a_verdict_that_names_another_run(store: MemoryStore) -> None:
    record, manifest, ledger = _gated_run(store)
    record["run_id"] = RUN + "x"

    status, problems = recheck(record, RUN, manifest, ledger)

    assert status == "failed"
    assert any(repr(RUN + "x") in p and repr(RUN) in p for p in problems)
    assert any("claims 'passed'" in p for p in problems)


def test_recheck_reports_an_edited_cohort_count(store: MemoryStore) -> None:
    record, manifest, ledger = _gated_run(store)
    record["cohort_count"] = 2

    status, problems = recheck(record, RUN, manifest, ledger)

    assert status == "failed"
    assert "the verdict says cohort_count 2; its checks give 3" in problems


def test_recheck_reports_an_edited_expected_count(store: MemoryStore) -> None:
    record, manifest, ledger = _gated_run(store)
    record["expected"] = 2

    status, problems = recheck(record, RUN, manifest, ledger)

    assert status == "failed"
    assert "the verdict says expected 2; its checks give 3" in problems


def test_recheck_reports_a_verdict_checking_other_members_than_the_runs_record(
        store: MemoryStore) -> None:
    record, manifest, ledger = _gated_run(store)
    record["checks"] = record["checks"][:2]

    status, problems = recheck(record, RUN, manifest, ledger)

    assert status == "failed"
    assert any("checks 2 members; the run's record has 3" in p for p in problems)


def test_recheck_reports_an_ok_check_whose_checksum_is_not_the_ledgers(
        store: MemoryStore) -> None:
    record, manifest, ledger = _gated_run(store)
    record["checks"][1]["checksum"] = "crc64nvme:AAAAAAAAAAA="

    status, problems = recheck(record, RUN, manifest, ledger)

    assert status == "failed"
    assert any("'m00001'" in p and "crc64nvme:AAAAAAAAAAA=" in p and "ledger" in p
               for p in problems)


def test_recheck_reports_an_ok_check_of_a_member_the_ledger_does_not_list(
        store: MemoryStore) -> None:
    record, manifest, ledger = _gated_run(store)
    assert ledger is not None
    shorter = replace(ledger, entries={m: e for m, e in ledger.entries.items() if m != "m00002"})

    status, problems = recheck(record, RUN, manifest, shorter)

    assert status == "failed"
    assert any("'m00002'" in p and "None" in p for p in problems)


def test_recheck_of_a_verdict_without_a_ledger_never_proves_passed(store: MemoryStore) -> None:
    record, manifest, _ = _gated_run(store, ledger=False)
    assert record["basis"] == "no_ledger" and record["cohort_count"] == 3

    assert recheck(record, RUN, manifest, None)[0] == "failed"

    record["status"] = "passed"
    status, problems = recheck(record, RUN, manifest, None)
    assert status == "failed"
    assert "claims 'passed'" in problems[0]


def test_recheck_of_a_verdict_with_no_checks_is_not_passed() -> None:
    record = {"run_id": RUN, "status": "passed", "expected": 0, "cohort_count": 0,
              "checks": [], "basis": "ledger"}

    status, problems = recheck(record, RUN, None, None)

    assert status == "failed"
    assert "claims 'passed'" in problems[0]


def test_recheck_does_not_call_an_honest_verdict_on_object_metadata_forged(
        store: MemoryStore) -> None:
    spec = TaskSpec(store=StoreConfig(bucket="memory", prefix=PREFIX), run_id=RUN, codec="npz",
                    rows=ROWS, predictor=DEFAULT_PREDICTOR)
    for m in MEMBERS:
        persist_member(store, spec, m)
    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz")
    assert verdict.passed and verdict.basis == "metadata"

    _, problems = recheck(json.loads(verdict.to_json()), RUN, None, None)

    assert problems == []
