"""``S3Store`` directly against the real SeaweedFS server: the five operations and their errors."""

from __future__ import annotations

import pytest
from helpers import keys_under

import s43_ray.stores.s3 as store_module
from s43_ray.config import Secret, StoreConfig
from s43_ray.errors import AccessDenied, NoSuchBucket, ObjectNotFound, StoreUnreachable
from s43_ray.stores.local_s3 import LocalS3, free_ports
from s43_ray.stores.s3 import S3Store


def test_put_get_head_round_trip(store: S3Store, store_cfg: StoreConfig) -> None:
    key = f"{store_cfg.prefix}/obj.bin"
    body = bytes(range(256)) * 40

    store.put(key, body, metadata={"s43-codec": "npz", "x-note": "hello"})
    got, info = store.get(key)
    head = store.head(key)

    assert bytes(got) == body
    assert info.size == head.size == len(body)
    assert info.metadata["s43-codec"] == "npz" and head.metadata["x-note"] == "hello"
    assert head.last_modified is not None and head.last_modified > 0


def test_put_accepts_a_memoryview_without_copy(store: S3Store, store_cfg: StoreConfig) -> None:
    key = f"{store_cfg.prefix}/view.bin"
    payload = bytearray(b"abc" * 1000)

    store.put(key, memoryview(payload), metadata={})

    assert bytes(store.get(key)[0]) == bytes(payload)


def test_put_overwrites(store: S3Store, store_cfg: StoreConfig) -> None:
    key = f"{store_cfg.prefix}/over.bin"
    store.put(key, b"first", metadata={"v": "1"})
    store.put(key, b"second", metadata={"v": "2"})

    body, info = store.get(key)

    assert bytes(body) == b"second" and info.metadata["v"] == "2"


def test_list_paginates(store: S3Store, store_cfg: StoreConfig,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [f"{store_cfg.prefix}/page/k{i}" for i in range(5)]
    for k in keys:
        store.put(k, k.encode(), metadata={})
    calls: list[int] = []

    def count(params: dict[str, object], **_: object) -> None:
        calls.append(int(params["MaxKeys"]))  # type: ignore[call-overload]

    client = S3Store(store_cfg).client  # the shared per-config client
    client.meta.events.register("provide-client-params.s3.ListObjectsV2", count)
    monkeypatch.setattr(store_module, "LIST_PAGE_SIZE", 2)
    try:
        listed = list(store.list(f"{store_cfg.prefix}/page/"))
    finally:
        client.meta.events.unregister("provide-client-params.s3.ListObjectsV2", count)

    assert [o.key for o in listed] == keys
    assert [o.size for o in listed] == [len(k) for k in keys]
    assert calls == [2, 2, 2]


def test_list_of_empty_prefix_is_empty(store: S3Store, store_cfg: StoreConfig) -> None:
    assert keys_under(store, f"{store_cfg.prefix}/nothing-here/") == []


def test_list_does_not_match_sibling_prefixes(store: S3Store, store_cfg: StoreConfig) -> None:
    store.put(f"{store_cfg.prefix}/run1/a", b"1", metadata={})
    store.put(f"{store_cfg.prefix}/run10/a", b"2", metadata={})

    assert keys_under(store, f"{store_cfg.prefix}/run1/") == [f"{store_cfg.prefix}/run1/a"]


def test_delete_removes_and_absent_key_is_fine(store: S3Store, store_cfg: StoreConfig) -> None:
    key = f"{store_cfg.prefix}/gone.bin"
    store.put(key, b"x", metadata={})

    store.delete(key)
    store.delete(key)
    store.delete(f"{store_cfg.prefix}/never-was")

    assert keys_under(store, store_cfg.prefix + "/") == []


def test_get_and_head_of_absent_key_raise_object_not_found(store: S3Store,
                                                           store_cfg: StoreConfig) -> None:
    key = f"{store_cfg.prefix}/absent.bin"

    with pytest.raises(ObjectNotFound, match=r"absent\.bin"):
        store.get(key)
    with pytest.raises(ObjectNotFound, match=r"absent\.bin"):
        store.head(key)


def test_check_passes_on_a_good_store(store: S3Store) -> None:
    store.check()


def test_wrong_secret_raises_access_denied(s3_server: LocalS3, store_cfg: StoreConfig) -> None:
    cfg = StoreConfig(bucket=store_cfg.bucket, prefix=store_cfg.prefix,
                      endpoint_url=store_cfg.endpoint_url, region="us-east-1", max_attempts=1,
                      access_key_id=Secret("WRONGKEY0000"),
                      secret_access_key=Secret("wrong-secret-7f3a"))

    with pytest.raises(AccessDenied) as info:
        S3Store(cfg).check()
    assert str(s3_server.endpoint_url) in str(info.value)
    assert "wrong-secret-7f3a" not in repr(cfg) + str(info.value)


def test_wrong_secret_with_right_key_raises_access_denied(store_cfg: StoreConfig,
                                                          aws_env: dict[str, str]) -> None:
    cfg = StoreConfig(bucket=store_cfg.bucket, prefix=store_cfg.prefix,
                      endpoint_url=store_cfg.endpoint_url, region="us-east-1", max_attempts=1,
                      access_key_id=Secret(aws_env["AWS_ACCESS_KEY_ID"]),
                      secret_access_key=Secret("wrong-secret"))

    with pytest.raises(AccessDenied) as info:
        S3Store(cfg).put(f"{store_cfg.prefix}/denied", b"x", metadata={})
    assert "wrong-secret" not in str(info.value)


def test_missing_bucket_raises_no_such_bucket(store_cfg: StoreConfig) -> None:
    cfg = StoreConfig(bucket="s43-absent-bucket", prefix="p", endpoint_url=store_cfg.endpoint_url,
                      region="us-east-1", max_attempts=1)

    with pytest.raises(NoSuchBucket, match="s43-absent-bucket"):
        S3Store(cfg).check()


def test_closed_port_raises_store_unreachable(store_cfg: StoreConfig) -> None:
    (port,) = free_ports(1)
    cfg = StoreConfig(bucket=store_cfg.bucket, prefix="p",
                      endpoint_url=f"http://127.0.0.1:{port}", region="us-east-1",
                      max_attempts=1, connect_timeout=2.0)

    with pytest.raises(StoreUnreachable, match=f"127.0.0.1:{port}"):
        S3Store(cfg).check()


def test_other_bucket_is_isolated(store: S3Store, store_cfg: StoreConfig,
                                  other_bucket: str) -> None:
    other = S3Store(StoreConfig(bucket=other_bucket, prefix=store_cfg.prefix,
                                endpoint_url=store_cfg.endpoint_url, region="us-east-1",
                                max_attempts=2))
    key = f"{store_cfg.prefix}/only-there"
    other.put(key, b"x", metadata={})

    assert keys_under(other, store_cfg.prefix + "/") == [key]
    assert keys_under(store, store_cfg.prefix + "/") == []


def test_both_get_paths_return_the_same_object(store: S3Store, store_cfg: StoreConfig) -> None:
    """Large objects known by size go through boto3, the rest through obstore: same bytes,
    metadata and timestamps either way."""
    from s43_ray.stores.s3 import BOTO3_GET_MIN_BYTES

    body = bytes(range(256)) * (BOTO3_GET_MIN_BYTES // 256 + 7)
    key = f"{store_cfg.prefix}/both/large.bin"
    store.put(key, body, metadata={"s43-codec": "npz", "s43-bytes": str(len(body))})
    by_boto3, info_b = store.get(key, size_hint=len(body))
    by_obstore, info_o = store.get(key)
    assert bytes(by_boto3) == bytes(by_obstore) == body
    assert info_b.metadata == info_o.metadata == {"s43-codec": "npz",
                                                  "s43-bytes": str(len(body))}
    assert info_b.size == info_o.size == len(body)
    assert info_b.last_modified == info_o.last_modified
