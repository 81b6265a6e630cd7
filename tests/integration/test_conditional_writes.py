"""Conditional writes, ETags and the health probe of ``S3Store`` against the real SeaweedFS."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from s43_ray.config import StoreConfig
from s43_ray.errors import EXIT_UNREACHABLE, AccessDenied, PreconditionFailed, StoreUnreachable
from s43_ray.stores.local_s3 import LocalS3, free_ports
from s43_ray.stores.s3 import BOTO3_GET_MIN_BYTES, S3Store

pytestmark = pytest.mark.s3


def test_create_if_absent_refuses_a_second_writer(store: S3Store, store_cfg: StoreConfig,
                                                  s3_server: LocalS3) -> None:
    key = f"{store_cfg.prefix}/claim.json"
    store.put(key, b"first", metadata={"owner": "a"}, if_none_match=True)

    with pytest.raises(PreconditionFailed) as info:
        store.put(key, b"second", metadata={"owner": "b"}, if_none_match=True)

    assert str(info.value) == (f"PUT s3://{store_cfg.bucket}/{key} at {s3_server.endpoint_url}: "
                               "precondition failed: the key already exists (If-None-Match: *)")
    assert info.value.error_class == "conflict" and info.value.exit_code == EXIT_UNREACHABLE
    body, got = store.get(key)
    assert bytes(body) == b"first" and got.metadata == {"owner": "a"}


def test_if_match_with_the_current_etag_replaces_the_object(store: S3Store,
                                                            store_cfg: StoreConfig) -> None:
    key = f"{store_cfg.prefix}/state.json"
    first = store.put(key, b"v1", metadata={"v": "1"})
    assert first is not None

    second = store.put(key, b"v2", metadata={"v": "2"}, if_match=first)

    assert second is not None and second != first
    body, got = store.get(key)
    assert bytes(body) == b"v2" and got.metadata == {"v": "2"} and got.etag == second


def test_if_match_with_a_stale_etag_is_refused(store: S3Store, store_cfg: StoreConfig) -> None:
    key = f"{store_cfg.prefix}/state.json"
    stale = store.put(key, b"v1", metadata={})
    assert stale is not None
    store.put(key, b"v2", metadata={})  # another writer since

    with pytest.raises(PreconditionFailed) as info:
        store.put(key, b"v3", metadata={}, if_match=stale)

    assert key in str(info.value) and f"(If-Match: {stale})" in str(info.value)
    assert bytes(store.get(key)[0]) == b"v2"


def test_if_match_on_an_absent_key_is_refused(store: S3Store, store_cfg: StoreConfig) -> None:
    key = f"{store_cfg.prefix}/never-written"

    with pytest.raises(PreconditionFailed, match="never-written"):
        store.put(key, b"v1", metadata={}, if_match='"0123456789abcdef0123456789abcdef"')

    assert [o.key for o in store.list(store_cfg.prefix + "/")] == []


def test_etag_from_put_is_the_one_head_get_and_list_report(store: S3Store,
                                                           store_cfg: StoreConfig) -> None:
    small, large = f"{store_cfg.prefix}/small", f"{store_cfg.prefix}/large"
    etags = {small: store.put(small, b"payload", metadata={}),
             large: store.put(large, b"x" * BOTO3_GET_MIN_BYTES, metadata={})}

    listed = {o.key: o.etag for o in store.list(store_cfg.prefix + "/")}
    assert listed == etags
    for key, etag in etags.items():
        assert etag is not None and etag.startswith('"') and etag.endswith('"')
        assert store.head(key).etag == etag
        assert store.get(key)[1].etag == etag  # obstore's GET
        assert store.get(key, size_hint=BOTO3_GET_MIN_BYTES)[1].etag == etag  # boto3's GET


def test_a_head_etag_can_be_passed_back_as_if_match(store: S3Store,
                                                    store_cfg: StoreConfig) -> None:
    key = f"{store_cfg.prefix}/state.json"
    store.put(key, b"v1", metadata={})

    new = store.put(key, b"v2", metadata={}, if_match=store.head(key).etag)

    assert store.head(key).etag == new


def test_racing_create_if_absent_has_exactly_one_winner(store: S3Store,
                                                        store_cfg: StoreConfig) -> None:
    key = f"{store_cfg.prefix}/claim.json"
    start = threading.Barrier(8)
    winners: list[int] = []
    refused: list[int] = []

    def claim(i: int) -> None:
        start.wait()
        try:
            store.put(key, f"writer-{i}".encode(), metadata={"owner": str(i)},
                      if_none_match=True)
            winners.append(i)
        except PreconditionFailed:
            refused.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(winners) == 1 and len(refused) == 7
    body, got = store.get(key)
    assert bytes(body) == f"writer-{winners[0]}".encode()
    assert got.metadata == {"owner": str(winners[0])}


def test_probe_of_the_live_server_passes(store: S3Store) -> None:
    store.probe(timeout=5.0)


def test_probe_with_a_wrong_secret_raises_access_denied(store_cfg: StoreConfig) -> None:
    from s43_ray.config import Secret

    cfg = StoreConfig(bucket=store_cfg.bucket, prefix=store_cfg.prefix,
                      endpoint_url=store_cfg.endpoint_url, region="us-east-1",
                      access_key_id=Secret("WRONGKEY0000"),
                      secret_access_key=Secret("wrong-secret-probe"))

    with pytest.raises(AccessDenied, match="LIST"):
        S3Store(cfg).probe(timeout=5.0)


def test_probe_of_a_closed_port_raises_unreachable_fast(store_cfg: StoreConfig) -> None:
    (port,) = free_ports(1)
    cfg = StoreConfig(bucket=store_cfg.bucket, prefix="p", endpoint_url=f"http://127.0.0.1:{port}",
                      region="us-east-1", max_attempts=5)  # the probe never retries

    t0 = time.monotonic()
    with pytest.raises(StoreUnreachable) as info:
        S3Store(cfg).probe(timeout=5.0)

    assert time.monotonic() - t0 < 2.0  # refused at once: no timeout, no retry
    assert f"127.0.0.1:{port}" in str(info.value) and str(info.value).endswith("(probe)")


def test_probe_of_a_stopped_server_raises_unreachable_within_its_timeout(
        tmp_path: Path, aws_env: dict[str, str]) -> None:
    """A frozen server still accepts connections (the kernel does) but never answers: the probe
    gives up after its timeout instead of waiting out the store's 60 s read timeout and retries.
    A server of this test's own, so the session's is never stopped."""
    server = LocalS3(tmp_path / "frozen", bucket="s43-frozen")
    server.start()
    try:
        assert server.proc is not None
        pid = server.proc.pid
        store = S3Store(server.store_config(prefix="p", max_attempts=5))
        store.probe(timeout=1.0)  # answers; its connection stays in the pool
        os.kill(pid, signal.SIGSTOP)
        try:
            for timeout in (1.0, 1.5):  # a pooled connection, then a fresh one
                t0 = time.monotonic()
                with pytest.raises(StoreUnreachable) as info:
                    store.probe(timeout=timeout)
                elapsed = time.monotonic() - t0
                assert elapsed < timeout + 2.0
                assert str(info.value) == (f"LIST s3://s43-frozen/p/ at {server.endpoint_url}: "
                                           f"no answer within {timeout:g}s (probe)")
        finally:
            os.kill(pid, signal.SIGCONT)
        store.probe(timeout=5.0)  # thawed, it answers again
    finally:
        server.stop()


@pytest.mark.parametrize("put_client", ["auto", "boto3"])
def test_member_writes_are_fenced_against_a_late_write_of_an_earlier_attempt(
        store_cfg: StoreConfig, put_client: str) -> None:
    """The ghost of the namespaced smoke, on SeaweedFS through either PUT client: attempt 1's
    create arrives after ``--resume`` wrote the member; it is refused, and the object stays
    attempt 2's. A later attempt replaces an earlier one's object (If-Match on the ETag it
    read); once attempt 2 is claimed, attempt 1 finding the key taken writes nothing."""
    from dataclasses import replace

    from s43_ray.task import PersistFailure, PredictionRef, TaskSpec, persist_member

    cfg = replace(store_cfg, put_client=put_client)
    live = S3Store(cfg)

    def spec(attempt: int) -> TaskSpec:
        return TaskSpec(store=cfg, run_id="fence__2026-12-01", codec="arrow", rows=64,
                        predictor="s43_ray.predict:default_predictor", attempt=attempt)

    layout = spec(1).layout
    key = layout.member_key("m00001", "arrow")
    first = persist_member(live, spec(1), "m00001")  # landed before the resume: replaced
    assert isinstance(first, PredictionRef)
    live.put(layout.attempt_key(2), b"{}", metadata={}, if_none_match=True)  # the resume's claim
    second = persist_member(live, spec(2), "m00001")
    assert isinstance(second, PredictionRef) and second.run_attempt == 2
    written = live.head(key)
    assert written.metadata["s43-attempt"] == "2" and written.etag

    body, info = live.get(key)
    with pytest.raises(PreconditionFailed):  # attempt 1's create, delivered late
        live.put(key, bytes(body), metadata={**info.metadata, "s43-attempt": "1"},
                 if_none_match=True)
    stale = persist_member(live, spec(1), "m00001")  # a task of attempt 1 still running
    assert isinstance(stale, PersistFailure) and stale.error_class == "superseded"
    assert "is stale, nothing written" in stale.message

    now = live.head(key)
    assert now.metadata["s43-attempt"] == "2"
    assert (now.etag, now.last_modified) == (written.etag, written.last_modified)
