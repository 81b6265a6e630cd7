"""binding: an object's metadata ties it to one run, member, attempt and schema."""

from __future__ import annotations

import re

import pytest

from s43_ray.binding import (
    binding_metadata,
    check_binding,
    object_attempt,
    schema_digest,
    schema_of,
    specs_from_schema,
)
from s43_ray.codec import ArraySpec
from s43_ray.errors import (
    CodecMismatch,
    LoadError,
    SchemaMismatch,
    WrongAttempt,
    WrongMember,
    WrongRun,
)

RUN = "manual__2026-11-28T10:00:00+00:00"
OTHER_RUN = "manual__2026-11-29T10:00:00+00:00"
SPECS = {"index": ArraySpec((32,), "<i8"), "predictions": ArraySpec((32,), "<f4"),
         "score": ArraySpec((), "<f8")}
DIGEST = schema_digest(SPECS)
OTHER_DIGEST = schema_digest({**SPECS, "score": ArraySpec((), "<f4")})


def _meta(run_id: str = RUN, member: str = "m00000", attempt: int = 1,
          digest: str = DIGEST) -> dict[str, str]:
    return binding_metadata(run_id, member, attempt, digest)


# --- schema_digest ---------------------------------------------------------------------------


def test_schema_digest_is_stable_and_names_its_algorithm() -> None:
    again = {name: ArraySpec(spec.shape, spec.dtype) for name, spec in SPECS.items()}

    assert schema_digest(again) == DIGEST
    assert re.fullmatch(r"s1:[0-9a-f]{32}", DIGEST)


def test_schema_digest_does_not_depend_on_array_order() -> None:
    reversed_specs = dict(reversed(list(SPECS.items())))
    assert list(reversed_specs) != list(SPECS)

    assert schema_digest(reversed_specs) == DIGEST


@pytest.mark.parametrize("changed", [
    {**SPECS, "predictions": ArraySpec((32,), "<f8")},
    {**SPECS, "predictions": ArraySpec((32,), ">f4")},
    {**SPECS, "predictions": ArraySpec((31,), "<f4")},
    {**SPECS, "predictions": ArraySpec((32, 1), "<f4")},
    {**SPECS, "score": ArraySpec((1,), "<f8")},
    {"index": SPECS["index"], "prediction": SPECS["predictions"], "score": SPECS["score"]},
    {"index": SPECS["index"], "predictions": SPECS["predictions"]},
], ids=["dtype", "byte-order", "length", "rank", "scalar-vs-1d", "name", "one-array-fewer"])
def test_schema_digest_differs_when_a_dtype_shape_or_name_differs(
        changed: dict[str, ArraySpec]) -> None:
    assert schema_digest(changed) != DIGEST


def test_schema_digest_does_not_confuse_shapes_that_print_alike() -> None:
    assert (schema_digest({"a": ArraySpec((12,), "<f4")})
            != schema_digest({"a": ArraySpec((1, 2), "<f4")}))


def test_schema_read_back_from_its_json_form_has_the_same_digest() -> None:
    assert schema_digest(specs_from_schema(schema_of(SPECS))) == DIGEST


# --- check_binding ---------------------------------------------------------------------------


def test_check_binding_accepts_the_object_of_this_run_member_attempt_and_schema() -> None:
    check_binding(_meta(), run_id=RUN, member="m00000", attempt=1, schema=DIGEST)


def test_check_binding_without_attempt_or_schema_checks_only_run_and_member() -> None:
    check_binding(_meta(attempt=7, digest=OTHER_DIGEST), run_id=RUN, member="m00000")


def test_check_binding_refuses_another_run_naming_both() -> None:
    with pytest.raises(WrongRun) as info:
        check_binding(_meta(run_id=OTHER_RUN), run_id=RUN, member="m00000")

    assert repr(OTHER_RUN) in str(info.value) and repr(RUN) in str(info.value)
    assert info.value.error_class == "wrong_run"


def test_check_binding_refuses_another_member_naming_both() -> None:
    with pytest.raises(WrongMember) as info:
        check_binding(_meta(member="m00001"), run_id=RUN, member="m00000")

    assert "'m00001'" in str(info.value) and "'m00000'" in str(info.value)
    assert info.value.error_class == "wrong_member"


def test_check_binding_refuses_another_attempt_naming_both() -> None:
    with pytest.raises(WrongAttempt) as info:
        check_binding(_meta(attempt=2), run_id=RUN, member="m00000", attempt=1)

    message = str(info.value)
    assert "attempt '2'" in message and "attempt 1" in message
    assert info.value.error_class == "wrong_attempt"


def test_check_binding_refuses_an_object_without_an_attempt_when_one_is_expected() -> None:
    meta = _meta()
    meta["s43-attempt"] = "not-a-number"

    with pytest.raises(WrongAttempt, match="'not-a-number'"):
        check_binding(meta, run_id=RUN, member="m00000", attempt=1)


def test_check_binding_refuses_another_schema_naming_both() -> None:
    with pytest.raises(SchemaMismatch) as info:
        check_binding(_meta(digest=OTHER_DIGEST), run_id=RUN, member="m00000", schema=DIGEST)

    assert OTHER_DIGEST in str(info.value) and DIGEST in str(info.value)
    assert info.value.error_class == "schema"


@pytest.mark.parametrize("drop", ["s43-run", "s43-member", "s43-schema"])
def test_check_binding_refuses_an_object_without_a_binding_as_a_codec_mismatch(
        drop: str) -> None:
    meta = _meta()
    del meta[drop]

    with pytest.raises(CodecMismatch, match="no run binding") as info:
        check_binding(meta, run_id=RUN, member="m00000")

    assert info.value.error_class == "codec"


def test_check_binding_refuses_an_object_with_no_metadata_at_all() -> None:
    with pytest.raises(CodecMismatch, match="no run binding"):
        check_binding({}, run_id=RUN, member="m00000")


def test_every_binding_refusal_is_a_load_error_so_the_member_is_invalid_not_the_run() -> None:
    for error in (WrongRun, WrongMember, WrongAttempt, SchemaMismatch, CodecMismatch):
        assert issubclass(error, LoadError)
        assert error("x").exit_code == 1


def test_the_run_is_checked_before_the_member() -> None:
    with pytest.raises(WrongRun):
        check_binding(_meta(run_id=OTHER_RUN, member="m00001"), run_id=RUN, member="m00000")


# --- metadata --------------------------------------------------------------------------------


def test_binding_metadata_is_strings_only_as_s3_user_metadata_requires() -> None:
    meta = _meta(attempt=12)

    assert meta == {"s43-run": RUN, "s43-member": "m00000", "s43-attempt": "12",
                    "s43-schema": DIGEST}
    assert all(isinstance(v, str) for v in meta.values())


@pytest.mark.parametrize(("raw", "expected"), [("3", 3), ("0", 0), ("", None), ("x", None),
                                               ("-1", None), ("1.5", None)])
def test_object_attempt_reads_only_a_plain_number(raw: str, expected: int | None) -> None:
    assert object_attempt({"s43-attempt": raw}) == expected


def test_object_attempt_of_an_object_without_one_is_none() -> None:
    assert object_attempt({}) is None
