"""gate.run_gate against a MemoryStore: the store's contents decide, never the scheduler."""

from __future__ import annotations

import json

import pytest

from s43_ray.codec import Codec
from s43_ray.config import StoreConfig
from s43_ray.driver import summarize
from s43_ray.errors import InputError, StoreUnreachable
from s43_ray.gate import Verdict, run_gate
from s43_ray.keys import RunLayout, member_names
from s43_ray.stores.base import ObjectInfo
from s43_ray.stores.memory import MemoryStore
from s43_ray.task import PredictionRef, TaskSpec, persist_member
from s43_ray.verify import Expectation

PREFIX = "p"
RUN = "manual__2026-11-28T10:00:00+00:00"
LAYOUT = RunLayout(PREFIX, RUN)
ROWS = 32


def _spec(codec: Codec = "npz", run_id: str = RUN) -> TaskSpec:
    return TaskSpec(store=StoreConfig(bucket="memory", prefix=PREFIX), run_id=run_id,
                    codec=codec, rows=ROWS, predictor="s43_ray.predict:default_predictor")


def _persist(store: MemoryStore, members: list[str], codec: Codec = "npz",
             run_id: str = RUN) -> dict[str, Expectation]:
    """Write each member as a task would; the gate's references, by member."""
    refs: dict[str, Expectation] = {}
    for m in members:
        ref = persist_member(store, _spec(codec, run_id), m)
        assert isinstance(ref, PredictionRef), ref
        refs[m] = Expectation(checksum=ref.checksum, bytes=ref.bytes)
    return refs


def _gate(store: MemoryStore, members: list[str], codec: Codec = "npz",
          **kwargs: object) -> Verdict:
    return run_gate(store, RunLayout(PREFIX, RUN), members=members, codec=codec,
                    **kwargs)  # type: ignore[arg-type]


def _rewrite(store: MemoryStore, key: str, body: bytes) -> None:
    """Replace an object's bytes, keeping its metadata (what silent corruption looks like)."""
    _, meta, ts = store.objects[key]
    store.objects[key] = (body, meta, ts)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.mark.parametrize("codec", ["npz", "arrow"])
@pytest.mark.parametrize("with_refs", [True, False], ids=["refs", "store-only"])
def test_gate_passes_when_the_cohort_is_complete(store: MemoryStore, codec: Codec,
                                                 with_refs: bool) -> None:
    members = member_names(5)
    refs = _persist(store, members, codec)

    verdict = _gate(store, members, codec, refs=refs if with_refs else None)

    assert verdict.passed
    assert verdict.status == "passed"
    assert (verdict.expected, verdict.cohort_count, verdict.shortfall) == (5, 5, 0)
    assert verdict.missing == [] and verdict.invalid == {} and verdict.unexpected == []
    assert [c.member for c in verdict.checks] == members
    assert all(c.status == "ok" and c.bytes == refs[c.member].bytes for c in verdict.checks)
    assert verdict.store == "memory://memory"
    assert verdict.listed_keys == 5


def test_gate_fails_when_one_member_missing(store: MemoryStore) -> None:
    members = member_names(4)
    refs = _persist(store, [m for m in members if m != "m00002"])

    verdict = _gate(store, members, refs=refs)

    assert not verdict.passed
    assert verdict.status == "failed"
    assert verdict.missing == ["m00002"]
    assert (verdict.expected, verdict.cohort_count, verdict.shortfall) == (4, 3, 1)
    check = {c.member: c for c in verdict.checks}["m00002"]
    assert check.status == "missing"
    assert check.error_class == "not_found"
    assert check.key == LAYOUT.member_key("m00002", "npz")


def test_gate_fails_when_every_member_is_missing(store: MemoryStore) -> None:
    verdict = _gate(store, member_names(3))

    assert not verdict.passed
    assert verdict.cohort_count == 0
    assert verdict.missing == member_names(3)


@pytest.mark.parametrize("foreign", ["notes.txt", "sub/x.npz", "_other.json", "m00099.npz",
                                     "x.npy"])
def test_gate_lists_foreign_keys_as_unexpected_and_does_not_count_them(
        store: MemoryStore, foreign: str) -> None:
    members = member_names(2)
    _persist(store, members)
    store.put(LAYOUT.run_prefix + foreign, b"not a member", metadata={})

    verdict = _gate(store, members)

    assert verdict.passed
    assert verdict.unexpected == [LAYOUT.run_prefix + foreign]
    assert verdict.cohort_count == 2
    assert verdict.listed_keys == 3


def test_gate_does_not_count_foreign_keys_towards_an_incomplete_cohort(
        store: MemoryStore) -> None:
    members = member_names(3)
    _persist(store, members[:2])
    store.put(LAYOUT.run_prefix + "sub/m00002.npz", b"nested", metadata={})

    verdict = _gate(store, members)

    assert not verdict.passed
    assert verdict.cohort_count == 2
    assert verdict.missing == ["m00002"]
    assert verdict.unexpected == [LAYOUT.run_prefix + "sub/m00002.npz"]


def test_gate_ignores_other_runs_sharing_the_prefix(store: MemoryStore) -> None:
    members = member_names(2)
    _persist(store, members)
    _persist(store, member_names(3), run_id=RUN + "x")

    verdict = _gate(store, members)

    assert verdict.passed
    assert verdict.unexpected == []
    assert verdict.listed_keys == 2


def test_gate_marks_a_member_written_in_the_other_codec_invalid(store: MemoryStore) -> None:
    members = member_names(3)
    refs = _persist(store, members[:2], "npz")
    refs.update(_persist(store, members[2:], "arrow"))

    verdict = _gate(store, members, "npz", refs=refs)

    assert not verdict.passed
    assert list(verdict.invalid) == ["m00002"]
    assert verdict.invalid["m00002"].startswith("codec:")
    assert "arrow" in verdict.invalid["m00002"]
    assert verdict.cohort_count == 2
    assert verdict.missing == []


@pytest.mark.parametrize("codec", ["npz", "arrow"])
@pytest.mark.parametrize("with_refs", [True, False], ids=["refs", "store-only"])
def test_gate_marks_a_member_with_a_flipped_byte_invalid(store: MemoryStore, codec: Codec,
                                                         with_refs: bool) -> None:
    members = member_names(3)
    refs = _persist(store, members, codec)
    key = LAYOUT.member_key("m00001", codec)
    body = bytearray(store.objects[key][0])
    body[len(body) // 2] ^= 0x01
    _rewrite(store, key, bytes(body))

    verdict = _gate(store, members, codec, refs=refs if with_refs else None)

    assert not verdict.passed
    assert list(verdict.invalid) == ["m00001"]
    assert verdict.invalid["m00001"].startswith("checksum:")
    assert verdict.cohort_count == 2


@pytest.mark.parametrize("with_refs", [True, False], ids=["refs", "store-only"])
def test_gate_marks_a_truncated_member_invalid(store: MemoryStore, with_refs: bool) -> None:
    members = member_names(2)
    refs = _persist(store, members)
    key = LAYOUT.member_key("m00000", "npz")
    _rewrite(store, key, store.objects[key][0][:-7])

    verdict = _gate(store, members, refs=refs if with_refs else None)

    assert not verdict.passed
    assert verdict.invalid["m00000"].startswith("truncated:")


@pytest.mark.parametrize("with_refs", [True, False], ids=["refs", "store-only"])
def test_gate_marks_an_empty_member_invalid(store: MemoryStore, with_refs: bool) -> None:
    members = member_names(2)
    refs = _persist(store, members)
    _rewrite(store, LAYOUT.member_key("m00001", "npz"), b"")

    verdict = _gate(store, members, refs=refs if with_refs else None)

    assert not verdict.passed
    assert verdict.invalid["m00001"].startswith("truncated:")


def test_gate_marks_a_member_whose_checksum_differs_from_its_reference_invalid(
        store: MemoryStore) -> None:
    members = member_names(2)
    refs = _persist(store, members)
    # The object in the store is whole and self-consistent, but not what the task reported:
    # another writer replaced it after the task returned its reference.
    refs["m00000"] = Expectation(checksum="crc64nvme:AAAAAAAAAAA=", bytes=refs["m00000"].bytes)

    verdict = _gate(store, members, refs=refs)

    assert not verdict.passed
    assert list(verdict.invalid) == ["m00000"]
    assert verdict.invalid["m00000"].startswith("checksum:")
    assert "crc64nvme:AAAAAAAAAAA=" in verdict.invalid["m00000"]


def test_gate_marks_an_object_without_s43_metadata_invalid(store: MemoryStore) -> None:
    members = member_names(2)
    _persist(store, members)
    key = LAYOUT.member_key("m00001", "npz")
    body, _, ts = store.objects[key]
    store.objects[key] = (body, {}, ts)

    verdict = _gate(store, members)

    assert not verdict.passed
    assert verdict.invalid["m00001"].startswith("codec:")


def test_gate_fails_when_expected_is_larger_than_the_member_list(store: MemoryStore) -> None:
    members = member_names(3)
    refs = _persist(store, members)

    verdict = _gate(store, members, refs=refs, expected=5)

    assert not verdict.passed
    assert (verdict.expected, verdict.cohort_count, verdict.shortfall) == (5, 3, 2)
    assert verdict.missing == [] and verdict.invalid == {}


@pytest.mark.parametrize("with_refs", [True, False], ids=["refs", "store-only"])
def test_gate_in_head_mode_passes_for_good_objects(store: MemoryStore, with_refs: bool) -> None:
    members = member_names(3)
    refs = _persist(store, members, "arrow")

    verdict = _gate(store, members, "arrow", refs=refs if with_refs else None, mode="head")

    assert verdict.passed
    assert verdict.verify == "head"
    assert verdict.cohort_count == 3


def test_gate_in_head_mode_still_reports_missing_and_other_codec(store: MemoryStore) -> None:
    members = member_names(3)
    _persist(store, members[:1], "npz")
    _persist(store, members[1:2], "arrow")

    verdict = _gate(store, members, "npz", mode="head")

    assert not verdict.passed
    assert verdict.missing == ["m00002"]
    assert verdict.invalid["m00001"].startswith("codec:")


def test_gate_in_head_mode_marks_a_truncated_member_invalid(store: MemoryStore) -> None:
    members = member_names(2)
    refs = _persist(store, members)
    key = LAYOUT.member_key("m00000", "npz")
    _rewrite(store, key, store.objects[key][0][:-7])

    verdict = _gate(store, members, refs=refs, mode="head")

    assert not verdict.passed
    assert verdict.invalid["m00000"].startswith("truncated:")


def test_gate_neither_counts_nor_flags_control_objects(store: MemoryStore) -> None:
    members = member_names(2)
    _persist(store, members)
    store.put(LAYOUT.gate_key, b"{}", metadata={})
    store.put(LAYOUT.manifest_key, b"{}", metadata={})

    verdict = _gate(store, members)

    assert verdict.passed
    assert verdict.cohort_count == 2
    assert verdict.unexpected == []
    assert verdict.listed_keys == 4


def test_gate_with_an_empty_prefix_reads_the_bucket_root(store: MemoryStore) -> None:
    spec = TaskSpec(store=StoreConfig(bucket="memory", prefix=""), run_id=RUN, codec="npz",
                    rows=ROWS, predictor="s43_ray.predict:default_predictor")
    for m in member_names(2):
        persist_member(store, spec, m)

    verdict = run_gate(store, RunLayout("", RUN), members=member_names(2), codec="npz")

    assert verdict.passed
    assert f"{RUN}/m00000.npz" in store.objects


def test_verdict_json_carries_what_an_operator_needs(store: MemoryStore) -> None:
    members = member_names(3)
    _persist(store, members[:2])
    store.put(LAYOUT.run_prefix + "notes.txt", b"x", metadata={})

    verdict = _gate(store, members, node_id="node-1")
    record = json.loads(verdict.to_json())

    assert record["expected"] == 3
    assert record["cohort_count"] == 2
    assert record["missing"] == ["m00002"]
    assert record["invalid"] == {}
    assert record["unexpected"] == [LAYOUT.run_prefix + "notes.txt"]
    assert record["shortfall"] == 1
    assert record["status"] == "failed"
    assert record["run_id"] == RUN
    assert record["node_id"] == "node-1"
    assert isinstance(record["version"], str) and record["version"]
    assert record["started_at"].endswith("Z") and record["finished_at"].endswith("Z")
    assert [c["member"] for c in record["checks"]] == members


@pytest.mark.parametrize("persisted", [0, 2, 3], ids=["no-object", "partial", "complete"])
def test_verdict_json_is_written_one_check_at_a_time_yet_byte_for_byte_the_record(
        store: MemoryStore, persisted: int) -> None:
    members = member_names(3)
    _persist(store, members[:persisted])
    store.put(LAYOUT.run_prefix + "n\u00f6tes \"1\"\n.txt", b"x", metadata={})

    verdict = _gate(store, members, node_id="n\u00f8de")

    assert verdict.to_json() == json.dumps(verdict.to_record(), indent=1,
                                           sort_keys=True).encode()


def test_verdict_json_of_a_verdict_without_checks_is_the_record() -> None:
    verdict = Verdict(run_id=RUN, store="memory://", codec="npz", expected=2, cohort_count=0,
                      status="failed", reason="r", missing=[], invalid={}, unexpected=[])

    assert verdict.to_json() == json.dumps(verdict.to_record(), indent=1,
                                           sort_keys=True).encode()


def test_gate_reports_a_stray_other_format_object_of_a_present_member_as_unexpected(
        store: MemoryStore) -> None:
    members = member_names(2)
    _persist(store, members, codec="arrow")
    _persist(store, members[:1], codec="npz")  # a leftover in the other format

    verdict = _gate(store, members, codec="arrow")

    assert verdict.passed
    assert verdict.unexpected == [LAYOUT.member_key("m00000", "npz")]


def test_gate_marks_a_member_the_store_refuses_to_serve_invalid_with_the_store_class(
        store: MemoryStore) -> None:
    members = member_names(3)
    refs = _persist(store, members)
    down = LAYOUT.member_key("m00001", "npz")

    class FlakyStore(MemoryStore):
        def get(self, key: str, *, size_hint: int | None = None
                ) -> tuple[memoryview, ObjectInfo]:
            if key == down:
                raise StoreUnreachable(f"GET {key}: unreachable (ReadTimeoutError)")
            return super().get(key, size_hint=size_hint)

    flaky = FlakyStore()
    flaky.objects = store.objects

    verdict = _gate(flaky, members, refs=refs)

    assert not verdict.passed and verdict.cohort_count == 2
    assert verdict.invalid == {"m00001": f"unreachable: GET {down}: unreachable "
                                          "(ReadTimeoutError)"}
    summary = summarize(verdict, command="gate", store_cfg=StoreConfig(bucket="memory"),
                        gate_key=LAYOUT.gate_key, gate_persisted=True, wall=0.0)
    assert summary.infra_errors == 1
    assert summary.exit_code == 3  # the store failed, not the cohort


def test_gate_reason_names_missing_members_and_a_count_mismatch(store: MemoryStore) -> None:
    members = member_names(3)
    _persist(store, members[:2])

    verdict = _gate(store, members, expected=4)

    assert verdict.reason == (f"run {RUN!r}: 1 of 4 members missing: ['m00002']; "
                              "the cohort has 3 members but 4 are expected")


def test_gate_refuses_a_member_list_with_duplicates(store: MemoryStore) -> None:
    with pytest.raises(InputError, match="twice"):
        _gate(store, ["m00000", "m00000"])
