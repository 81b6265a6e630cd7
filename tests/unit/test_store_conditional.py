"""Conditional writes, ETags and the health probe of the local stores (pure: no Ray, no S3).

The same behaviour against the real S3 server: tests/integration/test_conditional_writes.py.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

import s43_ray.stores.s3 as store_module
from s43_ray.config import FileStoreConfig, StoreConfig
from s43_ray.errors import (
    EXIT_UNREACHABLE,
    NoSuchBucket,
    ObjectNotFound,
    PreconditionFailed,
    StoreUnreachable,
)
from s43_ray.stores.base import Store
from s43_ray.stores.file import FILE_TMP_DIR, FileStore
from s43_ray.stores.memory import MemoryStore
from s43_ray.stores.s3 import S3Store, translate

KEY = "p/run/claim.json"


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return MemoryStore()
    return FileStore(FileStoreConfig(root=str(tmp_path)))


def test_create_if_absent_succeeds_once(store: Store) -> None:
    etag = store.put(KEY, b"first", metadata={"owner": "a"}, if_none_match=True)

    body, info = store.get(KEY)
    assert bytes(body) == b"first" and info.metadata == {"owner": "a"}
    assert etag is not None and info.etag == etag


def test_create_if_absent_refuses_a_second_writer(store: Store) -> None:
    store.put(KEY, b"first", metadata={"owner": "a"}, if_none_match=True)

    with pytest.raises(PreconditionFailed) as info:
        store.put(KEY, b"second", metadata={"owner": "b"}, if_none_match=True)

    message = str(info.value)
    assert KEY in message and "already exists" in message and "If-None-Match: *" in message
    assert info.value.error_class == "conflict" and info.value.exit_code == EXIT_UNREACHABLE
    body, meta = store.get(KEY)
    assert bytes(body) == b"first" and meta.metadata == {"owner": "a"}  # untouched


def test_if_match_with_the_current_etag_replaces_and_returns_a_new_etag(store: Store) -> None:
    first = store.put(KEY, b"v1", metadata={"v": "1"})
    assert first is not None

    second = store.put(KEY, b"v2", metadata={"v": "2"}, if_match=first)

    assert second is not None and second != first
    body, info = store.get(KEY)
    assert bytes(body) == b"v2" and info.metadata == {"v": "2"} and info.etag == second


def test_if_match_with_a_stale_etag_is_refused(store: Store) -> None:
    stale = store.put(KEY, b"v1", metadata={})
    assert stale is not None
    current = store.put(KEY, b"v2", metadata={})  # someone else wrote since

    with pytest.raises(PreconditionFailed) as info:
        store.put(KEY, b"v3", metadata={}, if_match=stale)

    assert KEY in str(info.value) and f"If-Match: {stale}" in str(info.value)
    assert bytes(store.get(KEY)[0]) == b"v2" and store.head(KEY).etag == current


def test_if_match_on_an_absent_key_is_refused(store: Store) -> None:
    with pytest.raises(PreconditionFailed, match="does not exist"):
        store.put(KEY, b"v1", metadata={}, if_match='"deadbeef"')

    assert list(store.list("p/")) == []


def test_rewriting_identical_bytes_changes_the_etag(store: Store) -> None:
    first = store.put(KEY, b"same", metadata={})
    second = store.put(KEY, b"same", metadata={})

    assert first != second
    with pytest.raises(PreconditionFailed):
        store.put(KEY, b"same", metadata={}, if_match=first)


def test_etag_is_in_head_get_and_list(store: Store) -> None:
    etag = store.put(KEY, b"payload", metadata={})

    head = store.head(KEY)
    _, got = store.get(KEY)
    (listed,) = list(store.list("p/run/"))

    assert etag is not None and etag.startswith('"') and etag.endswith('"')
    assert head.etag == got.etag == listed.etag == etag


def test_a_head_etag_can_be_passed_back_as_if_match(store: Store) -> None:
    store.put(KEY, b"v1", metadata={})

    new = store.put(KEY, b"v2", metadata={}, if_match=store.head(KEY).etag)

    assert store.head(KEY).etag == new


def test_both_conditions_at_once_are_a_usage_error(store: Store) -> None:
    with pytest.raises(ValueError, match="not both"):
        store.put(KEY, b"x", metadata={}, if_none_match=True, if_match='"e"')


def test_threads_racing_create_if_absent_have_exactly_one_winner(store: Store) -> None:
    start = threading.Barrier(8)
    winners: list[int] = []
    refused: list[int] = []

    def claim(i: int) -> None:
        start.wait()
        try:
            store.put(KEY, f"writer-{i}".encode(), metadata={}, if_none_match=True)
            winners.append(i)
        except PreconditionFailed:
            refused.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(winners) == 1 and len(refused) == 7
    assert bytes(store.get(KEY)[0]) == f"writer-{winners[0]}".encode()


def test_memory_store_sees_entries_replaced_directly_as_changed() -> None:
    store = MemoryStore()
    etag = store.put(KEY, b"v1", metadata={})
    body, meta, ts = store.objects[KEY]
    store.objects[KEY] = (body, dict(meta), ts)  # what tests do to fake a rewrite

    assert store.head(KEY).etag != etag
    with pytest.raises(PreconditionFailed):
        store.put(KEY, b"v2", metadata={}, if_match=etag)


def test_probe_of_a_working_store_passes(store: Store) -> None:
    store.probe(timeout=1.0)


def test_file_store_probe_of_a_missing_root_raises(tmp_path: Path) -> None:
    store = FileStore(FileStoreConfig(root=str(tmp_path / "not-mounted")))

    with pytest.raises(NoSuchBucket, match="not-mounted"):
        store.probe(timeout=1.0)
    assert not (tmp_path / "not-mounted").exists()


def test_file_store_probe_of_a_hung_mount_raises_unreachable_in_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(FileStoreConfig(root=str(tmp_path)))
    release = threading.Event()
    monkeypatch.setattr(store, "check", lambda: release.wait(10))  # an NFS server gone away
    try:
        with pytest.raises(StoreUnreachable, match=r"no answer within 0\.2s \(probe\)"):
            store.probe(timeout=0.2)
    finally:
        release.set()


def test_s3_probe_answers_in_time_even_when_the_client_hangs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What botocore's timeouts do not bound (a DNS lookup, a credential provider) is cut off
    by the probe's own deadline: timeout + connect timeout + 1 s."""
    release = threading.Event()

    class HungClient:
        def list_objects_v2(self, **_: Any) -> None:
            release.wait(10)

    monkeypatch.setattr(store_module, "probe_client", lambda cfg, timeout: HungClient())
    cfg = StoreConfig(bucket="b", prefix="p", endpoint_url="http://127.0.0.1:9",
                      region="us-east-1", connect_timeout=0.1)
    t0 = time.monotonic()
    try:
        with pytest.raises(StoreUnreachable) as info:
            S3Store(cfg).probe(timeout=0.2)
    finally:
        release.set()

    assert time.monotonic() - t0 < 3.0
    assert str(info.value) == ("LIST s3://b/p/ at http://127.0.0.1:9: no answer within 0.2s "
                               "(probe)")


def test_file_store_unconditional_writes_take_no_lock(tmp_path: Path) -> None:
    store = FileStore(FileStoreConfig(root=str(tmp_path)))
    store.put(KEY, b"x", metadata={})
    assert os.listdir(tmp_path / FILE_TMP_DIR) == []

    store.put("p/run/other", b"x", metadata={}, if_none_match=True)
    assert os.listdir(tmp_path / FILE_TMP_DIR) == [".lock"]  # the lock, no leftover temp file
    assert [o.key for o in store.list("")] == [KEY, "p/run/other"]


def _s3_error(status: int, code: str) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": "m"},
                     "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(("status", "code", "condition", "why"), [
    (412, "PreconditionFailed", "If-None-Match: *", "the key already exists (If-None-Match: *)"),
    (412, "PreconditionFailed", 'If-Match: "e1"',
     'the object changed or was deleted since its ETag was read (If-Match: "e1")'),
    (409, "ConditionalRequestConflict", "If-None-Match: *",
     "a concurrent conditional write to the key won "
     "(ConditionalRequestConflict; If-None-Match: *)"),
    (404, "NoSuchKey", 'If-Match: "e1"', 'the key does not exist (If-Match: "e1")'),
], ids=["exists", "changed", "concurrent", "gone"])
def test_s3_refusals_of_a_condition_are_precondition_failures(status: int, code: str,
                                                              condition: str, why: str) -> None:
    error = translate(_s3_error(status, code), op="PUT", target="s3://b/k",
                       endpoint="http://127.0.0.1:9", condition=condition)

    assert type(error) is PreconditionFailed and error.error_class == "conflict"
    assert str(error) == f"PUT s3://b/k at http://127.0.0.1:9: precondition failed: {why}"


def test_a_missing_key_without_a_condition_is_still_not_found() -> None:
    error = translate(_s3_error(404, "NoSuchKey"), op="GET", target="s3://b/k",
                       endpoint="http://127.0.0.1:9")
    assert type(error) is ObjectNotFound


RACE_KEYS = 40


def _race_create(root: str, name: str, start: Barrier,
                 results: multiprocessing.queues.Queue[tuple[str, list[str]]]) -> None:
    """One process of the race below: claims every key, reports the keys it won."""
    store = FileStore(FileStoreConfig(root=root))
    won = []
    start.wait()
    for i in range(RACE_KEYS):
        try:
            store.put(f"p/run/k{i:03d}", name.encode(), metadata={"owner": name},
                      if_none_match=True)
            won.append(f"p/run/k{i:03d}")
        except PreconditionFailed:
            pass
    results.put((name, won))


def test_processes_racing_create_if_absent_on_a_shared_folder_have_one_winner_per_key(
        tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    results: multiprocessing.queues.Queue[tuple[str, list[str]]] = ctx.Queue()
    procs = [ctx.Process(target=_race_create, args=(str(tmp_path), name, start, results))
             for name in ("writer-a", "writer-b")]
    for p in procs:
        p.start()
    won = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0

    store = FileStore(FileStoreConfig(root=str(tmp_path)))
    assert sorted(won["writer-a"] + won["writer-b"]) == [f"p/run/k{i:03d}"
                                                         for i in range(RACE_KEYS)]
    for name, keys in won.items():
        for key in keys:
            body, info = store.get(key)
            assert bytes(body) == name.encode() and info.metadata == {"owner": name}
