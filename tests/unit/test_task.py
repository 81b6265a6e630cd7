"""task.persist_member with a MemoryStore: one member's "pod" writes and returns a reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from s43_ray import codec
from s43_ray.codec import Codec
from s43_ray.config import StoreConfig
from s43_ray.errors import Throttled
from s43_ray.keys import RunLayout
from s43_ray.stores.memory import MemoryStore
from s43_ray.task import PersistFailure, PredictionRef, TaskSpec, persist_member

RUN = "manual__2026-11-28T10:00:00+00:00"
USER_MODELS = '''
import numpy as np

def boom(run_id, member, rows):
    raise RuntimeError("model weights not found")

def strings(run_id, member, rows):
    return {"names": np.array(["a", "b"])}

def big_endian(run_id, member, rows):
    return {"x": np.arange(rows, dtype=">f8").reshape(rows // 2, 2)}
'''


def _spec(codec: Codec = "npz", predictor: str = "s43_ray.predict:default_predictor",
          rows: int = 16) -> TaskSpec:
    return TaskSpec(store=StoreConfig(bucket="memory", prefix="p"), run_id=RUN, codec=codec,
                    rows=rows, predictor=predictor)


@pytest.fixture
def user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user's predictor module, importable for this test only; its module name."""
    (tmp_path / "s43_unit_task_models.py").write_text(USER_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "s43_unit_task_models"


@pytest.mark.parametrize("c", ["npz", "arrow"])
def test_persist_member_writes_the_object_and_returns_a_small_reference(c: Codec) -> None:
    store = MemoryStore()

    ref = persist_member(store, _spec(c), "m00003")

    assert isinstance(ref, PredictionRef)
    key = RunLayout("p", RUN).member_key("m00003", c)
    assert ref.key == key
    assert list(store.objects) == [key]
    body, meta, _ = store.objects[key]
    assert ref.bytes == len(body)
    assert ref.checksum == codec.checksum(body)
    assert meta == {"s43-codec": c, "s43-format-version": codec.FORMAT_VERSION,
                    "s43-checksum": ref.checksum, "s43-bytes": str(len(body)),
                    "s43-run": RUN, "s43-member": "m00003", "s43-attempt": "0",
                    "s43-schema": ref.schema}
    assert ref.schema.startswith("s1:")
    assert ref.arrays["predictions"] == codec.ArraySpec((16,), "<f4")
    assert ref.arrays["score"] == codec.ArraySpec((), "<f8")
    decoded = codec.decode(body, c)
    np.testing.assert_array_equal(decoded["index"], np.arange(16))


def test_persist_member_twice_writes_byte_identical_content() -> None:
    store = MemoryStore()

    first = persist_member(store, _spec(), "m00000")
    body_first = store.objects[first.key][0]
    second = persist_member(store, _spec(), "m00000")

    assert isinstance(first, PredictionRef) and isinstance(second, PredictionRef)
    assert first.checksum == second.checksum
    assert store.objects[second.key][0] == body_first
    assert len(store.objects) == 1


def test_persist_member_keeps_a_user_predictors_dtype_and_shape(user_models: str) -> None:
    store = MemoryStore()

    ref = persist_member(store, _spec("arrow", f"{user_models}:big_endian", rows=6), "m1")

    assert isinstance(ref, PredictionRef)
    out = codec.decode(store.objects[ref.key][0], "arrow")["x"]
    assert out.dtype.str == ">f8" and out.shape == (3, 2)


def test_persist_member_reports_a_failing_predictor(user_models: str) -> None:
    store = MemoryStore()

    outcome = persist_member(store, _spec(predictor=f"{user_models}:boom"), "m00001")

    assert isinstance(outcome, PersistFailure)
    assert outcome.error_class == "predictor"
    assert outcome.member == "m00001"
    assert "'m00001'" in outcome.message
    assert "RuntimeError: model weights not found" in outcome.message
    assert outcome.key == RunLayout("p", RUN).member_key("m00001", "npz")
    assert store.objects == {}


def test_persist_member_refuses_a_predictor_returning_strings(user_models: str) -> None:
    store = MemoryStore()

    outcome = persist_member(store, _spec(predictor=f"{user_models}:strings"), "m00001")

    assert isinstance(outcome, PersistFailure)
    assert outcome.error_class == "unsafe_payload"
    assert "'names'" in outcome.message
    assert store.objects == {}


def test_persist_member_reports_an_unloadable_predictor() -> None:
    outcome = persist_member(MemoryStore(), _spec(predictor="no_such_mod_xyz:f"), "m00001")

    assert isinstance(outcome, PersistFailure)
    assert outcome.error_class == "bad_input"
    assert "'no_such_mod_xyz:f'" in outcome.message


def test_persist_member_reports_a_store_failure() -> None:
    class FullStore(MemoryStore):
        def put(self, key: str, body: Any, **kwargs: Any) -> None:
            raise Throttled(f"PUT {key}: throttled (SlowDown) after retries")

    outcome = persist_member(FullStore(), _spec(), "m00001")

    assert isinstance(outcome, PersistFailure)
    assert outcome.error_class == "throttled"
    assert "SlowDown" in outcome.message


def test_persist_member_outside_ray_does_not_start_ray(
        ray_init_attempts: list[tuple[Any, ...]]) -> None:
    outcome = persist_member(MemoryStore(), _spec(), "m00001")

    assert isinstance(outcome, PredictionRef)
    assert outcome.node_id == "local"
    assert ray_init_attempts == []


def test_a_reference_stays_small_whatever_the_payload() -> None:
    import pickle

    from s43_ray.config import StoreConfig
    from s43_ray.task import TaskSpec

    spec = TaskSpec(StoreConfig(bucket="memory", prefix="p"), "r", "arrow", 1_000_000,
                    "s43_ray.predict:default_predictor")
    store = MemoryStore()

    ref = persist_member(store, spec, "m00000")

    assert isinstance(ref, PredictionRef)
    assert ref.bytes > 10_000_000  # ~13 MiB went to the store ...
    assert len(pickle.dumps(ref)) < 2048  # ... and the driver receives under 2 KiB
