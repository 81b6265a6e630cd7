"""``s43-ray lifecycle apply|verify``, ``bucket check`` and ``gc`` as an operator runs them,
on the real SeaweedFS server (each lifecycle test on a bucket of its own)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from helpers import keys_under

from s43_ray.config import StoreConfig
from s43_ray.stores.local_s3 import LocalS3
from s43_ray.stores.s3 import S3Store

pytestmark = pytest.mark.s3
Cli = Any
RULE_FILE = Path(__file__).resolve().parents[2] / "infra/scaleway/s3-lifecycle-s43-predictions.json"


def _client(s3_server: LocalS3) -> Any:
    return boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")


def test_verify_apply_verify_gives_the_operator_proof(cli: Cli, s3_server: LocalS3,
                                                      other_bucket: str) -> None:
    where = ["--bucket", other_bucket, "--endpoint-url", s3_server.endpoint_url]
    before = cli("lifecycle", "verify", *where, "--json")
    assert before.code == 1 and before.summary["status"] == "MISMATCH"
    # Another team's rule on the bucket must survive the apply.
    client = _client(s3_server)
    theirs = {"ID": "their-logs-30d", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
              "Expiration": {"Days": 30}}
    client.put_bucket_lifecycle_configuration(Bucket=other_bucket,
                                              LifecycleConfiguration={"Rules": [theirs]})
    applied = cli("lifecycle", "apply", *where, "--rule-file", str(RULE_FILE), "--json")
    assert applied.code == 0, applied.stderr
    live = client.get_bucket_lifecycle_configuration(Bucket=other_bucket)["Rules"]
    assert sorted(r["ID"] for r in live) == ["s43-predictions-7d", "their-logs-30d"]
    proof = cli("lifecycle", "verify", *where, "--json")
    assert proof.code == 0, proof.stderr
    p = proof.summary
    assert p["status"] == "OK" and p["bucket"] == other_bucket
    assert p["endpoint"] == s3_server.endpoint_url and p["checked_at"].endswith("Z")
    rule = json.loads(RULE_FILE.read_text())["Rules"][0]
    assert rule["Filter"]["Prefix"] == "s43-predictions/" and rule["Expiration"]["Days"] == 7
    assert "lifecycle proof: OK" in proof.stderr  # the human proof too
    again = cli("lifecycle", "apply", *where, "--json")  # the packaged default: idempotent
    assert again.code == 0, again.stderr


def test_verify_reports_a_rule_that_drifted(cli: Cli, s3_server: LocalS3,
                                            other_bucket: str) -> None:
    client = _client(s3_server)
    client.put_bucket_lifecycle_configuration(Bucket=other_bucket, LifecycleConfiguration={
        "Rules": [{"ID": "s43-predictions-7d", "Filter": {"Prefix": "s43-predictions/"},
                   "Status": "Enabled", "Expiration": {"Days": 30}}]})
    proof = cli("lifecycle", "verify", "--bucket", other_bucket, "--endpoint-url",
                s3_server.endpoint_url, "--json")
    assert proof.code == 1 and proof.summary["status"] == "MISMATCH"
    assert "MISMATCH" in proof.stderr and "30" in proof.stderr


def test_bucket_check_reports_encryption_and_the_rule(cli: Cli, s3_server: LocalS3,
                                                      other_bucket: str) -> None:
    where = ["--bucket", other_bucket, "--endpoint-url", s3_server.endpoint_url]
    missing = cli("bucket", "check", *where, "--json")
    assert missing.code == 1, missing.stderr
    assert "NOT SET" in missing.stderr
    assert cli("lifecycle", "apply", *where).code == 0
    _client(s3_server).put_bucket_encryption(
        Bucket=other_bucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    ok = cli("bucket", "check", *where, "--json")
    assert ok.code == 0, ok.stderr
    assert ok.summary["status"] == "OK"


def test_gc_dry_run_lists_and_deletes_nothing(cli: Cli, store_args: list[str], store: S3Store,
                                              store_cfg: StoreConfig) -> None:
    assert cli("run", *store_args, "--run-id", "gc-me", "--cohort-size", "2", "--rows",
               "50").code == 0
    before = keys_under(store, store_cfg.prefix + "/")
    result = cli("gc", *store_args, "--older-than", "1h", "--json")
    assert result.code == 0, result.stderr
    assert result.summary["dry_run"] is True and result.summary["expired_runs"] == 0
    assert [r["run_id"] for r in result.summary["runs"]] == ["gc-me"]
    assert result.summary["runs"][0]["action"] == "kept"  # written seconds ago
    assert keys_under(store, store_cfg.prefix + "/") == before


@pytest.mark.parametrize(("argv", "named"), [
    (["lifecycle", "apply", "--bucket", "b-one", "--store", "s3://b-two/p"], "differs"),
    (["lifecycle", "verify", "--bucket", "UPPER"], "'UPPER'"),
    (["lifecycle", "verify", "--store", "file:///tmp"], "needs an S3 bucket"),
    (["lifecycle", "apply", "--rule-file", "/nonexistent.json"], "/nonexistent.json"),
    (["gc", "--older-than", "soon"], "'soon'"),
    (["gc", "--older-than", "10m"], "expected at least 1h"),
], ids=["bucket-vs-store", "bad-bucket", "file-store", "missing-rule-file", "bad-age",
        "age-too-short"])
def test_bad_operator_input_exits_2(cli: Cli, argv: list[str], named: str) -> None:
    result = cli(*argv, "--json")
    assert result.code == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("s43-ray: error:") and named in line


def test_report_shows_the_verdict_members_sizes_and_times(cli: Cli, store_args: list[str],
                                                         store: S3Store,
                                                         store_cfg: StoreConfig) -> None:
    assert cli("run", *store_args, "--run-id", "report-me", "--cohort-size", "3", "--rows",
               "100").code == 0
    report = cli("report", *store_args, "--run-id", "report-me", "--json")
    assert report.code == 0, report.stderr
    r = report.summary
    assert r["status"] == "passed" and r["missing"] == [] and r["stale"] is False
    assert [m["member"] for m in r["members"]] == ["m00000", "m00001", "m00002"]
    assert all(m["size"] > 0 and m["written_at"].endswith("Z") for m in r["members"])
    assert "claims PASSED 3/3" in report.stderr
    # A member deleted after the verdict: the report says the verdict is stale (exit 1).
    store.delete(f"{store_cfg.prefix}/report-me/m00001.arrow")
    stale = cli("report", *store_args, "--run-id", "report-me", "--json")
    assert stale.code == 1
    assert stale.summary["status"] == "stale" and stale.summary["missing"] == ["m00001"]
    assert "STALE" in stale.stderr


def test_report_of_a_run_that_does_not_exist_exits_2(cli: Cli, store_args: list[str]) -> None:
    result = cli("report", *store_args, "--run-id", "never-ran", "--json")
    assert result.code == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "'never-ran' does not exist" in line
