"""Predictors: what a member's pod computes. ``--predictor module:function`` plugs in a real model.

A predictor is ``f(run_id: str, member: str, rows: int) -> Mapping[str, numpy.ndarray]``. It may
declare what it returns with an attribute ``s43_schema(rows) -> {name: (dtype, shape)}``; the run
records that schema, and an object with other arrays is refused on write and at the gate. The
default one is deterministic (same run id and member, byte-identical arrays), cheap, and shaped
like a real diagnostic record: an index, the predictions, a thresholded label, and a score.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .codec import ArraySpec
from .errors import InvalidPredictor, PredictorFailed

Predictor = Callable[[str, str, int], Mapping[str, np.ndarray]]
# What a run takes as its predictor: the function itself (Ray ships it to the workers by value)
# or its import path ``module:function`` (imported on each worker).
PredictorLike = Predictor | str
DEFAULT_PREDICTOR = "s43_ray.predict:default_predictor"
# Decision threshold of the default predictor's label.
LABEL_THRESHOLD = 0.5
_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def _seed(run_id: str, member: str) -> int:
    digest = hashlib.blake2b(f"{run_id}\0{member}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def default_predictor(run_id: str, member: str, rows: int) -> dict[str, np.ndarray]:
    """A deterministic record: ``index`` (int64), ``predictions`` (float32, in [0, 1]),
    ``label`` (int8, predictions >= 0.5) and ``score`` (float64 scalar, the mean prediction)."""
    rng = np.random.default_rng(_seed(run_id, member))
    logits = rng.standard_normal(rows, dtype=np.float32)
    predictions = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    return {
        "index": np.arange(rows, dtype=np.int64),
        "predictions": predictions,
        "label": (predictions >= LABEL_THRESHOLD).astype(np.int8),
        "score": np.array(predictions.mean() if rows else 0.0, dtype=np.float64),
    }


def _default_schema(rows: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {"index": ("<i8", (rows,)), "predictions": ("<f4", (rows,)),
            "label": ("|i1", (rows,)), "score": ("<f8", ())}


default_predictor.s43_schema = _default_schema  # type: ignore[attr-defined]


def array_specs(declared: Mapping[str, tuple[Any, Sequence[int]]]) -> dict[str, ArraySpec]:
    """``{name: (dtype, shape)}`` (how a predictor's ``s43_schema`` and ``start_run(schema=)``
    declare arrays) as specs; raises whatever the declaration gets wrong (callers name it)."""
    return {str(name): ArraySpec(tuple(int(d) for d in shape), np.dtype(dtype).str)
            for name, (dtype, shape) in declared.items()}


def declared_schema(predictor: Predictor, rows: int) -> dict[str, ArraySpec] | None:
    """The schema a predictor declares through its ``s43_schema(rows)`` attribute, if any."""
    declare = getattr(predictor, "s43_schema", None)
    if declare is None:
        return None
    try:
        return array_specs(declare(rows))
    except Exception as exc:  # a user's declaration may be wrong in any way
        raise InvalidPredictor(f"predictor's s43_schema({rows}) is not valid ({type(exc).__name__}"
                               f": {exc}); expected {{name: (dtype, shape)}}") from exc


def check_prediction(result: object, predictor: str, member: str) -> Mapping[str, np.ndarray]:
    """A predictor's return value, or :class:`PredictorFailed` naming what it returned."""
    if not isinstance(result, Mapping):
        raise PredictorFailed(f"predictor {predictor} returned {type(result).__name__} for member "
                              f"{member!r}; expected a dict of name -> numpy array")
    for name, value in result.items():
        if not isinstance(value, (np.ndarray, np.generic)):
            raise PredictorFailed(f"predictor {predictor} returned {type(value).__name__} as "
                                  f"array {name!r} for member {member!r}; expected a numpy array")
    return result


def load_predictor(path: str) -> Predictor:
    """Import ``module:function``; raise :class:`InvalidPredictor` naming what failed."""
    if not _PATH.fullmatch(path):
        raise InvalidPredictor(f"predictor {path!r} is not valid; expected module:function "
                               "such as mypkg.model:predict")
    module_name, func_name = path.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a broken module may raise anything on import
        raise InvalidPredictor(f"predictor {path!r}: module {module_name!r} cannot be imported "
                               f"({type(exc).__name__}: {exc}); expected an installed module"
                               ) from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise InvalidPredictor(f"predictor {path!r}: {module_name!r} has no callable "
                               f"{func_name!r}; expected a function (run_id, member, rows)")
    return func  # type: ignore[no-any-return]


def predictor_name(predictor: PredictorLike) -> str:
    """How a run records its predictor: the path as given, or ``module:qualname`` of a
    function (what a re-run of the same cohort is compared on)."""
    if isinstance(predictor, str):
        return predictor
    module = getattr(predictor, "__module__", None) or "?"
    name = getattr(predictor, "__qualname__", None) or type(predictor).__name__
    return f"{module}:{name}"


def resolve_predictor(predictor: PredictorLike) -> Predictor:
    """The function a predictor names: imported from ``module:function``, or itself. Anything
    else is refused (:class:`InvalidPredictor`) naming what was given."""
    if isinstance(predictor, str):
        return load_predictor(predictor)
    if not callable(predictor):
        raise InvalidPredictor(f"predictor {predictor!r} is a {type(predictor).__name__}; "
                               "expected a function (run_id, member, rows) or a "
                               "module:function path")
    return predictor
