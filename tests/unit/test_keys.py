"""keys: run ids, member names and the key layout ``<prefix>/<run_id>/<member>.<ext>``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from s43_ray import keys
from s43_ray.errors import InvalidMember, InvalidRunId
from s43_ray.keys import RunLayout

AIRFLOW_IDS = [
    "manual__2026-11-28T10:00:00+00:00",
    "scheduled__2026-11-28T10:00:00+00:00",
    "backfill__2026-11-28T10:00:00.123456+00:00",
    "dataset_triggered__2026-11-28T10:00:00+00:00",
    "r1",
    "x" * 200,
]


@pytest.mark.parametrize("run_id", AIRFLOW_IDS)
def test_valid_run_ids_round_trip_through_validation_and_key_layout(run_id: str) -> None:
    assert keys.validate_run_id(run_id) == run_id
    layout = RunLayout("s43-predictions", run_id)

    key = layout.member_key("m00007", "npz")

    assert key == f"s43-predictions/{run_id}/m00007.npz"
    assert layout.classify(key) == ("m00007", "npz")
    assert layout.classify(layout.member_key("m00007", "arrow")) == ("m00007", "arrow")


@pytest.mark.parametrize(("run_id", "what"), [
    ("", "empty"),
    ("../x", "'..'"),
    ("a/b", "'/'"),
    ("..", "'..'"),
    (".", "'.'"),
    ("a\x00b", "'\\x00'"),
    ("a\nb", "'\\n'"),
    ("tab\tid", "'\\t'"),
    ("x" * 201, "201 characters"),
    ("has space", "' '"),
    ("back\\slash", "'\\\\'"),
    ("caf\u00e9", "'\u00e9'"),
])
def test_invalid_run_id_is_refused_with_a_message_naming_it(run_id: str, what: str) -> None:
    with pytest.raises(InvalidRunId) as info:
        keys.validate_run_id(run_id)

    message = str(info.value)
    assert repr(run_id[:57]).rstrip("'") in message  # the value (long ones shortened)
    assert what in message
    assert "expected" in message
    assert info.value.exit_code == 2


def test_run_layout_refuses_an_invalid_run_id() -> None:
    with pytest.raises(InvalidRunId):
        RunLayout("p", "a/b")


def test_new_run_id_is_valid_and_unique() -> None:
    ids = [keys.new_run_id() for _ in range(100)]

    assert len(set(ids)) == 100
    for run_id in ids:
        assert keys.validate_run_id(run_id) == run_id
        assert run_id.startswith("s43__")


def test_new_run_ids_sort_by_time() -> None:
    start = datetime(2026, 11, 28, 23, 59, 59, 999_990, tzinfo=timezone.utc)
    times = [start + timedelta(microseconds=7 * i) for i in range(20)]
    times.append(datetime(2027, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))))  # = 23:00Z

    ids = [keys.new_run_id(t) for t in times]

    assert sorted(ids) == ids


def test_new_run_id_is_in_utc_whatever_the_given_time_zone() -> None:
    local = datetime(2026, 11, 28, 12, 0, tzinfo=timezone(timedelta(hours=2)))

    assert keys.new_run_id(local).startswith("s43__2026-11-28T10:00:00.000000+00:00__")


def test_member_names_are_zero_padded_in_order() -> None:
    assert keys.member_names(3) == ["m00000", "m00001", "m00002"]
    assert keys.member_names(0) == []


def test_member_names_are_stable_whatever_the_cohort_size() -> None:
    small = keys.member_names(10)
    large = keys.member_names(keys.MAX_COHORT_SIZE)

    assert large[:10] == small
    assert large[-1] == "m99999"
    assert sorted(large) == large
    assert len(set(large)) == keys.MAX_COHORT_SIZE


def test_parse_members_keeps_order_and_strips_spaces() -> None:
    assert keys.parse_members("b, a ,c.1,d-2,e_3") == ["b", "a", "c.1", "d-2", "e_3"]


@pytest.mark.parametrize(("text", "bad"), [
    ("a,b,a", "['a']"),
    ("a,,b", "''"),
    ("", "''"),
    ("a,_gate", "'_gate'"),
    ("a,x/y", "'x/y'"),
    ("a,.hidden", "'.hidden'"),
    ("a," + "m" * 129, "m" * 129),
])
def test_parse_members_refuses_bad_lists(text: str, bad: str) -> None:
    with pytest.raises(InvalidMember) as info:
        keys.parse_members(text)

    assert bad in str(info.value)
    assert "expected" in str(info.value)
    assert info.value.exit_code == 2


def test_member_key_refuses_an_invalid_member() -> None:
    with pytest.raises(InvalidMember):
        RunLayout("p", "r1").member_key("../m1", "npz")


def test_layout_control_object_keys_live_in_the_run_prefix() -> None:
    layout = RunLayout("pre/fix", "r1")

    assert layout.run_prefix == "pre/fix/r1/"
    assert layout.gate_key == "pre/fix/r1/_gate.json"
    assert layout.manifest_key == "pre/fix/r1/_run.json"
    assert layout.is_control(layout.gate_key)
    assert layout.is_control(layout.manifest_key)
    assert not layout.is_control(layout.member_key("m1", "npz"))


def test_layout_with_an_empty_prefix_is_the_bucket_root() -> None:
    layout = RunLayout("", "r1")

    assert layout.run_prefix == "r1/"
    assert layout.member_key("m1", "arrow") == "r1/m1.arrow"


@pytest.mark.parametrize("key", [
    "p/r1/_gate.json",
    "p/r1/_run.json",
    "p/r1/_m1.npz",
    "p/r1/sub/m1.npz",
    "p/r1/notes.txt",
    "p/r1/m1.npy",
    "p/r1/.npz",
    "p/r1x/m1.npz",
    "p/r2/m1.npz",
    "other/r1/m1.npz",
    "p/r1",
])
def test_classify_ignores_keys_that_are_not_member_objects_of_the_run(key: str) -> None:
    assert RunLayout("p", "r1").classify(key) is None
