"""ledger: attempt numbers claimed once each, and one ledger per attempt, read back checked."""

from __future__ import annotations

import json
import threading

import pytest
from helpers import write_claimed

from s43_ray.errors import CodecMismatch, PreconditionFailed
from s43_ray.keys import RunLayout
from s43_ray.ledger import (
    Attempt,
    Ledger,
    LedgerEntry,
    attempt_numbers,
    claim_attempt,
    latest_ledger,
    ledger_numbers,
    read_ledger,
)
from s43_ray.stores.memory import MemoryStore

RUN = "manual__2026-11-28T10:00:00+00:00"
LAYOUT = RunLayout("p", RUN)
RACERS = 8


def _ledger(attempt: int = 1, run_id: str = RUN, **failed: str) -> Ledger:
    layout = RunLayout("p", run_id)
    entries = {m: LedgerEntry(layout.member_key(m, "npz"), f"crc64nvme:{m}AAAAAAA=", 100 + i,
                              "s1:" + "0" * 32, attempt)
               for i, m in enumerate(["m00000", "m00001"])}
    return Ledger(run_id, attempt, "npz", entries, failed=dict(failed),
                  written_at="2026-12-01T10:50:12.345Z")


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


# --- attempts --------------------------------------------------------------------------------


def test_claim_attempt_numbers_attempts_one_two_three(store: MemoryStore) -> None:
    first = claim_attempt(store, LAYOUT, "first")
    second = claim_attempt(store, LAYOUT, "rerun")
    third = claim_attempt(store, LAYOUT, "resume")

    assert [first.number, second.number, third.number] == [1, 2, 3]
    assert [first.kind, second.kind, third.kind] == ["first", "rerun", "resume"]
    assert attempt_numbers(store, LAYOUT) == [1, 2, 3]
    assert first.run_id == RUN and first.holder and first.token != second.token


def test_claim_attempt_writes_a_readable_record_under_attempts(store: MemoryStore) -> None:
    attempt = claim_attempt(store, LAYOUT, "first")

    body = store.objects[LAYOUT.attempt_key(1)][0]
    assert LAYOUT.attempt_key(1) == f"p/{RUN}/_attempts/000001.json"
    record = json.loads(body)
    assert record["number"] == 1 and record["kind"] == "first"
    assert record["run_id"] == RUN and record["token"] == attempt.token
    assert Attempt(**record) == attempt


def test_claim_attempt_continues_after_the_highest_attempt_listed(store: MemoryStore) -> None:
    store.put(LAYOUT.attempt_key(9), b"{}", metadata={})

    assert claim_attempt(store, LAYOUT, "rerun").number == 10


def test_claim_attempt_counts_attempts_of_this_run_only(store: MemoryStore) -> None:
    claim_attempt(store, RunLayout("p", RUN + "x"), "first")
    claim_attempt(store, RunLayout("p", RUN + "x"), "rerun")

    assert claim_attempt(store, LAYOUT, "first").number == 1


def test_racing_drivers_get_distinct_attempt_numbers(store: MemoryStore) -> None:
    start = threading.Barrier(RACERS)
    claimed: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def driver() -> None:
        try:
            start.wait(timeout=5)
            number = claim_attempt(store, LAYOUT, "rerun").number
            with lock:
                claimed.append(number)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=driver) for _ in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)

    assert errors == []
    assert sorted(claimed) == list(range(1, RACERS + 1))
    assert attempt_numbers(store, LAYOUT) == list(range(1, RACERS + 1))
    tokens = {json.loads(store.objects[LAYOUT.attempt_key(n)][0])["token"] for n in claimed}
    assert len(tokens) == RACERS  # each attempt record is its own driver's, none overwritten


# --- the ledger record -----------------------------------------------------------------------


def test_ledger_json_round_trip_is_equal() -> None:
    ledger = _ledger(m00002="unreachable: PUT timed out")

    restored = Ledger.from_json(ledger.to_json())

    assert restored == ledger
    assert restored.entries["m00001"].bytes == 101
    assert restored.failed == {"m00002": "unreachable: PUT timed out"}


def test_ledger_without_a_time_is_stamped_when_written() -> None:
    ledger = Ledger(RUN, 1, "arrow", {})

    restored = Ledger.from_json(ledger.to_json())

    assert restored.written_at.endswith("Z")
    assert restored.codec == "arrow" and restored.entries == {} and restored.failed == {}


def test_ledger_json_names_its_member_fields() -> None:
    record = json.loads(_ledger().to_json())

    assert record["members_fields"] == ["key", "checksum", "bytes", "schema", "attempt"]
    assert record["members"]["m00000"] == [f"p/{RUN}/m00000.npz", "crc64nvme:m00000AAAAAAA=",
                                           100, "s1:" + "0" * 32, 1]


@pytest.mark.parametrize("body", [
    b"",
    b"not json",
    b"[]",
    b"{}",
    b'{"run_id": "r", "attempt": 1, "codec": "parquet", "members": {}}',
    b'{"run_id": "r", "attempt": "one", "codec": "npz", "members": {}}',
    b'{"run_id": "r", "attempt": 1, "codec": "npz", "members": {"m1": ["k", "c", 1]}}',
    b'{"run_id": "r", "attempt": 1, "codec": "npz", "members": {"m1": 5}}',
    b'{"run_id": "r", "attempt": 1, "codec": "npz", "members": {}, "failed": ["m1"]}',
], ids=["empty", "text", "list", "no-fields", "codec", "attempt", "short-entry", "entry-number",
        "failed-list"])
def test_ledger_from_garbage_is_a_codec_mismatch(body: bytes) -> None:
    with pytest.raises(CodecMismatch, match="ledger is not valid"):
        Ledger.from_json(body)


@pytest.mark.parametrize("body", [
    b'{"run_id": "r", "attempt": 1, "codec": "npz", "members": {"../x": ["k", "c", 1, "s", 1]}}',
    b'{"run_id": "r", "attempt": 1, "codec": "npz", "members": []}',
], ids=["bad-member-name", "members-list"])
def test_ledger_with_a_bad_member_table_is_a_codec_mismatch(body: bytes) -> None:
    with pytest.raises(CodecMismatch, match="ledger is not valid"):
        Ledger.from_json(body)


# --- in the store ----------------------------------------------------------------------------


def test_write_then_read_ledger_gives_the_same_ledger(store: MemoryStore) -> None:
    ledger = _ledger(attempt=2)

    write_claimed(store, LAYOUT, ledger)

    assert [k for k in store.objects if "/_ledgers/" in k] == [f"p/{RUN}/_ledgers/000002.json"]
    assert read_ledger(store, LAYOUT, 2) == ledger
    assert read_ledger(store, LAYOUT, 1) is None


def test_an_attempt_writes_its_ledger_once(store: MemoryStore) -> None:
    first = _ledger(attempt=1)
    write_claimed(store, LAYOUT, first)

    with pytest.raises(PreconditionFailed):
        write_claimed(store, LAYOUT, _ledger(attempt=1, m00001="predictor: boom"))

    assert read_ledger(store, LAYOUT, 1) == first


def test_read_ledger_refuses_a_ledger_of_another_attempt_under_this_key(
        store: MemoryStore) -> None:
    store.put(LAYOUT.ledger_key(1), _ledger(attempt=2).to_json(), metadata={})

    with pytest.raises(CodecMismatch) as info:
        read_ledger(store, LAYOUT, 1)

    assert "attempt 2" in str(info.value) and "attempt 1" in str(info.value)


def test_read_ledger_refuses_a_ledger_of_another_run_under_this_key(store: MemoryStore) -> None:
    other = RUN + "x"
    store.put(LAYOUT.ledger_key(1), _ledger(run_id=other).to_json(), metadata={})

    with pytest.raises(CodecMismatch) as info:
        read_ledger(store, LAYOUT, 1)

    assert repr(other) in str(info.value) and repr(RUN) in str(info.value)


def test_latest_ledger_is_the_highest_attempt_that_wrote_one(store: MemoryStore) -> None:
    for attempt in (2, 10, 1):
        write_claimed(store, LAYOUT, _ledger(attempt=attempt))
    claim_attempt(store, LAYOUT, "first")  # attempts without a ledger do not count

    latest = latest_ledger(store, LAYOUT)

    assert latest is not None and latest.attempt == 10
    assert ledger_numbers(store, LAYOUT) == [1, 2, 10]


def test_latest_ledger_of_a_run_without_ledgers_is_none(store: MemoryStore) -> None:
    claim_attempt(store, LAYOUT, "first")

    assert latest_ledger(store, LAYOUT) is None


def test_latest_ledger_ignores_files_that_are_not_numbered_ledgers(store: MemoryStore) -> None:
    write_claimed(store, LAYOUT, _ledger(attempt=3))
    for name in ("notes.json", "000009.json.bak", "000009.txt", "x9.json"):
        store.put(LAYOUT.control_dir("_ledgers") + name, b"junk", metadata={})

    latest = latest_ledger(store, LAYOUT)

    assert latest is not None and latest.attempt == 3


def test_control_keys_with_non_ascii_digits_are_ignored_not_a_crash(store: MemoryStore) -> None:
    store.put(f"p/{RUN}/_attempts/\u00b2.json", b"{}", metadata={})  # '²'.isdigit() is True
    store.put(f"p/{RUN}/_ledgers/\u0663.json", b"{}", metadata={})  # an Arabic-Indic three

    assert attempt_numbers(store, LAYOUT) == []
    assert claim_attempt(store, LAYOUT, "first").number == 1
    assert latest_ledger(store, LAYOUT) is None
