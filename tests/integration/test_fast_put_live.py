"""Small PUTs signed by s43_ray.stores.s3_fast_put, against the real SeaweedFS server: the
server accepts the signature and checks the CRC64NVME header, the object is the one boto3
would have written, conditions hold, and boto3 takes over where it must.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from s43_ray import codec as codecs
from s43_ray.config import Secret, StoreConfig
from s43_ray.errors import ObjectNotFound, PreconditionFailed, StoreError
from s43_ray.stores import s3_fast_put as fast_put
from s43_ray.stores.s3 import S3Store, client_for

pytestmark = [pytest.mark.s3]

BODY = b"ARROW1 not really, but bytes all the same" * 100


@pytest.fixture
def boto3_puts(store_cfg: StoreConfig) -> Iterator[list[str]]:
    """Keys of the PutObject calls boto3 sends for this config."""
    seen: list[str] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        seen.append(params["Key"])

    client = client_for(store_cfg)
    client.meta.events.register("provide-client-params.s3.PutObject", count)
    yield seen
    client.meta.events.unregister("provide-client-params.s3.PutObject", count)


def test_a_small_put_is_the_object_boto3_would_have_written(
        store: S3Store, store_cfg: StoreConfig, boto3_puts: list[str]) -> None:
    key = f"{store_cfg.prefix}/run/m 1+%~.arrow"
    crc = codecs.checksum(BODY).split(":", 1)[1]
    etag = store.put(key, BODY, metadata={"s43-run": "run", "S43-Member": "m 1"},
                     s3_checksum=crc, content_type="application/vnd.apache.arrow.file")
    assert boto3_puts == []
    head = client_for(store_cfg).head_object(Bucket=store_cfg.bucket, Key=key,
                                            ChecksumMode="ENABLED")
    assert head["ETag"] == etag
    assert head["ContentLength"] == len(BODY)
    assert head["ContentType"] == "application/vnd.apache.arrow.file"
    assert head["Metadata"] == {"s43-run": "run", "s43-member": "m 1"}
    assert head["ChecksumCRC64NVME"] == crc
    body, _ = store.get(key)
    assert bytes(body) == BODY


def test_a_body_that_does_not_match_its_checksum_is_refused_and_not_written(
        store: S3Store, store_cfg: StoreConfig) -> None:
    key = f"{store_cfg.prefix}/run/bad.arrow"
    wrong = codecs.checksum(BODY + b"x").split(":", 1)[1]
    with pytest.raises(StoreError, match=r"PUT s3://.*/bad\.arrow at http://127\.0\.0\.1"):
        store.put(key, BODY, metadata={}, s3_checksum=wrong)
    with pytest.raises(ObjectNotFound):
        store.head(key)


def test_conditions_hold(store: S3Store, store_cfg: StoreConfig, boto3_puts: list[str]) -> None:
    key = f"{store_cfg.prefix}/run/_claim.json"
    first = store.put(key, b"one", metadata={}, if_none_match=True)
    with pytest.raises(PreconditionFailed, match="already exists"):
        store.put(key, b"two", metadata={}, if_none_match=True)
    with pytest.raises(PreconditionFailed, match="changed or was deleted"):
        store.put(key, b"two", metadata={}, if_match='"0123456789abcdef0123456789abcdef"')
    assert first is not None
    store.put(key, b"three", metadata={}, if_match=first)
    assert bytes(store.get(key)[0]) == b"three"
    assert boto3_puts == []


def test_sse_c_objects_need_their_key(s3_server: Any, store_cfg: StoreConfig) -> None:
    key64 = base64.b64encode(bytes(range(32))).decode()
    cfg = replace(store_cfg, sse="sse-c", sse_c_key=Secret(key64))
    key = f"{store_cfg.prefix}/run/secret.arrow"
    S3Store(cfg).put(key, BODY, metadata={})
    assert bytes(S3Store(cfg).get(key)[0]) == BODY
    with pytest.raises(Exception, match="customer key"):
        S3Store(store_cfg).get(key)


@pytest.mark.parametrize("why", ["config", "large", "non-ascii"])
def test_boto3_takes_over_where_it_must(store: S3Store, store_cfg: StoreConfig,
                                        boto3_puts: list[str], why: str) -> None:
    key, body, metadata = f"{store_cfg.prefix}/run/{why}.arrow", BODY, {"s43-run": "run"}
    if why == "config":
        cfg = replace(store_cfg, put_client="boto3")
        store = S3Store(cfg)
        client_for(cfg).meta.events.register(
            "provide-client-params.s3.PutObject",
            lambda params, **_: boto3_puts.append(params["Key"]))
    elif why == "large":
        body = b"\0" * (fast_put.FAST_PUT_MAX_BYTES + 1)
    else:  # boto3 refuses it, as it always did: S3 metadata is ASCII
        with pytest.raises(StoreError, match="Non ascii characters found in S3 metadata"):
            store.put(key, body, metadata={"s43-note": "caf\u00e9"})
        assert boto3_puts == [key]
        return
    store.put(key, body, metadata=metadata)
    assert boto3_puts == [key]
    assert store.head(key).size == len(body)
