"""predict: the deterministic default predictor and ``module:function`` loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from s43_ray.errors import InvalidPredictor
from s43_ray.predict import DEFAULT_PREDICTOR, default_predictor, load_predictor

RUN = "manual__2026-11-28T10:00:00+00:00"


def test_default_predictor_is_byte_identical_for_the_same_run_and_member() -> None:
    first = default_predictor(RUN, "m00001", 64)
    second = default_predictor(RUN, "m00001", 64)

    assert list(first) == list(second)
    for name in first:
        assert first[name].tobytes() == second[name].tobytes(), name


@pytest.mark.parametrize(("run_id", "member"), [(RUN, "m00002"), ("other-run", "m00001")])
def test_default_predictor_differs_for_another_member_or_run(run_id: str, member: str) -> None:
    base = default_predictor(RUN, "m00001", 64)
    other = default_predictor(run_id, member, 64)

    assert base["predictions"].tobytes() != other["predictions"].tobytes()


def test_default_predictor_record_has_named_arrays_with_expected_dtypes() -> None:
    record = default_predictor(RUN, "m00001", 100)

    assert set(record) == {"index", "predictions", "label", "score"}
    assert record["index"].dtype == np.int64 and record["index"].shape == (100,)
    np.testing.assert_array_equal(record["index"], np.arange(100))
    assert record["predictions"].dtype == np.float32 and record["predictions"].shape == (100,)
    assert ((record["predictions"] >= 0) & (record["predictions"] <= 1)).all()
    assert record["label"].dtype == np.int8
    np.testing.assert_array_equal(record["label"], record["predictions"] >= 0.5)
    assert record["score"].dtype == np.float64 and record["score"].shape == ()
    assert float(record["score"]) == pytest.approx(float(record["predictions"].mean()))


def test_default_predictor_with_zero_rows_gives_empty_arrays_and_zero_score() -> None:
    record = default_predictor(RUN, "m00001", 0)

    assert record["predictions"].shape == (0,)
    assert float(record["score"]) == 0.0


def test_load_predictor_finds_the_default() -> None:
    assert load_predictor(DEFAULT_PREDICTOR) is default_predictor


@pytest.mark.parametrize(("path", "reason"), [
    ("nomodule", "expected module:function"),
    ("a b:c", "expected module:function"),
    ("", "expected module:function"),
    ("mod:f:g", "expected module:function"),
    ("os:nope", "no callable 'nope'"),
    ("os:sep", "no callable 'sep'"),
    ("no_such_mod_xyz:f", "cannot be imported"),
])
def test_load_predictor_refuses_bad_paths_naming_them(path: str, reason: str) -> None:
    with pytest.raises(InvalidPredictor) as info:
        load_predictor(path)

    assert repr(path) in str(info.value)
    assert reason in str(info.value)
    assert info.value.exit_code == 2


def test_load_predictor_imports_a_user_module(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "s43_unit_user_model.py").write_text(
        "def predict(run_id, member, rows):\n    return {'x': [rows]}\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    predictor = load_predictor("s43_unit_user_model:predict")

    assert predictor("r", "m", 3) == {"x": [3]}


def test_load_predictor_refuses_a_module_that_fails_to_import(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "s43_unit_broken_model.py").write_text("def predict(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(InvalidPredictor, match="s43_unit_broken_model"):
        load_predictor("s43_unit_broken_model:predict")
