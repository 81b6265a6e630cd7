"""Least privilege on a second, real SeaweedFS server whose identities come from
``infra/seaweedfs/s3-identities.json`` (placeholders filled with test-only values).

The s43 identity may list, read, write and delete under ``s43-predictions/`` of its bucket and
nothing else; the operator identity administers its bucket and nothing else; wrong secrets and
anonymous requests are refused. ``s43-ray run`` is run as a user runs it (a subprocess with its
own Ray cluster) with the s43 identity's keys, and with keys scoped to another bucket.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from helpers import CliResult, keys_under, run_subprocess

from s43_ray.config import Secret, StoreConfig
from s43_ray.errors import AccessDenied
from s43_ray.keys import DEFAULT_PREFIX
from s43_ray.ops.lifecycle import (
    apply_lifecycle,
    bucket_check,
    default_rule_doc,
    gc_runs,
    verify_lifecycle,
)
from s43_ray.stores.local_s3 import LocalS3
from s43_ray.stores.s3 import S3Store
from s43_ray.stores.s3_admin import S3BucketAdmin

pytestmark = pytest.mark.s3

IDENTITIES_FILE = Path(__file__).resolve().parents[2] / "infra" / "seaweedfs" / \
    "s3-identities.json"
BUCKET = "s43-lp"
OTHER_BUCKET = "s43-lp-elsewhere"
DAY = 86_400
# Test-only keys, recognisable so a leak scan can look for them.
ROOT = ("S43LPROOTKEY00000001", "s43-lp-root-secret-0a1b2c")
OPERATOR = ("S43LPOPERATORKEY0001", "s43-lp-operator-secret-3d4e5f")
APP = ("S43LPAPPKEY000000001", "s43-lp-app-secret-6a7b8c")
ELSEWHERE = ("S43LPELSEWHEREKEY001", "s43-lp-elsewhere-secret-9d0e1f")
READER = ("S43LPREADERKEY000001", "s43-lp-reader-secret-2a3b4c")
UNWILDCARDED = ("S43LPNOWILDCARDKEY01", "s43-lp-nowildcard-secret-5d6e7f")
SUBPROCESS_TIMEOUT_S = 240


def filled(bucket: str, app: tuple[str, str], operator: tuple[str, str]) -> list[dict[str, Any]]:
    """The infra file's identities with every placeholder replaced."""
    text = IDENTITIES_FILE.read_text()
    for placeholder, value in {"<BUCKET>": bucket, "<S43_ACCESS_KEY>": app[0],
                               "<S43_SECRET_KEY>": app[1], "<OPERATOR_ACCESS_KEY>": operator[0],
                               "<OPERATOR_SECRET_KEY>": operator[1]}.items():
        text = text.replace(placeholder, value)
    assert "<" not in text, "a placeholder of the infra file is not filled"
    identities: list[dict[str, Any]] = json.loads(text)["identities"]
    return identities


def identity(name: str, keys: tuple[str, str], actions: list[str]) -> dict[str, Any]:
    return {"name": name, "credentials": [{"accessKey": keys[0], "secretKey": keys[1]}],
            "actions": actions}


@pytest.fixture(scope="module")
def lp_server(tmp_path_factory: pytest.TempPathFactory, aws_env: dict[str, str]
              ) -> Iterator[LocalS3]:
    """A second SeaweedFS server with the infra identities, stopped by its PID at the end."""
    ours = filled(BUCKET, APP, OPERATOR)
    # The same least-privilege shape for another bucket: "an identity scoped to another bucket".
    (elsewhere,) = [dict(i, name="s43-app-elsewhere") for i in
                    filled(OTHER_BUCKET, ELSEWHERE, ("UNUSEDOPKEY000000001", "unused"))
                    if i["name"] == "s43-app"]
    config = {"identities": [
        identity("test-root", ROOT, ["Admin"]),  # test setup only: creates both buckets
        *ours, elsewhere,
        identity("s43-reader", READER, [f"Read:{BUCKET}/s43-predictions/*",
                                        f"List:{BUCKET}/s43-predictions/*"]),
        identity("s43-unwildcarded", UNWILDCARDED, [f"{a}:{BUCKET}/s43-predictions"
                                                    for a in ("Read", "Write", "List")]),
    ]}
    server = LocalS3(tmp_path_factory.mktemp("seaweedfs-lp"), bucket=BUCKET, s3_config=config)
    server.start()
    try:
        S3BucketAdmin(server.store_config()).create_bucket(OTHER_BUCKET)
        yield server
    finally:
        server.stop()


def cfg(server: LocalS3, keys: tuple[str, str], *, bucket: str = BUCKET,
        prefix: str = DEFAULT_PREFIX) -> StoreConfig:
    return StoreConfig(bucket=bucket, prefix=prefix, endpoint_url=server.endpoint_url,
                       region="us-east-1", max_attempts=1, access_key_id=Secret(keys[0]),
                       secret_access_key=Secret(keys[1]))


def raw_client(server: LocalS3, keys: tuple[str, str] | None) -> Any:
    botocfg = Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1},
                     **({"signature_version": UNSIGNED} if keys is None else {}))
    creds = {} if keys is None else {"aws_access_key_id": keys[0],
                                     "aws_secret_access_key": keys[1]}
    return boto3.session.Session().client("s3", endpoint_url=server.endpoint_url,
                                          region_name="us-east-1", config=botocfg, **creds)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


# --- the s43 identity -------------------------------------------------------------------------

def test_s43_identity_can_put_get_list_delete_under_the_prefix(lp_server: LocalS3) -> None:
    store = S3Store(cfg(lp_server, APP))
    key = f"{DEFAULT_PREFIX}/{unique('run')}/m00000.npz"

    store.check()
    store.put(key, b"payload", metadata={"s43-codec": "npz"})
    body, info = store.get(key)
    head = store.head(key)
    listed = keys_under(store, key.rsplit("/", 1)[0] + "/")
    store.delete(key)

    assert bytes(body) == b"payload" and head.metadata["s43-codec"] == "npz"
    assert listed == [key]
    assert keys_under(store, key.rsplit("/", 1)[0] + "/") == [] and info.size == 7


def test_s43_identity_can_upload_in_parts_and_abort_under_the_prefix(lp_server: LocalS3) -> None:
    s3 = raw_client(lp_server, APP)
    key = f"{DEFAULT_PREFIX}/{unique('mp')}/big.bin"

    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    part = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * 10)
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    aborted = s3.create_multipart_upload(Bucket=BUCKET, Key=key + ".2")["UploadId"]
    s3.abort_multipart_upload(Bucket=BUCKET, Key=key + ".2", UploadId=aborted)

    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"x" * 10


@pytest.mark.parametrize("prefix", ["other", "s43-predictions-sibling"])
def test_s43_identity_is_refused_on_another_prefix(lp_server: LocalS3, prefix: str) -> None:
    key = f"{prefix}/{unique('run')}/m.npz"
    S3Store(lp_server.store_config(prefix=prefix)).put(key, b"someone else's", metadata={})
    store = S3Store(cfg(lp_server, APP, prefix=prefix))

    with pytest.raises(AccessDenied, match="access denied"):
        store.put(f"{prefix}/{unique('run')}/m.npz", b"x", metadata={})
    with pytest.raises(AccessDenied):
        store.get(key)
    with pytest.raises(AccessDenied):
        store.delete(key)
    with pytest.raises(AccessDenied):
        store.check()  # LIST prefix/
    with pytest.raises(AccessDenied):
        list(S3Store(cfg(lp_server, APP, prefix="")).list(""))  # the bucket root


def test_s43_identity_is_refused_on_another_bucket(lp_server: LocalS3) -> None:
    store = S3Store(cfg(lp_server, APP, bucket=OTHER_BUCKET))

    with pytest.raises(AccessDenied) as err:
        store.check()
    with pytest.raises(AccessDenied):
        store.put(f"{DEFAULT_PREFIX}/r/m.npz", b"x", metadata={})

    assert OTHER_BUCKET in str(err.value)


def test_s43_identity_cannot_read_or_change_bucket_configuration(lp_server: LocalS3) -> None:
    app = cfg(lp_server, APP)

    for call in (lambda: apply_lifecycle(S3BucketAdmin(app), BUCKET, default_rule_doc()),
                 lambda: verify_lifecycle(S3BucketAdmin(app), BUCKET, default_rule_doc()),
                 lambda: bucket_check(S3BucketAdmin(app), BUCKET)):
        with pytest.raises(AccessDenied) as err:
            call()
        assert err.value.exit_code == 3 and f"s3://{BUCKET}" in str(err.value)


def test_s43_identity_can_gc_its_own_runs(lp_server: LocalS3) -> None:
    store = S3Store(cfg(lp_server, APP))
    base = f"{DEFAULT_PREFIX}/{unique('gc')}"  # a prefix of this test's own
    for name in ("m00000.arrow", "_run.json", "_gate.json"):
        store.put(f"{base}/run-1/{name}", b"x", metadata={})

    report = gc_runs(store, base, 7 * DAY, now=2e10, delete=True)

    assert [(r.run_id, r.action) for r in report.runs] == [("run-1", "deleted")]
    assert keys_under(store, f"{base}/") == []


def test_gc_without_delete_rights_is_refused_and_keeps_the_run(lp_server: LocalS3) -> None:
    base = f"{DEFAULT_PREFIX}/{unique('gc')}"
    keys = [f"{base}/run-1/{n}" for n in ("m00000.arrow", "_run.json", "_gate.json")]
    for key in keys:
        S3Store(cfg(lp_server, APP)).put(key, b"x", metadata={})
    reader = S3Store(cfg(lp_server, READER))

    assert gc_runs(reader, base, 7 * DAY, now=2e10).runs[0].action == "expired"  # may list
    with pytest.raises(AccessDenied) as err:
        gc_runs(reader, base, 7 * DAY, now=2e10, delete=True)

    assert "1 of 1 keys refused" in str(err.value) and err.value.exit_code == 3
    assert sorted(keys_under(reader, f"{base}/")) == sorted(keys)


# --- the operator identity --------------------------------------------------------------------

def test_operator_identity_manages_retention_on_its_bucket_only(lp_server: LocalS3) -> None:
    operator = cfg(lp_server, OPERATOR)
    raw_client(lp_server, OPERATOR).put_bucket_encryption(
        Bucket=BUCKET, ServerSideEncryptionConfiguration={"Rules": [
            {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})

    apply_lifecycle(S3BucketAdmin(operator), BUCKET, default_rule_doc())

    assert verify_lifecycle(S3BucketAdmin(operator), BUCKET, default_rule_doc()).exit_code == 0
    assert bucket_check(S3BucketAdmin(operator), BUCKET).exit_code == 0
    with pytest.raises(AccessDenied):
        bucket_check(S3BucketAdmin(operator), OTHER_BUCKET)
    with pytest.raises(AccessDenied):
        apply_lifecycle(S3BucketAdmin(operator), OTHER_BUCKET, default_rule_doc())


# --- refusals ---------------------------------------------------------------------------------

def test_wrong_secret_is_refused(lp_server: LocalS3) -> None:
    store = S3Store(cfg(lp_server, (APP[0], "not-the-secret")))

    with pytest.raises(AccessDenied, match="SignatureDoesNotMatch"):
        store.check()


def test_unknown_access_key_is_refused(lp_server: LocalS3) -> None:
    with pytest.raises(AccessDenied):
        S3Store(cfg(lp_server, ("S43LPNOSUCHKEY000001", APP[1]))).check()


def test_anonymous_requests_are_refused(lp_server: LocalS3) -> None:
    key = f"{DEFAULT_PREFIX}/{unique('anon')}/m.npz"
    S3Store(cfg(lp_server, APP)).put(key, b"x", metadata={})
    anonymous = raw_client(lp_server, None)

    for call in (lambda: anonymous.get_object(Bucket=BUCKET, Key=key),
                 lambda: anonymous.put_object(Bucket=BUCKET, Key=key + ".2", Body=b"x"),
                 lambda: anonymous.list_objects_v2(Bucket=BUCKET, Prefix=f"{DEFAULT_PREFIX}/"),
                 lambda: anonymous.delete_object(Bucket=BUCKET, Key=key)):
        with pytest.raises(ClientError) as err:
            call()
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert keys_under(S3Store(cfg(lp_server, APP)), key) == [key]


def test_prefix_actions_without_a_wildcard_match_nothing_on_seaweedfs(lp_server: LocalS3
                                                                        ) -> None:
    """Why the infra file writes ``Read:<BUCKET>/s43-predictions/*``: without the wildcard,
    SeaweedFS compares the action with ``Read:<BUCKET>`` exactly, and refuses everything."""
    store = S3Store(cfg(lp_server, UNWILDCARDED))

    with pytest.raises(AccessDenied):
        store.put(f"{DEFAULT_PREFIX}/{unique('run')}/m.npz", b"x", metadata={})
    with pytest.raises(AccessDenied):
        store.check()


# --- the real CLI -----------------------------------------------------------------------------

def run_as(keys: tuple[str, str], *argv: str) -> CliResult:
    return run_subprocess(list(argv), env={"AWS_ACCESS_KEY_ID": keys[0],
                                           "AWS_SECRET_ACCESS_KEY": keys[1]},
                          timeout=SUBPROCESS_TIMEOUT_S)


def assert_no_secret(result: CliResult) -> None:
    for _, secret in (ROOT, OPERATOR, APP, ELSEWHERE, READER, UNWILDCARDED):
        assert secret not in result.stdout and secret not in result.stderr


@pytest.mark.timeout(SUBPROCESS_TIMEOUT_S * 2 + 60)
def test_run_and_gate_with_the_s43_identity(lp_server: LocalS3) -> None:
    run_id = unique("lp-run")
    store_args = ["--store", f"s3://{BUCKET}/{DEFAULT_PREFIX}", "--endpoint-url",
                  lp_server.endpoint_url, "--max-attempts", "2"]

    r = run_as(APP, "run", *store_args, "--run-id", run_id, "--cohort-size", "2",
               "--rows", "100", "--num-cpus", "1", "--json")

    assert r.code == 0, r.stderr
    assert r.summary["status"] == "passed" and r.summary["cohort_count"] == 2
    operator = S3Store(cfg(lp_server, OPERATOR))
    assert len(keys_under(operator, f"{DEFAULT_PREFIX}/{run_id}/")) == 4  # 2 members + control
    assert_no_secret(r)

    g = run_as(APP, "gate", *store_args, "--run-id", run_id, "--json")

    assert g.code == 0, g.stderr
    assert g.summary["status"] == "passed"
    assert_no_secret(g)


@pytest.mark.timeout(SUBPROCESS_TIMEOUT_S + 60)
def test_run_with_an_identity_for_another_bucket_exits_3(lp_server: LocalS3) -> None:
    run_id = unique("lp-denied")

    r = run_as(ELSEWHERE, "run", "--store", f"s3://{BUCKET}/{DEFAULT_PREFIX}", "--endpoint-url",
               lp_server.endpoint_url, "--max-attempts", "1", "--run-id", run_id,
               "--cohort-size", "2", "--rows", "100", "--num-cpus", "1")

    assert r.code == 3, r.stderr
    lines = [line for line in r.stderr.splitlines() if line and not line.startswith("{")]
    assert len(lines) == 1, r.stderr
    assert "access denied" in lines[0] and BUCKET in lines[0]
    assert "Traceback" not in r.stderr
    assert [e["error_class"] for e in r.named("s43_run_failed")] == ["auth"]
    assert keys_under(S3Store(cfg(lp_server, OPERATOR)), f"{DEFAULT_PREFIX}/{run_id}/") == []
    assert_no_secret(r)
