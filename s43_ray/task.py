"""One member's "pod": predict, encode, PUT, and hand back only a small reference.

:func:`persist_member` is the plain function (tested against any :class:`Store`);
:data:`persist_task` is its Ray remote form. Keys are deterministic, so a task that Ray runs twice
overwrites its own key with byte-identical content: retries are harmless.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import ray

from . import codec as codecs
from . import metrics
from .binding import binding_metadata, schema_digest
from .codec import ArraySpec, Codec
from .config import AnyStoreConfig
from .errors import S43Error, SchemaMismatch
from .fence import put_member
from .keys import RunLayout
from .predict import PredictorLike, check_prediction, predictor_name, resolve_predictor
from .stores import open_store
from .stores.base import Store

# Ray re-runs a task whose worker or node died this many times (system failures only; S3 errors
# are retried inside botocore, and a predictor's own exception is not retried).
TASK_MAX_RETRIES = 3


@dataclass(frozen=True)
class TaskSpec:
    """What every persist task of a run needs; small and picklable (no clients, no secrets
    beyond the embedded server's, which :class:`~s43_ray.config.Secret` hides)."""

    store: AnyStoreConfig
    run_id: str
    codec: Codec
    rows: int
    predictor: PredictorLike  # a function, or its module:function path
    attempt: int = 0  # the run's attempt (ledger.Attempt.number); objects carry it
    schema: str = ""  # the run's declared schema digest; "" when the predictor declares none

    @property
    def layout(self) -> RunLayout:
        """The run's keys, always under the store's own prefix."""
        return RunLayout(self.store.prefix, self.run_id)


@dataclass(frozen=True)
class PredictionRef:
    """The reference a task returns instead of arrays: a few hundred bytes whatever the payload."""

    run_id: str
    member: str
    key: str
    codec: Codec
    bytes: int
    checksum: str
    arrays: dict[str, ArraySpec]
    predict_seconds: float
    encode_seconds: float
    write_seconds: float
    node_id: str
    pid: int
    s3_retries: int = 0
    attempt: int = 0  # Ray's attempt number: 0 first, 1.. when re-run after a worker/node died
    run_attempt: int = 0  # the run's attempt that wrote the object (s43-attempt metadata)
    schema: str = ""  # digest of the arrays written (s43-schema metadata)


@dataclass(frozen=True)
class PersistFailure:
    """A member whose object could not be written; the driver turns it into an event."""

    run_id: str
    member: str
    key: str
    error_class: str
    message: str
    node_id: str = ""
    attempts: int = 1  # S3 attempts made for the PUT (1 + botocore retries)
    seconds: float = 0.0  # time spent on the member before it failed
    s3_retries: int = 0  # retried S3 attempts (counted in the summary, failed members too)


PersistOutcome = PredictionRef | PersistFailure


def _attempt_number() -> int:
    """Ray's attempt number of the running task (0 the first time); 0 outside Ray."""
    try:
        core = getattr(ray._private.worker.global_worker, "core_worker")  # noqa: B009
        return int(core.get_current_task_attempt_number())
    except Exception:  # not in a task, or an API Ray renamed: never fail a member for it
        return 0


def _node_id() -> str:
    if not ray.is_initialized():  # get_runtime_context() would start a cluster
        return "local"
    return str(ray.get_runtime_context().get_node_id())


def persist_member(store: Store, spec: TaskSpec, member: str) -> PersistOutcome:
    """Predict one member, encode it, write it under its deterministic key, return a reference."""
    key = spec.layout.member_key(member, spec.codec)
    node = _node_id()
    name = predictor_name(spec.predictor)
    t0 = time.perf_counter()
    try:
        predictor = resolve_predictor(spec.predictor)
        # No local name holds the arrays: write_member drops them once encoded.
        return write_member(store, spec, member,
                            check_prediction(predictor(spec.run_id, member, spec.rows), name,
                                             member),
                            source=f"predictor {name}", t0=t0, node=node)
    except S43Error as exc:
        return PersistFailure(spec.run_id, member, key, exc.error_class, str(exc), node,
                              seconds=time.perf_counter() - t0)
    except Exception as exc:
        return PersistFailure(spec.run_id, member, key, "predictor",
                              f"predictor {name} failed for member {member!r}: "
                              f"{type(exc).__name__}: {exc}", node,
                              seconds=time.perf_counter() - t0)


def write_member(store: Store, spec: TaskSpec, member: str, arrays: Mapping[str, np.ndarray],
                 *, source: str, t0: float | None = None, node: str | None = None
                 ) -> PredictionRef:
    """Encode ``arrays``, check them against the run's declared schema, write them under the
    member's key with its binding (run, member, attempt, schema), and return the reference.
    Raises :class:`~s43_ray.errors.S43Error` (nothing is written when encoding or the schema
    check fails). ``source`` names where the arrays came from in errors; ``t0``, when the
    prediction began."""
    key = spec.layout.member_key(member, spec.codec)
    t1 = time.perf_counter()
    encoded = codecs.encode(arrays, spec.codec)
    del arrays  # the payload holds them now: a large member is not in memory twice
    digest = schema_digest(encoded.arrays)
    if spec.schema and digest != spec.schema:
        raise SchemaMismatch(f"member {member!r}: {source} returned arrays "
                             f"{_describe(encoded.arrays)} (schema {digest}); expected the "
                             f"run's declared schema {spec.schema}")
    t2 = time.perf_counter()
    metadata = {**codecs.object_metadata(encoded, spec.codec),
                **binding_metadata(spec.run_id, member, spec.attempt, digest)}
    put_member(store, spec.layout, member, key, encoded.payload, metadata=metadata,
               s3_checksum=encoded.s3_checksum, attempt=spec.attempt)
    t3 = time.perf_counter()
    return PredictionRef(
        run_id=spec.run_id, member=member, key=key, codec=spec.codec, bytes=encoded.nbytes,
        checksum=encoded.checksum, arrays=encoded.arrays,
        predict_seconds=t1 - t0 if t0 is not None else 0.0,
        encode_seconds=t2 - t1, write_seconds=t3 - t2, node_id=node or _node_id(),
        pid=os.getpid(), run_attempt=spec.attempt, schema=digest)


def _describe(specs: dict[str, ArraySpec]) -> str:
    return "{" + ", ".join(f"{n}: {s.dtype}{list(s.shape)}" for n, s in sorted(specs.items())) + "}"


@lru_cache(maxsize=8)
def _worker_store(cfg: AnyStoreConfig) -> Store:
    """One store per worker process and config, reused by every task it runs."""
    return open_store(cfg)


@ray.remote(max_retries=TASK_MAX_RETRIES, retry_exceptions=False)
def persist_task(spec: TaskSpec, member: str) -> PersistOutcome:
    """Ray form of :func:`persist_member`: one client per worker process, reused."""
    metrics.watch_stores()
    store = _worker_store(spec.store)
    before = store.retries
    outcome = persist_member(store, spec, member)
    retried = store.retries - before
    if isinstance(outcome, PredictionRef):
        return replace(outcome, s3_retries=retried, attempt=_attempt_number())
    return replace(outcome, attempts=1 + retried, s3_retries=retried)
