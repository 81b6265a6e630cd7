"""Metrics through Ray's own API (``ray.util.metrics``), exported by every node's metrics agent.

A process records into its node's agent (the driver into the head's, a task into its worker
node's); the agent serves them in Prometheus format on the node's ``--metrics-export-port``,
with a ``ray_`` prefix and Ray's own labels (``SessionName``, ``NodeAddress``, ``WorkerId``,
``Component``, ``Version``, ``otel_scope_*``). As scraped from Ray 2.60 (tests/integration/
test_metrics.py pins these):

- ``s43_s3_request_seconds`` histogram (operation, codec) -> ``ray_s43_s3_request_seconds_bucket``
  (``le`` as Ray prints it: ``"0.001"``, ``"1.0"``, ``"60.0"``, ``"+Inf"``), ``_count``, ``_sum``
- ``s43_s3_write_bytes`` / ``s43_s3_read_bytes`` counters (codec) -> ``ray_..._total``
- ``s43_s3_errors`` counter (operation, error_class) -> ``ray_s43_s3_errors_total``
- ``s43_s3_retries`` counter (operation) -> ``ray_s43_s3_retries_total``
- ``s43_gate_outcomes`` counter (status) -> ``ray_s43_gate_outcomes_total``
- ``s43_cohort_expected_members`` / ``s43_cohort_counted_members`` gauges (run_id, store) ->
  ``ray_s43_cohort_expected_members`` / ``ray_s43_cohort_counted_members``

What Ray does with them, and why the alert rules look the way they do:

- Every series carries ``WorkerId``: one series per worker process, and a Ray worker lives for
  one job. A run's series appear at the agent already holding their counts and then never
  change, so ``rate()`` on them sees nothing; infra/alerts/prometheus-rules.yaml computes each
  worker series' increase itself, then sums the per-process labels away.
- The histogram ``_sum`` is approximate (Ray re-emits bucket midpoints); use the buckets.
- A gauge is exported only when it is set and the agent drops it about two report intervals
  later (``RAY_metrics_report_interval_ms``, 10 s by default): the cohort gauges exist for
  ~20 s per run. Rules read them through ``max_over_time``. Their ``run_id`` tag therefore costs
  two short-lived series per run, not a growing set; counters and histograms, which the agent
  keeps for its lifetime, never carry a run id.

Recording is a cheap no-op when Ray is not initialised (unit tests, ``s43-ray gate``, the
driver after ``ray.shutdown()``), and never raises: a metric must not fail a member. The metric
objects are created on first use in each process (driver or worker), once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import ray

from .stores import hooks
from .stores.hooks import Request

log = logging.getLogger("s43_ray.metrics")

Operation = Literal["put", "get", "head", "list", "delete"]
OPERATIONS: tuple[Operation, ...] = ("put", "get", "head", "list", "delete")
# An operation or codec outside the closed sets is recorded as this, so a caller's typo cannot
# grow the number of series.
OTHER = "other"
# What an object is, as the ``codec`` tag says it: a member object's codec, a control object
# (``_run.json``, ``_gate.json``), or nothing (LIST, DELETE).
CodecTag = Literal["npz", "arrow", "json", "none", "other"]
CODEC_TAGS: tuple[CodecTag, ...] = ("npz", "arrow", "json", "none", "other")
# Seconds, 1 ms to 60 s: a small PUT on a LAN is a few ms, a 256 MiB body on a slow link tens
# of seconds; 60 s is the client's read timeout (StoreConfig.read_timeout).
S3_LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                         0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# botocore's operation names (retry handler) and the store's own (error messages) -> our tag.
_OPERATION_ALIASES: dict[str, Operation] = {
    "putobject": "put", "getobject": "get", "headobject": "head", "listobjectsv2": "list",
    "listobjects": "list", "deleteobject": "delete"}
# The object metadata key and value s43 writes (s43_ray.codec.META_CODEC; manifest.py, driver.py).
_META_CODEC = "s43-codec"
_META_KIND = "s43-kind"

# Names as defined; Ray exports them with a ``ray_`` prefix (and ``_total`` for counters).
S3_REQUEST_SECONDS = "s43_s3_request_seconds"
S3_WRITE_BYTES = "s43_s3_write_bytes"
S3_READ_BYTES = "s43_s3_read_bytes"
S3_ERRORS = "s43_s3_errors"
S3_RETRIES = "s43_s3_retries"
GATE_OUTCOMES = "s43_gate_outcomes"
COHORT_EXPECTED = "s43_cohort_expected_members"
COHORT_COUNTED = "s43_cohort_counted_members"
METRIC_NAMES = (S3_REQUEST_SECONDS, S3_WRITE_BYTES, S3_READ_BYTES, S3_ERRORS, S3_RETRIES,
                GATE_OUTCOMES, COHORT_EXPECTED, COHORT_COUNTED)
# Ray's Prometheus namespace, and the exported name of each metric.
PROMETHEUS_PREFIX = "ray_"
EXPORTED_NAMES: dict[str, str] = {
    S3_REQUEST_SECONDS: "ray_s43_s3_request_seconds",  # _bucket, _count, _sum
    S3_WRITE_BYTES: "ray_s43_s3_write_bytes_total",
    S3_READ_BYTES: "ray_s43_s3_read_bytes_total",
    S3_ERRORS: "ray_s43_s3_errors_total",
    S3_RETRIES: "ray_s43_s3_retries_total",
    GATE_OUTCOMES: "ray_s43_gate_outcomes_total",
    COHORT_EXPECTED: "ray_s43_cohort_expected_members",
    COHORT_COUNTED: "ray_s43_cohort_counted_members",
}


@dataclass(frozen=True)
class _Metrics:
    """This process's metric objects (``ray.util.metrics`` types)."""

    s3_seconds: Any
    write_bytes: Any
    read_bytes: Any
    errors: Any
    retries: Any
    gate: Any
    expected: Any
    counted: Any


_lock = threading.Lock()
_defined: _Metrics | None = None
_warned = False  # one WARNING per process when recording fails, not one per call


def _define() -> _Metrics:
    from ray.util.metrics import Counter, Gauge, Histogram

    return _Metrics(
        s3_seconds=Histogram(S3_REQUEST_SECONDS,
                             "S3 request latency in seconds, retries included",
                             boundaries=list(S3_LATENCY_BUCKETS),
                             tag_keys=("operation", "codec")),
        write_bytes=Counter(S3_WRITE_BYTES, "Bytes written to S3 by successful PUTs",
                            tag_keys=("codec",)),
        read_bytes=Counter(S3_READ_BYTES, "Bytes read from S3 by successful GETs",
                           tag_keys=("codec",)),
        errors=Counter(S3_ERRORS, "S3 requests that failed after retries, by error class",
                       tag_keys=("operation", "error_class")),
        retries=Counter(S3_RETRIES, "S3 attempts retried by botocore",
                        tag_keys=("operation",)),
        gate=Counter(GATE_OUTCOMES, "Cohort gate verdicts, by status", tag_keys=("status",)),
        expected=Gauge(COHORT_EXPECTED, "Members the run's cohort must have",
                       tag_keys=("run_id", "store")),
        counted=Gauge(COHORT_COUNTED, "Members the gate found present and verified",
                      tag_keys=("run_id", "store")),
    )


def _metrics() -> _Metrics | None:
    """This process's metrics, created on first use; None when Ray is not initialised."""
    global _defined
    if not ray.is_initialized():
        return None
    if _defined is None:
        with _lock:
            if _defined is None:
                _defined = _define()
    return _defined


@contextlib.contextmanager
def _never_raise(what: str) -> Iterator[None]:
    global _warned
    try:
        yield
    except Exception as exc:  # a metric must never fail a member or a run
        if not _warned:
            _warned = True
            log.warning("metrics: recording %s failed (%s: %s); further failures are not logged",
                        what, type(exc).__name__, exc)


def operation_tag(op: str) -> str:
    """``put``/``get``/``head``/``list``/``delete`` from ours, the store's (``PUT``) or
    botocore's (``PutObject``) name; anything else is ``other``."""
    low = op.lower()
    if low in OPERATIONS:
        return low
    return _OPERATION_ALIASES.get(low, OTHER)


def codec_tag(metadata: Mapping[str, str] | None = None, content_type: str | None = None) -> str:
    """The ``codec`` tag of an object from its S3 metadata: ``npz``/``arrow`` for members,
    ``json`` for control objects (``_run.json``, ``_gate.json``), else ``other``."""
    meta = metadata or {}
    codec = meta.get(_META_CODEC)
    if codec in ("npz", "arrow"):
        return codec
    if meta.get(_META_KIND) or (content_type or "").startswith("application/json"):
        return "json"
    return OTHER


def _codec(codec: str) -> str:
    return codec if codec in CODEC_TAGS else OTHER


def record_s3(op: str, codec: str, seconds: float, nbytes: int = 0) -> None:
    """One S3 request finished (succeeded or failed), ``seconds`` from call to answer, retries
    included. ``nbytes`` is the body written (put) or read (get), 0 otherwise or on failure."""
    m = _metrics()
    if m is None:
        return
    with _never_raise(S3_REQUEST_SECONDS):
        operation, tag = operation_tag(op), _codec(codec)
        m.s3_seconds.observe(max(0.0, float(seconds)), {"operation": operation, "codec": tag})
        if nbytes > 0 and operation == "put":
            m.write_bytes.inc(nbytes, {"codec": tag})
        elif nbytes > 0 and operation == "get":
            m.read_bytes.inc(nbytes, {"codec": tag})


def record_s3_error(op: str, error_class: str) -> None:
    """An S3 request failed after retries, with the project's error class (``auth``,
    ``throttled``, ``unreachable``, ``not_found``, ...; see errors.py)."""
    m = _metrics()
    if m is None:
        return
    with _never_raise(S3_ERRORS):
        m.errors.inc(1, {"operation": operation_tag(op), "error_class": error_class or OTHER})


def record_retry(op: str) -> None:
    """botocore retried one attempt of ``op`` (ours or botocore's operation name)."""
    m = _metrics()
    if m is None:
        return
    with _never_raise(S3_RETRIES):
        m.retries.inc(1, {"operation": operation_tag(op)})


def record_cohort(run_id: str, expected: int, counted: int, store: str = "") -> None:
    """The gate's count for a run: members expected, and present and verified."""
    m = _metrics()
    if m is None:
        return
    with _never_raise(COHORT_EXPECTED):
        tags = {"run_id": run_id, "store": store}
        m.expected.set(int(expected), tags)
        m.counted.set(int(counted), tags)


def record_gate(status: str) -> None:
    """One gate verdict: ``passed`` or ``failed``."""
    m = _metrics()
    if m is None:
        return
    with _never_raise(GATE_OUTCOMES):
        m.gate.inc(1, {"status": status if status in ("passed", "failed") else OTHER})


def _on_request(req: Request, seconds: float, exc: BaseException | None) -> None:
    """A store call ended (:mod:`s43_ray.stores.hooks`): its latency always, its bytes on
    success, and one error when it failed with an ``error_class`` (the project's
    :class:`~s43_ray.errors.S43Error`)."""
    known = req.metadata is not None or req.content_type is not None
    codec = codec_tag(req.metadata, req.content_type) if known else "none"
    if exc is None:
        record_s3(req.op, codec, seconds, req.nbytes)
        return
    record_s3(req.op, codec, seconds)
    error_class = getattr(exc, "error_class", None)
    if isinstance(error_class, str):
        record_s3_error(req.op, error_class)


def watch_stores() -> None:
    """Record every store call and retry of this process (idempotent; cheap when Ray is not
    initialised). Called where stores are used on Ray: the persist and gate tasks, the driver."""
    hooks.subscribe(on_request=_on_request, on_retry=record_retry)
