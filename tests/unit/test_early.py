"""Members verified as their references arrive (s43_ray.early), and the gate reusing a check
only while the listed object is the one checked."""

from __future__ import annotations

import pytest
from test_gate_ledger import LAYOUT, MEMBERS, RUN, _key, _run

import s43_ray.early as early_mod
from s43_ray.early import EarlyChecks, Seen
from s43_ray.gate import gate_from_store
from s43_ray.stores.base import ObjectInfo
from s43_ray.stores.memory import MemoryStore
from s43_ray.task import PredictionRef


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.gets: list[str] = []

    def get(self, key: str, *, size_hint: int | None = None) -> tuple[memoryview, ObjectInfo]:
        self.gets.append(key)
        return super().get(key, size_hint=size_hint)


@pytest.fixture(autouse=True)
def _settled_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks run as soon as submitted here; the settling delay has tests of its own."""
    monkeypatch.setattr(early_mod, "SETTLE_S", 0.0)


def _early(store: MemoryStore, refs: dict[str, PredictionRef]) -> dict[str, Seen]:
    early = EarlyChecks(store, LAYOUT, "npz", "full", 1, "", concurrency=2)
    for ref in refs.values():
        early.submit(ref)
    return early.results(10.0)


def test_every_member_checked_early_is_not_downloaded_again() -> None:
    store = CountingStore()
    refs = _run(store)
    seen = _early(store, refs)
    assert sorted(seen) == MEMBERS
    assert len([k for k in store.gets if k.endswith(".npz")]) == len(MEMBERS)
    store.gets.clear()

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz", attempt=1,
                              seen=seen)

    assert verdict.passed and verdict.cohort_count == len(MEMBERS)
    assert [k for k in store.gets if k.endswith(".npz")] == []
    assert {c.etag for c in verdict.checks} == {s.etag for s in seen.values()}


def test_an_object_rewritten_after_its_early_check_is_verified_again() -> None:
    store = CountingStore()
    refs = _run(store)
    seen = _early(store, refs)
    body, meta, _ = store.objects[_key(MEMBERS[1])]
    flipped = bytearray(body)
    flipped[len(flipped) // 2] ^= 0xFF
    store.put(_key(MEMBERS[1]), bytes(flipped), metadata=meta)
    store.gets.clear()

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz", attempt=1,
                              seen=seen)

    assert not verdict.passed and list(verdict.invalid) == [MEMBERS[1]]
    assert [k for k in store.gets if k.endswith(".npz")] == [_key(MEMBERS[1])]


def test_an_early_check_is_used_only_against_the_ledger_it_agrees_with() -> None:
    store = MemoryStore()
    refs = _run(store)
    seen = _early(store, refs)
    forged = {m: Seen(s.key, s.etag, s.size, s.modified_s, "crc64nvme:AAAAAAAAAAA=",
                      s.attempt, s.schema, s.downloaded, s.read_seconds)
              for m, s in seen.items()}
    deleted = _key(MEMBERS[2])
    store.delete(deleted)

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz", attempt=1,
                              seen=forged)

    # The forged checksums disagree with the ledger: every member verified for real.
    assert verdict.missing == [MEMBERS[2]] and verdict.cohort_count == 2


def test_a_store_that_fails_leaves_nothing_early_and_the_gate_verifies() -> None:
    class Failing(MemoryStore):
        def get(self, key: str, *, size_hint: int | None = None
                ) -> tuple[memoryview, ObjectInfo]:
            if key.endswith(".npz"):
                raise OSError("connection reset")
            return super().get(key, size_hint=size_hint)

    store = Failing()
    refs = _run(store)

    assert _early(store, refs) == {}


@pytest.mark.parametrize("mode", ["full", "head"])
def test_early_checks_are_verified_like_the_gate_would(mode: str) -> None:
    store = MemoryStore()
    refs = _run(store)
    body, meta, _ = store.objects[_key(MEMBERS[0])]
    store.put(_key(MEMBERS[0]), body, metadata={**meta, "s43-run": "another-run"})
    early = EarlyChecks(store, LAYOUT, "npz", mode, 1, "", concurrency=2)  # type: ignore[arg-type]
    for ref in refs.values():
        early.submit(ref)

    assert sorted(early.results(10.0)) == MEMBERS[1:]  # the wrong run's object: not early
    assert RUN  # the run the objects must be bound to


def test_members_larger_than_the_early_limit_are_left_to_the_gate(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver holds references, not payloads: a large member is verified by the gate."""
    store = CountingStore()
    refs = _run(store)
    store.gets.clear()
    big = MEMBERS[0]
    monkeypatch.setattr(early_mod, "EARLY_MAX_BYTES", refs[big].bytes - 1)
    seen = _early(store, {big: refs[big]})
    assert seen == {} and store.gets == []

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz", attempt=1,
                              seen=seen)
    assert verdict.passed
    assert any(k.endswith(f"{big}.npz") for k in store.gets)


def test_a_member_is_checked_only_once_its_write_is_a_second_old(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Modification times are whole seconds: a check in the second of the write could be
    followed, in that same second, by byte-identical content with another binding (a late task
    of an older attempt), which the gate's listing cannot tell apart. Such a member is left to
    the gate, which reads its metadata as it is then."""
    monkeypatch.setattr(early_mod, "SETTLE_S", 30.0)
    store = CountingStore()
    refs = _run(store)
    store.gets.clear()
    early = EarlyChecks(store, LAYOUT, "npz", "full", 1, "", concurrency=2)
    for ref in refs.values():
        early.submit(ref)
    assert early.results(10.0) == {}  # not due: returned at once, nothing read
    assert store.gets == []
    # The swap: the same bytes, bound to another attempt, in the same second.
    key = refs[MEMBERS[0]].key
    body, info = store.get(key)
    store.put(key, bytes(body), metadata={**info.metadata, "s43-attempt": "2"})
    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz", attempt=1, seen={})
    assert not verdict.passed
    assert [c.member for c in verdict.checks if c.status != "ok"] == [MEMBERS[0]]


def test_a_due_member_is_checked_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(early_mod, "SETTLE_S", 0.3)
    store = CountingStore()
    refs = _run(store)
    early = EarlyChecks(store, LAYOUT, "npz", "full", 1, "", concurrency=2)
    for ref in refs.values():
        early.submit(ref)
    import time

    time.sleep(0.6)
    assert sorted(early.results(10.0)) == MEMBERS
