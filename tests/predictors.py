"""Predictors for fault tests, importable by Ray workers as ``tests.predictors:NAME``
(workers import from the driver's working directory, the repo root)."""

from __future__ import annotations

import time

import numpy as np

from s43_ray.predict import default_predictor

# Longer than any test: a task running this is only ever ended by cancellation.
HANG_SECONDS = 3600


def hang(run_id: str, member: str, rows: int) -> dict[str, np.ndarray]:
    """Never returns in time: stands in for a model stuck on a dead GPU or a lock."""
    time.sleep(HANG_SECONDS)
    return default_predictor(run_id, member, rows)


def extended_precision(run_id: str, member: str, rows: int) -> dict[str, np.ndarray]:
    """A record with a float128 array, which Arrow cannot hold."""
    return {"predictions": np.zeros(rows, dtype=np.longdouble)}
