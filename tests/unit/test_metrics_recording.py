"""s43_ray.metrics without Ray: recording is a cheap no-op that never raises and never starts Ray.

That the metrics reach Prometheus through a Ray node's metrics port is
tests/integration/test_metrics.py's job.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from s43_ray import metrics
from s43_ray.errors import AccessDenied
from s43_ray.stores import hooks

# 10,000 recordings of each kind must take well under this on a shared 2-core machine.
NOOP_BUDGET_S = 1.0


def record_everything() -> None:
    metrics.record_s3("put", "arrow", 0.01, 100)
    metrics.record_s3("GetObject", "npz", 0.02, 100)
    metrics.record_s3_error("PUT", "throttled")
    metrics.record_retry("PutObject")
    metrics.record_cohort("manual__2026-11-28T10:00:00+00:00", 4, 3, "s3://b/p")
    metrics.record_gate("failed")
    with hooks.request("list"):
        pass


def test_recording_without_ray_is_a_cheap_no_op_that_never_starts_ray(
        ray_init_attempts: list[tuple[Any, ...]]) -> None:
    metrics.watch_stores()
    t0 = time.perf_counter()
    for _ in range(10_000):
        record_everything()
    elapsed = time.perf_counter() - t0

    assert ray_init_attempts == []
    assert elapsed < NOOP_BUDGET_S * 7, f"{elapsed:.2f}s for 70,000 no-op recordings"


def test_a_store_request_that_fails_is_recorded_with_its_error_class_and_reraised(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, ...]] = []
    monkeypatch.setattr(metrics, "record_s3", lambda *a: seen.append(("s3", *a[:2])))
    monkeypatch.setattr(metrics, "record_s3_error", lambda *a: seen.append(("error", *a)))
    metrics.watch_stores()
    err = AccessDenied("PUT s3://b/k at http://x: access denied (AccessDenied)")

    with pytest.raises(AccessDenied) as caught, hooks.request(
            "put", metadata={"s43-codec": "arrow"}, nbytes=10):
        raise err

    assert caught.value is err
    assert seen == [("s3", "put", "arrow"), ("error", "put", "auth")]


def test_a_get_is_recorded_with_the_codec_and_size_the_answer_names(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, ...]] = []
    monkeypatch.setattr(metrics, "record_s3",
                        lambda op, codec, seconds, nbytes=0: seen.append((op, codec, nbytes)))
    metrics.watch_stores()

    with hooks.request("get") as req:
        req.metadata, req.nbytes = {"s43-codec": "npz"}, 123
    with hooks.request("list"):
        pass

    assert seen == [("get", "npz", 123), ("list", "none", 0)]


@pytest.mark.parametrize(("name", "tag"), [
    ("put", "put"), ("PUT", "put"), ("PutObject", "put"), ("GetObject", "get"),
    ("GET", "get"), ("HeadObject", "head"), ("ListObjectsV2", "list"), ("LIST", "list"),
    ("DeleteObject", "delete"), ("CreateBucket", "other"), ("", "other")])
def test_operation_names_map_to_a_closed_set(name: str, tag: str) -> None:
    assert metrics.operation_tag(name) == tag


@pytest.mark.parametrize(("metadata", "content_type", "tag"), [
    ({"s43-codec": "arrow"}, None, "arrow"),
    ({"s43-codec": "npz"}, "application/octet-stream", "npz"),
    ({"s43-kind": "manifest"}, "application/json", "json"),
    ({}, "application/json", "json"),
    ({"s43-codec": "pickle"}, None, "other"),
    (None, None, "other")])
def test_codec_tag_comes_from_the_objects_metadata(metadata: dict[str, str] | None,
                                                   content_type: str | None, tag: str) -> None:
    assert metrics.codec_tag(metadata, content_type) == tag


def test_exported_names_are_rays_prefix_plus_ours() -> None:
    assert set(metrics.EXPORTED_NAMES) == set(metrics.METRIC_NAMES)
    for name, exported in metrics.EXPORTED_NAMES.items():
        assert name.startswith("s43_")
        assert exported.removesuffix("_total") == metrics.PROMETHEUS_PREFIX + name
    assert list(metrics.S3_LATENCY_BUCKETS) == sorted(metrics.S3_LATENCY_BUCKETS)
    assert metrics.S3_LATENCY_BUCKETS[0] == 0.001 and metrics.S3_LATENCY_BUCKETS[-1] == 60
