"""fence.put_member: a member write that no other attempt's late write can undo.

The ghost it guards against, as the namespaced smoke met it: a worker cut off from the store
mid-PUT, its task cancelled, whose kernel delivered the request when the link came back, after
``--resume`` had written the member again. Every test here runs the real write path
(:func:`s43_ray.task.persist_member`) or the fence itself against a :class:`MemoryStore`, whose
conditions behave as S3's do.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from s43_ray.binding import META_ATTEMPT
from s43_ray.config import StoreConfig
from s43_ray.errors import PreconditionFailed
from s43_ray.fence import FENCE_ROUNDS, put_member
from s43_ray.gate import run_gate
from s43_ray.keys import RunLayout
from s43_ray.stores.memory import MemoryStore
from s43_ray.task import PersistFailure, PredictionRef, TaskSpec, persist_member
from s43_ray.verify import Expectation

RUN = "manual__2026-12-01T10:00:00+00:00"
LAYOUT = RunLayout("p", RUN)
KEY = LAYOUT.member_key("m00001", "arrow")


def _spec(attempt: int, predictor: str = "s43_ray.predict:default_predictor") -> TaskSpec:
    return TaskSpec(store=StoreConfig(bucket="memory", prefix="p"), run_id=RUN, codec="arrow",
                    rows=16, predictor=predictor, attempt=attempt)


def _persist(store: MemoryStore, attempt: int, member: str = "m00001") -> PredictionRef:
    ref = persist_member(store, _spec(attempt), member)
    assert isinstance(ref, PredictionRef), ref
    return ref


def _attempt_in_store(store: MemoryStore, key: str = KEY) -> str:
    return store.objects[key][1][META_ATTEMPT]


class _Replaying(MemoryStore):
    """Records every PUT so a test can deliver one again later, as a late kernel would."""

    def __init__(self) -> None:
        super().__init__()
        self.puts: list[tuple[str, bytes, dict[str, Any]]] = []

    def put(self, key: str, body: bytes | memoryview, **kw: Any) -> str | None:
        self.puts.append((key, bytes(body), kw))
        return super().put(key, body, **kw)

    def replay(self, index: int) -> str | None:
        key, body, kw = self.puts[index]
        return MemoryStore.put(self, key, body, **kw)


def test_a_late_delivery_of_attempt_1_cannot_replace_what_the_resume_wrote() -> None:
    store = _Replaying()
    _persist(store, attempt=1)
    del store.objects[KEY]  # as if attempt 1's PUT never arrived: the resume finds it missing
    _persist(store, attempt=2)

    with pytest.raises(PreconditionFailed, match="If-None-Match"):
        store.replay(0)  # attempt 1's request, delivered when the link came back

    assert _attempt_in_store(store) == "2"


def _claim(store: MemoryStore, attempt: int) -> None:
    """The record ``claim_attempt`` leaves (its content does not matter to the fence)."""
    store.put(LAYOUT.attempt_key(attempt), b"{}", metadata={}, if_none_match=True)


@pytest.mark.parametrize("written_by", [1, 2])
def test_a_stale_attempt_writes_nothing_once_a_later_one_is_claimed(written_by: int) -> None:
    """Whoever wrote the object (the later attempt, or the stale one's own earlier task), an
    attempt that finds the key taken after attempt N+1 was claimed stops."""
    store = MemoryStore()
    _persist(store, attempt=written_by)
    _claim(store, 2)
    before = store.objects[KEY]

    out = persist_member(store, _spec(1), "m00001")

    assert isinstance(out, PersistFailure)
    assert out.error_class == "superseded"
    assert out.message == (
        f"member 'm00001' of run {RUN!r}: attempt 2 of the run has been claimed and {KEY} holds "
        f"an object (of attempt {written_by}); this write of attempt 1 is stale, nothing written")
    assert store.objects[KEY] is before


def test_an_object_naming_a_later_attempt_nobody_claimed_is_replaced() -> None:
    """A leftover of an earlier use of the run id, or a garbage s43-attempt: it cannot block
    the member (the gate would fail it; the run's own attempts decide who is stale)."""
    store = MemoryStore()
    _persist(store, attempt=7)

    ref = _persist(store, attempt=1)

    assert ref.run_attempt == 1 and _attempt_in_store(store) == "1"


def test_an_earlier_attempts_object_is_replaced_by_the_resume() -> None:
    store = MemoryStore()
    _persist(store, attempt=1)  # landed late, after the resume planned to write it again

    ref = _persist(store, attempt=2)

    assert ref.run_attempt == 2 and _attempt_in_store(store) == "2"


def test_this_attempts_own_write_landed_earlier_is_written_again() -> None:
    """An answer lost and the PUT retried (or Ray re-running the task): the retry's create is
    refused because its first try landed; it replaces it (If-Match), whatever metadata the
    object there claims, so a planted object with this write's metadata cannot stay."""
    store = MemoryStore()
    first = _persist(store, attempt=1)
    body, meta, ts = store.objects[KEY]
    store.objects[KEY] = (b"planted", meta, ts)

    again = _persist(store, attempt=1)

    assert again.checksum == first.checksum
    assert store.objects[KEY][0] == body


def test_other_bytes_from_the_same_attempt_replace_the_object() -> None:
    store = MemoryStore()
    _persist(store, attempt=1)
    body, meta, ts = store.objects[KEY]
    store.objects[KEY] = (body[:-1] + bytes([body[-1] ^ 1]), {**meta, "s43-checksum": "x"}, ts)

    ref = _persist(store, attempt=1)

    assert store.objects[KEY][1]["s43-checksum"] == ref.checksum


@pytest.mark.parametrize("meta", [{}, {"s43-run": "another-run", "s43-member": "m00001",
                                       "s43-attempt": "9"}])
def test_a_foreign_object_under_the_key_is_replaced(meta: dict[str, str]) -> None:
    store = MemoryStore()
    store.put(KEY, b"not ours", metadata=meta)

    ref = _persist(store, attempt=1)

    assert store.objects[KEY][1]["s43-checksum"] == ref.checksum


def test_a_key_deleted_between_the_refusal_and_the_head_is_created_again() -> None:
    class Vanishing(MemoryStore):
        def head(self, key: str) -> Any:
            self.objects.pop(key, None)
            return super().head(key)

    store = Vanishing()
    store.put(KEY, b"old", metadata={})

    ref = _persist(store, attempt=1)

    assert store.objects[KEY][1]["s43-checksum"] == ref.checksum


def test_a_key_that_keeps_changing_is_given_up_after_a_bounded_number_of_rounds() -> None:
    class Contended(MemoryStore):
        heads = 0

        def head(self, key: str) -> Any:
            info = super().head(key)
            if key == KEY:
                self.heads += 1
                MemoryStore.put(self, key, b"someone else, again", metadata={})
            return info

    store = Contended()
    store.put(KEY, b"someone else", metadata={})

    with pytest.raises(PreconditionFailed, match=f"{FENCE_ROUNDS} conditional writes"):
        put_member(store, LAYOUT, "m00001", KEY, b"ours", metadata={}, s3_checksum=None,
                   attempt=1)
    assert store.heads == FENCE_ROUNDS


def test_a_store_that_gives_no_etag_is_not_overwritten_blindly() -> None:
    class NoEtag(MemoryStore):
        def head(self, key: str) -> Any:
            return replace(super().head(key), etag=None)

    store = NoEtag()
    store.put(KEY, b"someone else", metadata={})

    with pytest.raises(PreconditionFailed, match="no ETag"):
        put_member(store, LAYOUT, "m00001", KEY, b"ours", metadata={}, s3_checksum=None,
                   attempt=1)
    assert store.objects[KEY][0] == b"someone else"


def test_the_gate_passes_a_resumed_run_that_a_late_write_of_attempt_1_reached() -> None:
    """End to end in one process: attempt 1 loses m00002 to a cut, the resume writes it, then
    attempt 1's request arrives; the gate still sees attempt 2's object, as its ledger says."""
    store = _Replaying()
    layout = RunLayout("p", RUN)
    members = ("m00001", "m00002")
    first = [_persist(store, attempt=1, member=m) for m in members]
    del store.objects[layout.member_key("m00002", "arrow")]
    second = _persist(store, attempt=2, member="m00002")
    ledger = {r.member: Expectation(r.checksum, r.bytes, r.schema, r.run_attempt)
              for r in (first[0], second)}

    with pytest.raises(PreconditionFailed):
        store.replay(1)

    check = run_gate(store, layout, members=members, codec="arrow", mode="full", refs=ledger)
    assert check.passed, [c for c in check.checks if c.status != "ok"]
