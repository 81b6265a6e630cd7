"""Encryption at rest with a customer key (SSE-C), against the real SeaweedFS server."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from helpers import keys_under

from s43_ray.config import Secret, StoreConfig
from s43_ray.keys import RunLayout
from s43_ray.stores.s3 import S3Store

pytestmark = [pytest.mark.ray, pytest.mark.s3]
Cli = Any


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def key_file(tmp_path: Path, key: bytes) -> Path:
    path = tmp_path / "sse-c.key"
    path.write_text(base64.b64encode(key).decode() + "\n")
    path.chmod(0o600)
    return path


def _raw_client(store_cfg: StoreConfig) -> Any:
    return boto3.client("s3", endpoint_url=store_cfg.endpoint_url, region_name="us-east-1")


def _assert_key_absent(text: str, key: bytes) -> None:
    for form in (base64.b64encode(key).decode(), key.hex(), repr(key)):
        assert form not in text


def test_sse_c_round_trip_and_a_read_without_the_key_is_refused(
        cli: Cli, store_args: list[str], store_cfg: StoreConfig, key: bytes,
        key_file: Path) -> None:
    run = cli("run", *store_args, "--run-id", "ssec", "--cohort-size", "3", "--rows", "200",
              "--sse-c-key-file", str(key_file), "--json")
    assert run.code == 0, run.stderr
    assert run.summary["cohort_count"] == 3
    layout = RunLayout(store_cfg.prefix, "ssec")
    # Every object, the manifest and the verdict included, needs the key to be read.
    client = _raw_client(store_cfg)
    keys = keys_under(S3Store(store_cfg), layout.run_prefix)
    assert len(keys) == 5
    for k in keys:
        with pytest.raises(ClientError) as info:
            client.get_object(Bucket=store_cfg.bucket, Key=k)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        body = client.get_object(Bucket=store_cfg.bucket, Key=k, SSECustomerAlgorithm="AES256",
                                 SSECustomerKey=key)["Body"].read()
        _assert_key_absent(body.decode("latin-1"), key)
    # The gate with the key, downloading (full) and from the store's checksums (head).
    for verify in ("full", "head"):
        gate = cli("gate", *store_args, "--run-id", "ssec", "--sse-c-key-file", str(key_file),
                   "--verify", verify, "--json")
        assert gate.code == 0, gate.stderr
        assert gate.summary["cohort_count"] == 3
    _assert_key_absent(run.stdout + run.stderr + json.dumps(run.events), key)


def test_a_gate_without_the_key_fails_with_one_line_saying_a_key_is_needed(
        cli: Cli, store_args: list[str], key_file: Path) -> None:
    run = cli("run", *store_args, "--run-id", "ssec-nokey", "--cohort-size", "2", "--rows",
              "100", "--sse-c-key-file", str(key_file))
    assert run.code == 0, run.stderr
    gate = cli("gate", *store_args, "--run-id", "ssec-nokey", "--json")
    assert gate.code == 2
    lines = gate.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in gate.stderr
    assert "encrypted with a customer key (SSE-C)" in lines[0]
    assert "expected --sse sse-c with S43_SSE_C_KEY or --sse-c-key-file" in lines[0]
    assert gate.summary["error_class"] == "sse_key_required"
    # Explicit members skip the manifest: the member objects themselves refuse too.
    gate2 = cli("gate", *store_args, "--run-id", "ssec-nokey", "--members", "m00000,m00001",
                "--json")
    assert gate2.code == 2 and "customer key" in gate2.stderr


def test_a_gate_with_another_key_is_refused(cli: Cli, store_args: list[str], key_file: Path,
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    run = cli("run", *store_args, "--run-id", "ssec-other", "--cohort-size", "2", "--rows",
              "100", "--sse-c-key-file", str(key_file))
    assert run.code == 0, run.stderr
    other = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("S43_SSE_C_KEY", other)  # from the environment this time
    gate = cli("gate", *store_args, "--run-id", "ssec-other", "--json")
    assert gate.code == 3
    assert "written with another SSE-C key" in gate.stderr
    assert other not in gate.stderr + gate.stdout


@pytest.mark.parametrize(("flags", "env", "named"), [
    (["--sse", "sse-c"], {}, "needs the customer key"),
    (["--sse", "aes"], {}, "'aes'"),
    ([], {"S43_SSE_C_KEY": "c2hvcnQ="}, "S43_SSE_C_KEY is not a 256-bit key"),
    ([], {"S43_SSE_C_KEY": "not base64 at all!"}, "S43_SSE_C_KEY is not a 256-bit key"),
    (["--sse-c-key-file", "/nonexistent/key"], {}, "'/nonexistent/key' cannot be read"),
    (["--sse", "none", "--sse-c-key-file", "KEYFILE"], {}, "expected --sse sse-c"),
], ids=["no-key", "bad-mode", "short-key", "not-base64", "missing-file", "key-without-sse-c"])
def test_bad_encryption_settings_exit_2_writing_nothing(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig,
        key_file: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str],
        env: dict[str, str], named: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    argv = [str(key_file) if f == "KEYFILE" else f for f in flags]
    result = cli("run", *store_args, "--run-id", "ssec-bad", "--cohort-size", "2", *argv)
    assert result.code == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert named in line and "expected" in line
    for value in env.values():
        assert value not in result.stderr
    assert keys_under(store, store_cfg.prefix + "/") == []


def test_sse_c_does_not_apply_to_a_file_store(cli: Cli, key_file: Path, tmp_path: Path) -> None:
    result = cli("run", "--store", f"file://{tmp_path}", "--sse-c-key-file", str(key_file))
    assert result.code == 2
    assert "does not apply to the file store" in result.stderr


def test_the_key_never_appears_in_the_config_repr(key: bytes) -> None:
    cfg = StoreConfig(bucket="b", sse="sse-c",
                      sse_c_key=Secret(base64.b64encode(key).decode()))
    _assert_key_absent(repr(cfg) + str(cfg), key)
