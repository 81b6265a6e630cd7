"""The public API on a ``file://`` store, in this process (no Ray, no S3): claim, persist,
gate, load, read back, and every refusal a user meets. tests/integration/test_library_live.py
runs the same on the real SeaweedFS and Ray, the example script included."""

from __future__ import annotations

import dataclasses
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import s43_ray
from s43_ray.errors import (
    ChecksumMismatch,
    InvalidMember,
    InvalidStoreUrl,
    NotInLedger,
    SchemaMismatch,
    WrongAttempt,
)

MEMBERS = [f"m{i:05d}" for i in range(4)]


def arrays(member: str, rows: int = 6) -> dict[str, np.ndarray]:
    seed = int(member[1:])
    return {"predictions": np.linspace(0, 1, rows, dtype=np.float32) + seed,
            "embedding": np.full((rows, 2, 3), seed, dtype=np.int16),
            "score": np.array(seed / 10, dtype=np.float64)}


@pytest.fixture
def store(tmp_path: Path) -> s43_ray.Store:
    return s43_ray.open_store(f"file://{tmp_path}")


def persisted(store: s43_ray.Store, run_id: str = "r1") -> tuple[s43_ray.Run,
                                                                 list[s43_ray.PredictionRef]]:
    run = store.start_run(run_id, members=MEMBERS)
    return run, [run.persist(m, arrays(m)) for m in run]


def gated(store: s43_ray.Store, run_id: str = "r1") -> s43_ray.Run:
    run, refs = persisted(store, run_id)
    assert run.gate(refs).passed
    return run


def tamper(store: s43_ray.Store, key: str, change: str = "flip") -> None:
    """Rewrite an object behind the run's back, its s43 metadata kept as it was."""
    client = store.client()
    body, info = client.get(key)
    data = bytearray(body)
    if change == "flip":
        data[len(data) // 2] ^= 0xFF
    client.put(key, bytes(data), metadata=dict(info.metadata))


def test_the_whole_flow_returns_the_arrays_it_was_given(store: s43_ray.Store) -> None:
    run, refs = persisted(store)

    verdict = run.gate(refs)

    assert verdict.passed and verdict.cohort_count == verdict.expected == 4
    assert verdict.missing == [] and verdict.invalid == {} and verdict.unexpected == []
    loaded = run.load("m00002")
    for name, value in arrays("m00002").items():
        assert np.array_equal(loaded[name], value) and loaded[name].dtype == value.dtype
    table = run.read_table()
    assert table.column_names == ["member", "predictions", "embedding", "score"]
    assert table.num_rows == 4 * 6
    assert table.column("member").to_pylist()[:7] == ["m00000"] * 6 + ["m00001"]
    emb = table.column("embedding").combine_chunks()
    assert isinstance(emb, pa.FixedShapeTensorArray)
    assert emb.to_numpy_ndarray().shape == (24, 2, 3)  # the N-D shape, restored
    assert table.column("score").to_pylist()[6] == pytest.approx(0.1)  # a scalar, per row
    assert table.schema.metadata[b"s43.run_id"] == b"r1"


def test_a_run_is_small_when_pickled_and_holds_no_client(store: s43_ray.Store) -> None:
    run = store.start_run("r1", members=MEMBERS)

    data = pickle.dumps(run)

    assert len(data) < 1500
    assert b"boto" not in data and b"client" not in data.lower()
    assert pickle.loads(data) == run


def test_runs_and_stores_read_like_what_they_are(store: s43_ray.Store, tmp_path: Path) -> None:
    run = store.start_run("r1", members=MEMBERS)

    assert repr(store) == f"Store('file://{tmp_path}')"
    assert repr(run) == f"Run('r1', 4 members, arrow, attempt 1, file://{tmp_path})"
    assert list(run) == MEMBERS and len(run) == 4 and "m00001" in run and "x" not in run
    assert run.url == f"file://{tmp_path}/r1/"
    assert "read-only" in repr(store.open_run("r1"))
    with s43_ray.open_store(f"file://{tmp_path}") as same:
        assert same == store


def test_gate_names_what_is_missing_and_what_is_not_the_runs(store: s43_ray.Store) -> None:
    run, refs = persisted(store)
    store.client().delete(run.key("m00001"))
    tamper(store, run.key("m00002"))

    verdict = run.gate(refs)

    assert not verdict.passed
    assert verdict.missing == ["m00001"]
    assert list(verdict.invalid) == ["m00002"]
    assert verdict.invalid["m00002"].startswith("checksum")
    assert "m00001" in verdict.reason and "m00002 (checksum)" in verdict.reason


def test_gate_with_some_references_only_counts_those(store: s43_ray.Store) -> None:
    run, refs = persisted(store)

    verdict = run.gate(refs[:3])

    assert not verdict.passed and verdict.cohort_count == 3
    assert verdict.invalid["m00003"].startswith("not_in_ledger")


def test_gate_accepts_the_same_references_twice_and_refuses_others(store: s43_ray.Store) -> None:
    run, refs = persisted(store)
    assert run.gate(refs).passed
    assert run.gate(refs).passed  # the same ledger: fine

    other = run.persist("m00000", {"predictions": np.zeros(6, np.float32)})
    with pytest.raises(s43_ray.InputError, match="already recorded other references"):
        run.gate([other, *refs[1:]])


def test_gate_refuses_references_of_another_run(store: s43_ray.Store) -> None:
    run, _ = persisted(store)
    _, theirs = persisted(store, "r2")

    with pytest.raises(s43_ray.InputError, match="of run 'r2'"):
        run.gate(theirs)


def test_regate_from_the_store_alone(store: s43_ray.Store) -> None:
    run = gated(store)

    assert store.open_run("r1").gate().passed
    tamper(store, run.key("m00003"))
    again = store.open_run("r1").gate()
    assert not again.passed and list(again.invalid) == ["m00003"]


@pytest.mark.parametrize("change", ["flip", "swap"])
def test_load_refuses_a_tampered_member(store: s43_ray.Store, change: str) -> None:
    run = gated(store)
    if change == "flip":
        tamper(store, run.key("m00001"))
    else:  # another member's object, metadata and all, under this member's key
        client = store.client()
        body, info = client.get(run.key("m00002"))
        client.put(run.key("m00001"), bytes(body), metadata=dict(info.metadata))

    with pytest.raises(s43_ray.LoadError) as err:
        run.load("m00001")
    assert err.value.error_class in ("checksum", "wrong_member")
    assert run.load("m00000")  # the others still load


def test_load_refuses_a_member_the_ledger_does_not_list(store: s43_ray.Store) -> None:
    run, refs = persisted(store)
    run.gate(refs[1:])

    with pytest.raises(NotInLedger, match="m00000"):
        run.load("m00000")


def test_load_of_an_older_attempts_object_is_refused(store: s43_ray.Store) -> None:
    gated(store)
    newer, refs = persisted(store)  # attempt 2 writes every member again...
    newer.gate(refs)
    older = store.start_run("r1", members=MEMBERS)  # ...attempt 3 rewrites one, ungated
    older.persist("m00000", arrays("m00000"))

    with pytest.raises(WrongAttempt):
        store.open_run("r1").load("m00000")


def test_read_table_refuses_a_run_without_a_passed_verdict(store: s43_ray.Store) -> None:
    run, refs = persisted(store)
    with pytest.raises(s43_ray.GateFailed, match="has no verdict"):
        run.read_table()
    run.gate(refs[:2])
    with pytest.raises(s43_ray.GateFailed, match="did not pass"):
        run.read_table()


def test_read_table_refuses_a_member_changed_since_the_verdict(store: s43_ray.Store) -> None:
    run = gated(store)
    tamper(store, run.key("m00002"))

    with pytest.raises(ChecksumMismatch, match=r"m00002.*no longer matches its passed verdict"):
        run.read_table()


def test_read_table_refuses_a_forged_verdict(store: s43_ray.Store) -> None:
    run, refs = persisted(store)
    run.gate(refs[:3])  # failed: m00003 not in the ledger
    client = store.client()
    body, info = client.get(run.layout.gate_key)
    record = json.loads(bytes(body))
    record.update(status="passed", cohort_count=4)
    client.put(run.layout.gate_key, json.dumps(record).encode(), metadata=dict(info.metadata))

    with pytest.raises(s43_ray.GateFailed, match="claims passed but did not pass"):
        run.read_table()


def test_read_table_refuses_when_a_newer_attempt_started(store: s43_ray.Store) -> None:
    run = gated(store)
    store.start_run("r1", members=MEMBERS)

    with pytest.raises(s43_ray.GateFailed, match="attempt 2 started after"):
        run.read_table()


def test_read_table_says_a_deleted_member_is_gone(store: s43_ray.Store) -> None:
    run = gated(store)
    store.client().delete(run.key("m00003"))

    with pytest.raises(s43_ray.StoreError, match=r"m00003.*counted by its passed verdict"):
        run.read_table()


def test_read_dataset_names_the_extra_when_ray_data_is_missing(
        store: s43_ray.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    run = gated(store)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    monkeypatch.delitem(sys.modules, "s43_ray.api.dataset", raising=False)

    with pytest.raises(s43_ray.InputError, match=r"s43_ray\[data\]"):
        run.read_dataset()


def test_persist_refuses_bad_input_and_writes_nothing(store: s43_ray.Store) -> None:
    run = store.start_run("r1", members=MEMBERS, schema={"predictions": ("<f4", (6,))})

    with pytest.raises(s43_ray.InputError, match="'x' is not in run 'r1'"):
        run.persist("x", arrays("m00000"))
    with pytest.raises(s43_ray.InputError, match="array 'p' is a list"):
        run.persist("m00000", {"p": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(SchemaMismatch, match="declared schema"):
        run.persist("m00000", {"predictions": np.zeros(5, np.float32)})
    with pytest.raises(s43_ray.InputError, match="read-only"):
        store.open_run("r1").persist("m00000", {"predictions": np.zeros(6, np.float32)})
    assert not any(k.key.endswith(".arrow") for k in store.client().list(run.layout.run_prefix))


def test_start_run_refuses_another_cohort_and_bad_names(store: s43_ray.Store) -> None:
    store.start_run("r1", members=MEMBERS)

    with pytest.raises(s43_ray.InputError, match="different cohort"):
        store.start_run("r1", members=MEMBERS[:2])
    assert store.start_run("r1", members=MEMBERS).attempt == 2  # the same cohort: a re-run
    with pytest.raises(InvalidMember):
        store.start_run("r2", members=["bad/name"])
    with pytest.raises(s43_ray.InputError, match="named twice"):
        store.start_run("r3", members=["a", "a"])
    with pytest.raises(s43_ray.InputError, match="codec 'csv'"):
        store.start_run("r4", members=["a"], codec="csv")  # type: ignore[arg-type]
    with pytest.raises(s43_ray.InputError, match="no record"):
        store.open_run("never")


def test_open_store_names_a_bad_url_or_setting(tmp_path: Path) -> None:
    with pytest.raises(InvalidStoreUrl):
        s43_ray.open_store("http://bucket/prefix")
    with pytest.raises(s43_ray.InputError, match="endpoint_url do not apply"):
        s43_ray.open_store(f"file://{tmp_path}", endpoint_url="http://127.0.0.1:1")
    with pytest.raises(s43_ray.InputError, match="max_attempts"):
        s43_ray.open_store("s3://bucket/p", max_attempts=99)
    s3 = s43_ray.open_store("s3://bucket/p", endpoint_url="http://127.0.0.1:9", sse="none")
    assert s3.url == "s3://bucket/p" and s3.endpoint == "http://127.0.0.1:9"


def test_runs_lists_the_newest_first_with_its_verdict(store: s43_ray.Store) -> None:
    gated(store, "r1")
    run, refs = persisted(store, "r2")
    run.gate(refs[:1])

    listed = store.runs()

    assert [(r.run_id, r.status) for r in listed] == [("r2", "failed"), ("r1", "passed")]


def test_gate_refuses_a_run_whose_cohort_is_not_its_record(store: s43_ray.Store) -> None:
    run, refs = persisted(store)
    narrowed = dataclasses.replace(run, members=tuple(MEMBERS[:2]))

    with pytest.raises(s43_ray.InputError, match="is not the run's record"):
        narrowed.gate(refs[:2])
    with pytest.raises(s43_ray.InputError, match="record has 4"):
        narrowed.gate()
    assert run.gate(refs).passed  # nothing was written: the attempt is not burned


@pytest.mark.parametrize("field", ["attempt", "token"])
def test_gate_refuses_a_run_that_did_not_claim_its_attempt(store: s43_ray.Store,
                                                           field: str) -> None:
    run, refs = persisted(store)
    forged = dataclasses.replace(run, **{field: 7 if field == "attempt" else "0" * 16})
    forged_refs = [dataclasses.replace(r, run_attempt=forged.attempt) for r in refs]

    with pytest.raises(s43_ray.InputError, match=r"never claimed|another driver"):
        forged.gate(forged_refs)
    assert run.gate(refs).passed


def test_gate_refuses_no_references_one_reference_and_an_unknown_mode(
        store: s43_ray.Store) -> None:
    run, refs = persisted(store)

    with pytest.raises(s43_ray.InputError, match="got no references"):
        run.gate([])
    with pytest.raises(s43_ray.InputError, match="got one PredictionRef"):
        run.gate(refs[0])  # type: ignore[arg-type]
    with pytest.raises(s43_ray.InputError, match="verify 'quick' is not valid"):
        run.gate(refs, verify="quick")  # type: ignore[arg-type]
    assert run.gate(refs).passed  # none of them burned the attempt


def test_a_gate_overtaken_by_a_newer_attempt_does_not_pass(store: s43_ray.Store) -> None:
    run, refs = persisted(store)
    store.start_run("r1", members=MEMBERS)  # attempt 2, still persisting

    verdict = run.gate(refs)

    assert not verdict.passed and "attempt 2 started meanwhile" in verdict.reason


def test_read_table_refuses_a_metadata_verdict_forged_once_the_record_is_gone(
        store: s43_ray.Store) -> None:
    run = gated(store)
    client = store.client()
    body, info = client.get(run.layout.gate_key)
    record = json.loads(bytes(body))
    record.update(basis="metadata", attempt=None)
    client.put(run.layout.gate_key, json.dumps(record).encode(), metadata=dict(info.metadata))
    client.delete(run.layout.manifest_key)

    with pytest.raises(s43_ray.GateFailed, match="object metadata alone, but the run has "
                                                  "claimed attempts"):
        run.read_table()


def test_read_table_names_an_array_with_an_empty_row_shape(store: s43_ray.Store) -> None:
    run = store.start_run("r1", members=["a"])
    assert run.gate([run.persist("a", {"x": np.zeros((3, 0), np.float32)})]).passed

    with pytest.raises(s43_ray.InputError, match=r"array 'x' has shape \(3, 0\)"):
        run.read_table()
