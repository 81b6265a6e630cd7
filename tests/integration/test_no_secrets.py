"""No secret (access key secret, session token, SSE-C key) ever shows: every command runs with
recognisable secrets, and stdout, stderr, events, the Ray logs and the objects are scanned."""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from helpers import SECRET_KEY, CliResult, run_subprocess

from s43_ray.config import StoreConfig
from s43_ray.stores.local_s3 import LocalS3, free_ports

pytestmark = pytest.mark.s3

SSE_KEY = os.urandom(32)
SSE_KEY_B64 = base64.b64encode(SSE_KEY).decode()
SESSION_TOKEN = "s43-SESSION-TOKEN-sentinel-7f6e5d4c3b2a"
WRONG_SECRET = "s43-WRONG-SECRET-sentinel-1a2b3c4d"
SECRETS = [SECRET_KEY, SSE_KEY_B64, SSE_KEY.hex(), SESSION_TOKEN, WRONG_SECRET]


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    """A short folder for the Ray logs of the commands' own local clusters (socket paths)."""
    path = Path(tempfile.mkdtemp(prefix="s43s-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _scan(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret appears in {where}"


def test_no_command_ever_shows_a_secret(s3_server: LocalS3, store_cfg: StoreConfig,
                                        other_bucket: str, ray_tmp: Path) -> None:
    env = {"S43_SSE_C_KEY": SSE_KEY_B64, "RAY_TMPDIR": str(ray_tmp)}
    store = ["--store", store_cfg.url, "--endpoint-url", s3_server.endpoint_url]
    bucket = ["--bucket", other_bucket, "--endpoint-url", s3_server.endpoint_url]
    closed = f"http://127.0.0.1:{free_ports(1)[0]}"
    commands: list[tuple[list[str], dict[str, str], set[int]]] = [
        (["run", *store, "--run-id", "secrets", "--cohort-size", "2", "--rows", "50",
          "--num-cpus", "1"], env, {0}),
        (["gate", *store, "--run-id", "secrets", "--verify", "head"], env, {0}),
        (["gate", *store, "--run-id", "secrets"], {}, {2}),  # no key: refused, key not shown
        (["gc", *store, "--older-than", "1h"], env, {0}),
        (["lifecycle", "apply", *bucket], env, {0}),
        (["lifecycle", "verify", *bucket], env, {0}),
        (["bucket", "check", *bucket], env, {0, 1}),
        (["smoke", *store, "--members-per-node", "1", "--rows", "20"], env, {0}),
        # error paths: a wrong secret, a session token the store refuses, a dead endpoint
        (["run", *store, "--run-id", "secrets-2", "--num-cpus", "1"],
         {**env, "AWS_SECRET_ACCESS_KEY": WRONG_SECRET}, {3}),
        (["run", *store, "--run-id", "secrets-3", "--num-cpus", "1"],
         {**env, "AWS_SESSION_TOKEN": SESSION_TOKEN}, {0, 3}),
        (["gate", "--store", store_cfg.url, "--endpoint-url", closed, "--run-id", "x",
          "--expected", "1", "--max-attempts", "1"], env, {3}),
        (["run", *store, "--sse-c-key-file", "/nonexistent"], env, {2}),
    ]
    for argv, extra, codes in commands:
        for flag in ("", "--json"):
            result: CliResult = run_subprocess([*argv, *([flag] if flag else [])], env=extra,
                                               timeout=240)
            assert result.code in codes, (argv, result.code, result.stderr[-2000:])
            _scan(result.stdout + result.stderr, f"the output of {argv[:2]}")
            if argv[0] == "smoke" or "secrets" in argv:
                break  # a run id is claimed once; its second call would change nothing
    # The Ray logs of every local cluster those commands started (drivers, workers, raylets).
    logs = [p for p in ray_tmp.rglob("*") if p.is_file() and p.suffix in {".log", ".out",
                                                                           ".err", ".txt"}]
    assert logs, "expected the commands' Ray logs under RAY_TMPDIR"
    for path in logs:
        _scan(path.read_text(errors="replace"), str(path))
    # Every object written, the verdict and the manifest included (read with the key).
    client = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")
    listed = client.list_objects_v2(Bucket=store_cfg.bucket, Prefix=store_cfg.prefix + "/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert any(k.endswith("/_gate.json") for k in keys) and any(k.endswith("/_run.json")
                                                                for k in keys)
    sse = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": SSE_KEY}
    for key in keys:  # every object of these commands was written with the SSE-C key
        obj = client.get_object(Bucket=store_cfg.bucket, Key=key, **sse)
        _scan(obj["Body"].read().decode("latin-1"), key)
        _scan(str(obj.get("Metadata", {})), f"the metadata of {key}")
