"""config: store URLs, endpoints, environment defaults, secrets that never print, pickling."""

from __future__ import annotations

import pickle

import pytest

from s43_ray.config import (
    EnvDefaults,
    Secret,
    StoreConfig,
    env_defaults,
    parse_store_url,
    validate_endpoint,
)
from s43_ray.errors import InputError, InvalidStoreUrl

SECRET_VALUE = "wJalrXUtnFEMI-unit-test-secret"


@pytest.mark.parametrize(("url", "bucket", "prefix"), [
    ("s3://bucket/prefix", "bucket", "prefix"),
    ("s3://bucket", "bucket", "s43-predictions"),
    ("s3://bucket/", "bucket", "s43-predictions"),
    ("s3://bucket/a/b/", "bucket", "a/b"),
    ("s3://my-bucket.eu/s43-predictions", "my-bucket.eu", "s43-predictions"),
    ("s3://abc/x", "abc", "x"),
    ("s3://" + "b" * 63 + "/x", "b" * 63, "x"),
])
def test_parse_store_url_accepts_bucket_and_prefix(url: str, bucket: str, prefix: str) -> None:
    assert parse_store_url(url) == (bucket, prefix)


@pytest.mark.parametrize("url", [
    "http://x",
    "s3://",
    "s3:///prefix",
    "bucket/prefix",
    "",
    "s3://UPPER/x",
    "s3://ab/x",
    "s3://" + "b" * 64 + "/x",
    "s3://-bucket/x",
    "s3://bucket-/x",
    "s3://bu_cket/x",
    "s3://bucket:9000/x",
    "s3://b/../x",
    "s3://bucket/../x",
    "s3://bucket/a/./b",
    "s3://bucket/a//b",
    "s3://bucket/x?versionId=1",
    "s3://bucket/x#frag",
])
def test_parse_store_url_refuses_bad_urls_naming_them(url: str) -> None:
    with pytest.raises(InvalidStoreUrl) as info:
        parse_store_url(url)

    assert repr(url) in str(info.value)
    assert "expected" in str(info.value)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8333",
    "https://s3.fr-par.scw.cloud",
    "http://localhost:9000/",
    "https://[::1]:8333",
])
def test_validate_endpoint_accepts_http_urls(url: str) -> None:
    assert validate_endpoint(url) == url


@pytest.mark.parametrize("url", [
    "localhost:8333",
    "ftp://host",
    "s3://bucket",
    "http://",
    "https://:8333",
    "http://host:99999",
    "http://host:abc",
    "",
])
def test_validate_endpoint_refuses_bad_urls_naming_them(url: str) -> None:
    with pytest.raises(InputError) as info:
        validate_endpoint(url)

    assert repr(url) in str(info.value)
    assert info.value.exit_code == 2


def test_validate_endpoint_refuses_port_zero() -> None:
    with pytest.raises(InputError, match="1-65535"):
        validate_endpoint("http://host:0")


def test_env_defaults_reads_only_the_mapping_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S43_STORE", "s3://from-process-env/x")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://process-env:1")

    assert env_defaults({}) == EnvDefaults()


def test_env_defaults_takes_values_from_the_mapping() -> None:
    got = env_defaults({
        "S43_STORE": "s3://bucket/p",
        "AWS_ENDPOINT_URL": "http://generic:1",
        "AWS_ENDPOINT_URL_S3": "http://s3-specific:2",
        "AWS_DEFAULT_REGION": "fr-par",
        "RAY_ADDRESS": "ray://head:10001",
        "S43_S3_ADDRESSING_STYLE": "virtual",
        "S43_S3_CHECKSUM": "off",
        "S43_S3_PUT_CLIENT": "boto3",
        "S43_S3_MAX_ATTEMPTS": "9",
        "S43_LOCAL_S3_DIR": "/data/s3",
    })

    assert got == EnvDefaults(store="s3://bucket/p", endpoint_url="http://s3-specific:2",
                              region="fr-par", address="ray://head:10001",
                              addressing_style="virtual", s3_checksum="off",
                              put_client="boto3", max_attempts="9",
                              local_dir="/data/s3")


def test_env_defaults_treats_empty_values_as_unset() -> None:
    got = env_defaults({"S43_STORE": "", "AWS_ENDPOINT_URL_S3": "",
                        "AWS_ENDPOINT_URL": "http://generic:1", "S43_S3_CHECKSUM": ""})

    assert got.store is None
    assert got.endpoint_url == "http://generic:1"
    assert got.s3_checksum is None  # unset: StoreConfig's own default applies


def test_secret_never_shows_its_value() -> None:
    secret = Secret(SECRET_VALUE)

    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", format(secret, "")):
        assert SECRET_VALUE not in shown
        assert "***" in shown
    assert secret.value == SECRET_VALUE


def test_store_config_with_secrets_has_no_secret_in_repr() -> None:
    cfg = StoreConfig(bucket="bucket", access_key_id=Secret("AKIAUNITTEST"),
                      secret_access_key=Secret(SECRET_VALUE))

    assert SECRET_VALUE not in repr(cfg)
    assert "AKIAUNITTEST" not in repr(cfg)
    assert SECRET_VALUE not in str(cfg)


def test_store_config_pickles_and_stays_equal() -> None:
    cfg = StoreConfig(bucket="bucket", prefix="a/b", endpoint_url="http://127.0.0.1:8333",
                      region="fr-par", addressing_style="virtual", s3_checksum="off",
                      access_key_id=Secret("AKIAUNITTEST"),
                      secret_access_key=Secret(SECRET_VALUE))

    restored = pickle.loads(pickle.dumps(cfg))

    assert restored == cfg
    assert hash(restored) == hash(cfg)
    assert restored.secret_access_key is not None
    assert restored.secret_access_key.value == SECRET_VALUE


def test_store_config_defaults_and_url() -> None:
    cfg = StoreConfig(bucket="bucket")

    assert cfg.prefix == "s43-predictions"
    assert cfg.url == "s3://bucket/s43-predictions"
    assert StoreConfig(bucket="bucket", prefix="").url == "s3://bucket"
    assert cfg.connect_timeout > 0 and cfg.read_timeout > 0
