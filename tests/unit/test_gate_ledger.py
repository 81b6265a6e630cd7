"""gate_from_store with a run record and a ledger: the store is verified against the ledger."""

from __future__ import annotations

import json

import pytest
from helpers import write_claimed

from s43_ray import codec as codecs
from s43_ray.codec import Codec
from s43_ray.config import StoreConfig
from s43_ray.errors import InputError
from s43_ray.gate import gate_from_store
from s43_ray.keys import RunLayout, member_names
from s43_ray.ledger import Ledger, LedgerEntry
from s43_ray.manifest import RunManifest, claim_run
from s43_ray.predict import DEFAULT_PREDICTOR, declared_schema, default_predictor
from s43_ray.stores.base import ObjectInfo
from s43_ray.stores.memory import MemoryStore
from s43_ray.task import PredictionRef, TaskSpec, persist_member
from s43_ray.verify import VerifyMode

PREFIX = "p"

RUN = "manual__2026-11-28T10:00:00+00:00"
OTHER_RUN = "manual__2026-11-29T10:00:00+00:00"
LAYOUT = RunLayout(PREFIX, RUN)
ROWS = 32
MEMBERS = member_names(3)
MODES: list[VerifyMode] = ["full", "head"]


def _record(run_id: str = RUN, codec: Codec = "npz") -> RunManifest:
    return RunManifest.new(run_id, tuple(MEMBERS), codec, ROWS, DEFAULT_PREDICTOR,
                           declared_schema(default_predictor, ROWS))


def _persist(store: MemoryStore, members: list[str], *, attempt: int = 1,
             run_id: str = RUN, codec: Codec = "npz") -> dict[str, PredictionRef]:
    """Write each member as attempt ``attempt``'s tasks would; their references."""
    spec = TaskSpec(store=StoreConfig(bucket="memory", prefix=PREFIX), run_id=run_id,
                    codec=codec, rows=ROWS, predictor=DEFAULT_PREDICTOR, attempt=attempt,
                    schema=_record(run_id, codec).schema_digest)
    refs = {}
    for m in members:
        ref = persist_member(store, spec, m)
        assert isinstance(ref, PredictionRef), ref
        refs[m] = ref
    return refs


def _ledger(refs: dict[str, PredictionRef], attempt: int = 1, codec: Codec = "npz",
            failed: dict[str, str] | None = None) -> Ledger:
    return Ledger(RUN, attempt, codec,
                  {m: LedgerEntry(r.key, r.checksum, r.bytes, r.schema, r.run_attempt)
                   for m, r in refs.items()}, failed=failed or {})


def _run(store: MemoryStore, members: list[str] = MEMBERS, *, codec: Codec = "npz",
         failed: dict[str, str] | None = None) -> dict[str, PredictionRef]:
    """A whole attempt 1: record claimed, members written, ledger of those written."""
    claim_run(store, LAYOUT, _record(codec=codec))
    refs = _persist(store, members, codec=codec)
    write_claimed(store, LAYOUT, _ledger(refs, codec=codec, failed=failed))
    return refs


def _key(member: str, codec: Codec = "npz") -> str:
    return LAYOUT.member_key(member, codec)


class StoreKeepingChecksums(MemoryStore):
    """A store that, like S3 with CRC64NVME, reports its own checksum of the bytes it holds."""

    def head(self, key: str) -> ObjectInfo:
        info = super().head(key)
        crc = codecs.checksum(self.objects[key][0]).split(":", 1)[1]
        return ObjectInfo(info.key, info.size, info.metadata, info.last_modified,
                          s3_checksum=crc, etag=info.etag)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("codec", ["npz", "arrow"])
def test_gate_passes_a_complete_cohort_against_its_ledger(store: MemoryStore, codec: Codec,
                                                          mode: VerifyMode) -> None:
    refs = _run(store, codec=codec)

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec=codec, mode=mode)

    assert verdict.passed, verdict.reason
    assert verdict.basis == "ledger" and verdict.attempt == 1
    assert (verdict.expected, verdict.cohort_count, verdict.shortfall) == (3, 3, 0)
    assert verdict.schema_digest == _record().schema_digest
    assert [c.checksum for c in verdict.checks] == [refs[m].checksum for m in MEMBERS]
    assert all(c.attempt == 1 and c.schema == verdict.schema_digest for c in verdict.checks)
    assert verdict.unexpected == []  # _run.json, _ledgers/ are control objects


def test_gate_passes_on_the_store_checksum_in_head_mode_without_downloading() -> None:
    store = StoreKeepingChecksums()
    _run(store)

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz", mode="head")

    assert verdict.passed, verdict.reason
    assert not any(c.downloaded for c in verdict.checks)


def test_gate_passes_a_resumed_run_whose_ledger_reuses_an_older_attempts_object(
        store: MemoryStore) -> None:
    claim_run(store, LAYOUT, _record())
    old = _persist(store, MEMBERS[:1], attempt=1)
    new = _persist(store, MEMBERS[1:], attempt=2)
    write_claimed(store, LAYOUT, _ledger({**old, **new}, attempt=2))

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz")

    assert verdict.passed, verdict.reason
    assert verdict.attempt == 2
    assert [c.attempt for c in verdict.checks] == [1, 2, 2]


def test_gate_marks_a_present_member_its_ledger_does_not_list_not_in_ledger(
        store: MemoryStore) -> None:
    _run(store, MEMBERS[:2])
    _persist(store, MEMBERS[2:])  # written, but not by the attempt whose ledger is read

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz")

    assert not verdict.passed
    assert list(verdict.invalid) == ["m00002"]
    assert verdict.invalid["m00002"].startswith("not_in_ledger:")
    assert "attempt 1's ledger does not list it" in verdict.invalid["m00002"]
    assert "written by another attempt or driver" in verdict.invalid["m00002"]
    assert (verdict.cohort_count, verdict.shortfall) == (2, 1)
    assert verdict.missing == []


def test_not_in_ledger_names_why_the_members_task_failed(store: MemoryStore) -> None:
    # The task's PUT landed but its answer was lost: the driver recorded a failure.
    _run(store, MEMBERS[:2], failed={"m00002": "unreachable: PUT timed out after 5 attempts"})
    _persist(store, MEMBERS[2:])

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz")

    check = {c.member: c for c in verdict.checks}["m00002"]
    assert check.status == "invalid" and check.error_class == "not_in_ledger"
    assert "its task failed: unreachable: PUT timed out after 5 attempts" in check.detail


def test_a_member_neither_in_the_ledger_nor_in_the_store_is_missing(store: MemoryStore) -> None:
    _run(store, MEMBERS[:2], failed={"m00002": "predictor: boom"})

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz")

    assert verdict.missing == ["m00002"] and verdict.invalid == {}


@pytest.mark.parametrize("mode", MODES)
def test_gate_marks_an_object_copied_onto_another_members_key_wrong_member(
        store: MemoryStore, mode: VerifyMode) -> None:
    _run(store)
    store.objects[_key("m00000")] = store.objects[_key("m00001")]

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz", mode=mode)

    assert not verdict.passed
    assert list(verdict.invalid) == ["m00000"]
    assert verdict.invalid["m00000"].startswith("wrong_member:")
    assert "'m00001'" in verdict.invalid["m00000"]
    assert verdict.cohort_count == 2


@pytest.mark.parametrize("mode", MODES)
def test_gate_marks_two_swapped_members_wrong_member(store: MemoryStore,
                                                     mode: VerifyMode) -> None:
    _run(store)
    a, b = store.objects[_key("m00000")], store.objects[_key("m00002")]
    store.objects[_key("m00000")], store.objects[_key("m00002")] = b, a

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz", mode=mode)

    assert sorted(verdict.invalid) == ["m00000", "m00002"]
    assert all(v.startswith("wrong_member:") for v in verdict.invalid.values())


@pytest.mark.parametrize("mode", MODES)
def test_gate_marks_an_object_left_from_another_run_wrong_run(store: MemoryStore,
                                                              mode: VerifyMode) -> None:
    _run(store)
    theirs = _persist(store, ["m00001"], run_id=OTHER_RUN)["m00001"]
    store.objects[_key("m00001")] = store.objects[theirs.key]

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz", mode=mode)

    assert list(verdict.invalid) == ["m00001"]
    assert verdict.invalid["m00001"].startswith("wrong_run:")
    assert repr(OTHER_RUN) in verdict.invalid["m00001"]


@pytest.mark.parametrize("mode", MODES)
def test_gate_marks_an_object_rewritten_by_a_later_attempt_wrong_attempt(
        store: MemoryStore, mode: VerifyMode) -> None:
    refs = _run(store)
    again = _persist(store, ["m00001"], attempt=2)["m00001"]
    assert again.checksum == refs["m00001"].checksum  # same bytes: only the binding tells

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz", mode=mode)

    assert list(verdict.invalid) == ["m00001"]
    assert verdict.invalid["m00001"].startswith("wrong_attempt:")
    assert "attempt '2'" in verdict.invalid["m00001"]
    assert "recorded attempt 1" in verdict.invalid["m00001"]


@pytest.mark.parametrize("store_checksums", [False, True], ids=["downloaded", "store-crc"])
@pytest.mark.parametrize("mode", MODES)
def test_gate_marks_substituted_content_with_forged_metadata_checksum(
        mode: VerifyMode, store_checksums: bool) -> None:
    store = StoreKeepingChecksums() if store_checksums else MemoryStore()
    _run(store)
    # Other valid bytes of the same size, under metadata that matches the ledger in every field.
    body_0, meta_0, ts = store.objects[_key("m00000")]
    body_1 = store.objects[_key("m00001")][0]
    assert len(body_1) == len(body_0) and body_1 != body_0
    store.objects[_key("m00000")] = (body_1, dict(meta_0), ts)

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz", mode=mode)

    assert not verdict.passed
    assert list(verdict.invalid) == ["m00000"]
    assert verdict.invalid["m00000"].startswith("checksum:")


def test_gate_marks_an_object_whose_metadata_checksum_is_not_the_ledgers_checksum(
        store: MemoryStore) -> None:
    _run(store)
    body, meta, ts = store.objects[_key("m00002")]
    store.objects[_key("m00002")] = (body, {**meta, "s43-checksum": "crc64nvme:AAAAAAAAAAA="}, ts)

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz")

    assert verdict.invalid["m00002"].startswith("checksum:")
    assert "crc64nvme:AAAAAAAAAAA=" in verdict.invalid["m00002"]


def test_gate_of_a_run_with_a_record_but_no_ledger_cannot_pass(store: MemoryStore) -> None:
    claim_run(store, LAYOUT, _record())
    _persist(store, MEMBERS)

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz")

    assert verdict.status == "failed" and not verdict.passed
    assert verdict.basis == "no_ledger"
    assert (verdict.cohort_count, verdict.shortfall) == (3, 0)
    assert verdict.missing == [] and verdict.invalid == {}
    assert "has no ledger" in verdict.reason and "--resume" in verdict.reason
    assert json.loads(verdict.to_json())["shortfall"] == 0


def test_gate_of_a_run_with_neither_record_nor_ledger_checks_object_metadata(
        store: MemoryStore) -> None:
    _persist(store, MEMBERS)

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz")

    assert verdict.passed, verdict.reason
    assert verdict.basis == "metadata"
    assert verdict.attempt is None and verdict.schema_digest == ""


def test_gate_on_metadata_still_refuses_an_object_copied_onto_another_key(
        store: MemoryStore) -> None:
    _persist(store, MEMBERS)
    store.objects[_key("m00000")] = store.objects[_key("m00001")]

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz")

    assert verdict.basis == "metadata"
    assert verdict.invalid["m00000"].startswith("wrong_member:")


def test_shortfall_is_never_negative_when_more_members_are_present_than_expected(
        store: MemoryStore) -> None:
    _run(store)

    verdict = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz", expected=2)

    assert verdict.cohort_count == 3 and verdict.expected == 2
    assert verdict.shortfall == 0
    assert json.loads(verdict.to_json())["shortfall"] == 0
    assert not verdict.passed  # 3 is not the 2 expected


def test_gate_verifies_against_the_ledger_of_the_attempt_asked_for(store: MemoryStore) -> None:
    refs = _run(store)
    write_claimed(store, LAYOUT, _ledger({m: refs[m] for m in MEMBERS[:2]}, attempt=2))

    latest = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz")
    first = gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz", attempt=1)

    assert latest.attempt == 2 and latest.invalid["m00002"].startswith("not_in_ledger:")
    assert first.attempt == 1 and first.passed


def test_gate_refuses_a_format_other_than_the_ledgers(store: MemoryStore) -> None:
    _run(store, codec="arrow")

    with pytest.raises(InputError, match="records format arrow"):
        gate_from_store(store, LAYOUT, members=MEMBERS, codec="npz")
