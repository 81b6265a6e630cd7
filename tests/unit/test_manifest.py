"""manifest: ``_run.json`` round trips and refuses to mix two cohorts under one run id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from s43_ray.errors import CodecMismatch, InputError, NoConditionalWrites
from s43_ray.keys import RunLayout, member_names
from s43_ray.manifest import RunManifest, check_run, claim_run, read_manifest
from s43_ray.stores.base import ObjectInfo
from s43_ray.stores.memory import MemoryStore

RUN = "manual__2026-11-28T10:00:00+00:00"
LAYOUT = RunLayout("p", RUN)
PREDICTOR = "s43_ray.predict:default_predictor"


def _manifest(members: int = 3, codec: str = "npz", rows: int = 100,
              predictor: str = PREDICTOR) -> RunManifest:
    return RunManifest.new(RUN, tuple(member_names(members)), codec,  # type: ignore[arg-type]
                           rows, predictor)


def test_manifest_json_round_trip_is_equal() -> None:
    manifest = _manifest()

    restored = RunManifest.from_json(manifest.to_json())

    assert restored == manifest
    assert restored.members == ("m00000", "m00001", "m00002")
    assert restored.created_at.endswith("Z")


def test_manifest_json_is_readable_json_with_a_member_list() -> None:
    record = json.loads(_manifest().to_json())

    assert record["members"] == ["m00000", "m00001", "m00002"]
    assert record["codec"] == "npz"
    assert record["manifest_version"] == 2


def test_differences_is_empty_for_the_same_cohort_created_later() -> None:
    assert _manifest().differences(_manifest()) == []


def test_differences_names_members_codec_rows_and_predictor() -> None:
    old = _manifest(members=3)
    new = _manifest(members=4, codec="arrow", rows=10, predictor="mymodel:predict")

    diff = old.differences(new)

    assert len(diff) == 4
    assert diff[0].startswith("members (3 -> 4;")
    assert "added ['m00003']" in diff[0]
    assert "codec ('npz' -> 'arrow')" in diff
    assert "rows (100 -> 10)" in diff
    assert "predictor ('s43_ray.predict:default_predictor' -> 'mymodel:predict')" in diff


def test_claim_run_writes_the_manifest_once() -> None:
    store = MemoryStore()
    manifest = _manifest()

    claimed = claim_run(store, LAYOUT, manifest)

    assert claimed.record == manifest and claimed.created
    assert read_manifest(store, LAYOUT) == manifest
    assert list(store.objects) == [LAYOUT.manifest_key]


def test_claim_run_accepts_the_same_cohort_again_and_keeps_the_first() -> None:
    store = MemoryStore()
    first = _manifest()
    claim_run(store, LAYOUT, first)
    body_before = store.objects[LAYOUT.manifest_key][0]

    again = claim_run(store, LAYOUT, _manifest())

    assert again.record == first and not again.created
    assert store.objects[LAYOUT.manifest_key][0] == body_before


def test_claim_run_refuses_a_different_cohort_naming_what_differs() -> None:
    store = MemoryStore()
    first = _manifest(members=3)
    claim_run(store, LAYOUT, first)

    with pytest.raises(InputError) as info:
        claim_run(store, LAYOUT, _manifest(members=3, codec="arrow"))

    message = str(info.value)
    assert repr(RUN) in message
    assert f"held by {first.holder}" in message
    assert "codec ('npz' -> 'arrow')" in message
    assert "expected the same cohort or a new --run-id" in message
    assert info.value.exit_code == 2
    assert read_manifest(store, LAYOUT) == first


def test_read_manifest_of_a_new_run_is_none() -> None:
    assert read_manifest(MemoryStore(), LAYOUT) is None


@pytest.mark.parametrize("body", [
    b"",
    b"not json",
    b"\xff\xfe",
    b"[]",
    b"null",
    b'"text"',
    b"{}",
    b'{"run_id": "r", "members": ["m1"], "codec": "parquet", "rows": 1, "predictor": "m:f"}',
    b'{"run_id": "r", "members": ["m1"], "codec": "npz", "rows": "many", "predictor": "m:f"}',
    b'{"run_id": "r", "members": 5, "codec": "npz", "rows": 1, "predictor": "m:f"}',
])
def test_manifest_from_garbage_is_a_codec_mismatch(body: bytes) -> None:
    with pytest.raises(CodecMismatch, match="run manifest is not valid") as info:
        RunManifest.from_json(body)

    assert info.value.error_class == "codec"


@pytest.mark.parametrize("members", [["m1", "m1"], ["../x"], [""]],
                         ids=["duplicate", "path", "empty"])
def test_manifest_with_bad_member_names_is_not_valid(members: list[str]) -> None:
    body = json.dumps({"run_id": RUN, "members": members, "codec": "npz", "rows": 1,
                       "predictor": PREDICTOR}).encode()

    with pytest.raises(CodecMismatch, match="run manifest is not valid"):
        RunManifest.from_json(body)


class IgnoresConditions(MemoryStore):
    """A store that accepts every PUT, conditional or not (as some S3-compatible stores do)."""

    def put(self, key: str, body: bytes | memoryview, **kwargs: Any) -> str | None:
        kwargs.pop("if_none_match", None)
        kwargs.pop("if_match", None)
        return super().put(key, body, **kwargs)


def test_claim_run_detects_a_store_that_ignores_conditional_writes() -> None:
    with pytest.raises(NoConditionalWrites) as info:
        claim_run(IgnoresConditions(), LAYOUT, _manifest())

    assert "ignores conditional writes" in str(info.value)
    assert info.value.exit_code == 3


def test_claim_run_takes_back_its_own_claim_after_a_lost_answer() -> None:
    store = MemoryStore()
    manifest = _manifest()
    store.put(LAYOUT.manifest_key, manifest.to_json(), metadata={})  # our first PUT landed

    claimed = claim_run(store, LAYOUT, manifest)  # the retried PUT gets 412

    assert claimed.created and claimed.record == manifest


def test_check_run_refuses_another_cohort_naming_the_holder_and_writes_nothing() -> None:
    store = MemoryStore()
    first = _manifest(rows=1000)
    claim_run(store, LAYOUT, first)
    before = dict(store.objects)

    with pytest.raises(InputError) as info:
        check_run(store, LAYOUT, _manifest(rows=2000))

    assert "rows (1000 -> 2000)" in str(info.value)
    assert first.holder in str(info.value)
    assert store.objects == before


class RecordAppearsDuringTheListing(MemoryStore):
    """Another driver creates the record and claims attempt 1 between our read of the record
    and our listing of the attempts."""

    def __init__(self, other: RunManifest) -> None:
        super().__init__()
        self.other = other

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        if prefix.endswith("/_attempts/") and LAYOUT.manifest_key not in self.objects:
            self.put(LAYOUT.manifest_key, self.other.to_json(), metadata={})
            self.put(LAYOUT.attempt_key(1), b"{}", metadata={})
        return super().list(prefix)


def test_a_record_created_by_another_driver_meanwhile_is_joined_not_called_orphaned() -> None:
    other = _manifest()
    store = RecordAppearsDuringTheListing(other)

    claimed = claim_run(store, LAYOUT, _manifest())

    assert not claimed.created and claimed.record == other
