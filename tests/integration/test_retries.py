"""Transient S3 faults are retried by botocore (standard mode: exponential backoff with jitter),
with one warning per retry naming its attempt; faults that cannot succeed are not retried.

Faults are injected on the wire by a proxy in front of the real SeaweedFS server, so what is
tested is the real client, the real retry policy and the real server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faults import FaultProxy, Rule
from helpers import keys_under

from s43_ray.config import StoreConfig
from s43_ray.errors import AccessDenied, NoSuchBucket
from s43_ray.stores.local_s3 import LocalS3
from s43_ray.stores.s3 import S3Store

pytestmark = [pytest.mark.ray, pytest.mark.s3]
Cli = Any


@pytest.fixture
def proxy(s3_server: LocalS3) -> Iterator[FaultProxy]:
    p = FaultProxy(s3_server.endpoint_url).start()
    yield p
    p.stop()


def _worker_log_lines(text: str, endpoint: str, wait: float = 10.0) -> list[str]:
    """Lines of the session's Ray worker logs containing ``text`` and this test's endpoint
    (each retry is logged by the worker that made it; on a cluster these are the pod logs)."""
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    deadline = time.monotonic() + wait
    while True:
        found = [ln for f in sorted(logs.glob("worker-*.err"))
                 for ln in f.read_text(errors="replace").splitlines()
                 if text in ln and endpoint in ln]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _args(store_cfg: StoreConfig, proxy: FaultProxy, attempts: int = 4) -> list[str]:
    return ["--store", store_cfg.url, "--endpoint-url", proxy.endpoint_url,
            "--max-attempts", str(attempts)]


def test_throttled_and_failed_puts_are_retried_and_the_run_passes(
        cli: Cli, store_cfg: StoreConfig, proxy: FaultProxy, store: S3Store) -> None:
    proxy.add(Rule("PUT", "/m00001.arrow", "status", 503, "SlowDown", times=2))
    proxy.add(Rule("PUT", "/m00002.arrow", "status", 500, "InternalError", times=1))
    result = cli("run", *_args(store_cfg, proxy), "--run-id", "retry-1", "--cohort-size", "3",
                 "--rows", "100", "--json")
    assert result.code == 0, result.stderr
    s = result.summary
    assert s["cohort_count"] == 3 and s["s3_retries"] == 3
    # The proxy saw every attempt: two refusals then success, one refusal then success.
    assert proxy.count("PUT", "/m00001.arrow") == 3
    assert proxy.count("PUT", "/m00002.arrow") == 2
    assert proxy.count("PUT", "/m00000.arrow") == 1
    persisted = {e["member"]: e for e in result.named("s43_pred_persisted")}
    assert persisted["m00001"]["s3_retries"] == 2 and persisted["m00002"]["s3_retries"] == 1
    # One warning line per retry, with its attempt number, in the Ray workers' own logs.
    warnings = _worker_log_lines("s3 PutObject retry attempt", proxy.endpoint_url)
    assert len(warnings) == 3, warnings
    assert sum("attempt 2" in w for w in warnings) == 2 and sum("attempt 3" in w
                                                              for w in warnings) == 1
    assert len(keys_under(store, f"{store_cfg.prefix}/retry-1/")) == 5


def test_a_reset_connection_is_retried(cli: Cli, store_cfg: StoreConfig,
                                       proxy: FaultProxy) -> None:
    proxy.add(Rule("PUT", "/m00000.arrow", "reset", times=1))
    result = cli("run", *_args(store_cfg, proxy), "--run-id", "retry-reset", "--cohort-size",
                 "2", "--rows", "100", "--json")
    assert result.code == 0, result.stderr
    assert proxy.count("PUT", "/m00000.arrow") == 2
    assert result.summary["s3_retries"] == 1


def test_failed_gate_reads_are_retried(cli: Cli, store_cfg: StoreConfig,
                                       proxy: FaultProxy,
                                       caplog: pytest.LogCaptureFixture) -> None:
    proxy.add(Rule("GET", "/m00001.npz", "status", 503, "SlowDown", times=1))
    proxy.add(Rule("GET", "list-type", "status", 500, "InternalError", times=0))  # no-op rule
    result = cli("run", *_args(store_cfg, proxy), "--run-id", "retry-get", "--cohort-size", "2",
                 "--rows", "100", "--format", "npz", "--json")
    assert result.code == 0, result.stderr
    assert proxy.count("GET", "/m00001.npz") == 2
    # The driver verifies members as they arrive (s43_ray.early), so the retried GET is the
    # driver's or, if the gate task verified that member itself, a worker's: logged once.
    in_driver = caplog.text.count("s3 GetObject retry attempt 2")
    in_workers = len(_worker_log_lines("s3 GetObject retry attempt 2", proxy.endpoint_url))
    assert in_driver + in_workers == 1, (in_driver, in_workers)


def test_throttling_past_the_attempt_budget_fails_closed_naming_the_member(
        cli: Cli, store_cfg: StoreConfig, proxy: FaultProxy, store: S3Store) -> None:
    proxy.add(Rule("PUT", "/m00001.arrow", "status", 503, "SlowDown", times=None))
    result = cli("run", *_args(store_cfg, proxy, attempts=3), "--run-id", "retry-budget",
                 "--cohort-size", "3", "--rows", "100", "--json")
    assert result.code == 3  # a store failure, not a verdict on the predictions
    assert proxy.count("PUT", "/m00001.arrow") == 3  # exactly the budget
    failed = result.named("s43_pred_persist_failed")
    assert len(failed) == 1
    assert failed[0]["member"] == "m00001" and failed[0]["severity"] == "error"
    assert failed[0]["error_class"] == "throttled" and failed[0]["attempts"] == 3
    s = result.summary
    assert s["status"] == "failed" and s["missing"] == ["m00001"] and s["cohort_count"] == 2
    assert "m00001" in s["persist_failed"]
    assert s["s3_retries"] == 2  # the failed member's two retries are counted too
    assert keys_under(store, f"{store_cfg.prefix}/retry-budget/m00001") == []


def test_access_denied_is_not_retried(cli: Cli, store_cfg: StoreConfig,
                                      proxy: FaultProxy) -> None:
    proxy.add(Rule("PUT", "/m00000.arrow", "status", 403, "AccessDenied", times=None))
    result = cli("run", *_args(store_cfg, proxy), "--run-id", "retry-denied", "--cohort-size",
                 "2", "--rows", "100", "--json")
    assert result.code == 3
    assert proxy.count("PUT", "/m00000.arrow") == 1
    failed = result.named("s43_pred_persist_failed")
    assert [(f["member"], f["error_class"], f["attempts"]) for f in failed] == [
        ("m00000", "auth", 1)]
    assert _worker_log_lines("retry attempt", proxy.endpoint_url) == []


def test_no_such_bucket_is_not_retried(store_cfg: StoreConfig, proxy: FaultProxy) -> None:
    proxy.add(Rule("GET", "/", "status", 404, "NoSuchBucket", times=None))
    store = S3Store(StoreConfig(bucket=store_cfg.bucket, prefix=store_cfg.prefix,
                                endpoint_url=proxy.endpoint_url, max_attempts=5))
    with pytest.raises(NoSuchBucket, match="no such bucket"):
        store.check()
    assert len(proxy.seen) == 1


def test_a_read_timeout_is_retried(store_cfg: StoreConfig, proxy: FaultProxy,
                                   store: S3Store) -> None:
    key = f"{store_cfg.prefix}/timeout/object.bin"
    store.put(key, b"payload", metadata={})
    proxy.add(Rule("GET", "/timeout/object.bin", "delay", delay=3.0, times=1))
    slow = S3Store(StoreConfig(bucket=store_cfg.bucket, prefix=store_cfg.prefix,
                               endpoint_url=proxy.endpoint_url, read_timeout=1.0,
                               max_attempts=3))
    body, _ = slow.get(key)
    assert bytes(body) == b"payload"
    assert proxy.count("GET", "/timeout/object.bin") >= 1 and slow.retries >= 1


def test_access_denied_on_check_names_the_endpoint_and_bucket(
        store_cfg: StoreConfig, proxy: FaultProxy) -> None:
    proxy.add(Rule("*", "/", "status", 403, "AccessDenied", times=None))
    store = S3Store(StoreConfig(bucket=store_cfg.bucket, prefix=store_cfg.prefix,
                                endpoint_url=proxy.endpoint_url, max_attempts=5))
    with pytest.raises(AccessDenied) as info:
        store.check()
    assert proxy.endpoint_url in str(info.value) and store_cfg.bucket in str(info.value)
    assert len(proxy.seen) == 1
