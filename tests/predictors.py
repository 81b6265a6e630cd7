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


# Marker folder for dies_once: one file per (run, member) that already died once.
DIED_ONCE_DIR = "/tmp/s43-test-died-once"


def dies_once(run_id: str, member: str, rows: int) -> dict[str, np.ndarray]:
    """Member ``m00001`` kills its own worker process (SIGKILL, as the OOM killer would) the
    first time it runs; Ray's retry then computes it normally on a fresh worker."""
    import os
    import signal

    if member == "m00001":
        os.makedirs(DIED_ONCE_DIR, exist_ok=True)
        marker = os.path.join(DIED_ONCE_DIR, f"{run_id}__{member}")
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
    return default_predictor(run_id, member, rows)


def slow(run_id: str, member: str, rows: int) -> dict[str, np.ndarray]:
    """Half a second per member, so a store outage lands while members are written."""
    time.sleep(0.5)
    return default_predictor(run_id, member, rows)


# Marker folder for fails_when_marked: a file <run_id>__<member> makes that member's predictor
# raise (the test creates it between two runs; the workers of the session cluster see it).
FAIL_MARKERS_DIR = "/tmp/s43-test-fail-markers"


def fails_when_marked(run_id: str, member: str, rows: int) -> dict[str, np.ndarray]:
    """The default predictor, except for members a test marked to fail."""
    import os

    if os.path.exists(os.path.join(FAIL_MARKERS_DIR, f"{run_id}__{member}")):
        raise RuntimeError(f"model failed for {member} (marked by the test)")
    return default_predictor(run_id, member, rows)


def returns_list(run_id: str, member: str, rows: int) -> list[np.ndarray]:
    """A predictor that returns a list of arrays instead of a dict."""
    return [np.zeros(rows, dtype=np.float32)]


def returns_none(run_id: str, member: str, rows: int) -> None:
    """A predictor that forgets to return."""
    return None
