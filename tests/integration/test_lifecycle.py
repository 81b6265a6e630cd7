"""Retention against the real SeaweedFS server: lifecycle apply/verify, bucket check, gc.

SeaweedFS 4.48 implements Get/Put/DeleteBucketLifecycleConfiguration (Expiration,
AbortIncompleteMultipartUpload, Filter by prefix or prefix+tags; it answers NotImplemented to
Transitions) and Get/Put/DeleteBucketEncryption, so these run on the real server. What only
Scaleway answers is replayed in tests/unit/test_lifecycle_scaleway.py. Every lifecycle test
works on a bucket of its own (``other_bucket``), so no rule reaches another test's objects.
"""

from __future__ import annotations

import copy
import json
import re
import time
from typing import Any

import pytest
from helpers import keys_under

import s43_ray.stores.s3 as s3_module
from s43_ray.config import StoreConfig
from s43_ray.errors import NoSuchBucket, StoreError, StoreUnreachable
from s43_ray.ops.lifecycle import (
    apply_lifecycle,
    bucket_check,
    default_rule_doc,
    gc_runs,
    verify_lifecycle,
)
from s43_ray.stores.local_s3 import free_ports
from s43_ray.stores.s3 import S3Store, client_for
from s43_ray.stores.s3_admin import S3BucketAdmin

pytestmark = pytest.mark.s3

DAY = 86_400
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
OURS = default_rule_doc()["Rules"][0]
LOGS = {"ID": "logs-30d", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
        "Expiration": {"Days": 30}}
TAGGED = {"ID": "tmp-tagged", "Filter": {"And": {"Prefix": "tmp/",
                                                 "Tags": [{"Key": "keep", "Value": "no"}]}},
          "Status": "Enabled", "Expiration": {"Days": 2}}


def client(cfg: StoreConfig) -> Any:
    return client_for(cfg)


def put_rules(cfg: StoreConfig, bucket: str, rules: list[dict[str, Any]]) -> None:
    client(cfg).put_bucket_lifecycle_configuration(Bucket=bucket,
                                                   LifecycleConfiguration={"Rules": rules})


def live_rules(cfg: StoreConfig, bucket: str) -> dict[str, dict[str, Any]]:
    rules = client(cfg).get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    return {r["ID"]: r for r in rules}


def with_days(days: int) -> dict[str, Any]:
    rule = copy.deepcopy(OURS)
    rule["Expiration"]["Days"] = days
    return rule


# --- lifecycle apply --------------------------------------------------------------------------

def test_apply_keeps_the_rules_for_other_prefixes(store_cfg: StoreConfig,
                                                  other_bucket: str) -> None:
    put_rules(store_cfg, other_bucket, [LOGS, TAGGED])

    result = apply_lifecycle(S3BucketAdmin(store_cfg), other_bucket, default_rule_doc())

    live = live_rules(store_cfg, other_bucket)
    assert set(live) == {"logs-30d", "tmp-tagged", "s43-predictions-7d"}
    assert live["logs-30d"]["Expiration"] == {"Days": 30}
    assert live["tmp-tagged"]["Filter"] == TAGGED["Filter"]
    assert live["s43-predictions-7d"]["Filter"] == {"Prefix": "s43-predictions/"}
    assert live["s43-predictions-7d"]["Expiration"] == {"Days": 7}
    assert live["s43-predictions-7d"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 1}
    assert result.changed and result.added == ("s43-predictions-7d",)
    assert result.kept == ("logs-30d", "tmp-tagged") and result.replaced == ()


def test_apply_replaces_a_rule_with_the_same_id(store_cfg: StoreConfig,
                                                other_bucket: str) -> None:
    put_rules(store_cfg, other_bucket, [with_days(30), LOGS])

    result = apply_lifecycle(S3BucketAdmin(store_cfg), other_bucket, default_rule_doc())

    live = live_rules(store_cfg, other_bucket)
    assert live["s43-predictions-7d"]["Expiration"] == {"Days": 7}
    assert set(live) == {"s43-predictions-7d", "logs-30d"}
    assert result.replaced == ("s43-predictions-7d",) and result.added == ()


def test_apply_replaces_another_expiration_of_the_same_prefix(store_cfg: StoreConfig,
                                                              other_bucket: str) -> None:
    put_rules(store_cfg, other_bucket, [dict(with_days(90), ID="old-preds-90d")])

    result = apply_lifecycle(S3BucketAdmin(store_cfg), other_bucket, default_rule_doc())

    assert set(live_rules(store_cfg, other_bucket)) == {"s43-predictions-7d"}
    assert result.replaced == ("old-preds-90d",)


def test_apply_twice_is_idempotent_and_writes_once(store_cfg: StoreConfig,
                                                   other_bucket: str) -> None:
    put_rules(store_cfg, other_bucket, [LOGS])
    puts: list[str] = []

    def count(**_: Any) -> None:
        puts.append("put")

    event = "before-call.s3.PutBucketLifecycleConfiguration"
    client(store_cfg).meta.events.register(event, count)
    try:
        first = apply_lifecycle(S3BucketAdmin(store_cfg), other_bucket, default_rule_doc())
        after_first = live_rules(store_cfg, other_bucket)
        second = apply_lifecycle(S3BucketAdmin(store_cfg), other_bucket, default_rule_doc())
    finally:
        client(store_cfg).meta.events.unregister(event, count)

    assert first.changed and not second.changed
    assert puts == ["put"]
    assert live_rules(store_cfg, other_bucket) == after_first
    assert "nothing written" in second.human()


def test_apply_to_a_missing_bucket_is_no_such_bucket(store_cfg: StoreConfig) -> None:
    with pytest.raises(NoSuchBucket) as err:
        apply_lifecycle(S3BucketAdmin(store_cfg), "s43-no-such-bucket-here", default_rule_doc())

    assert err.value.exit_code == 3 and "s43-no-such-bucket-here" in str(err.value)


def test_seaweedfs_refuses_transitions_and_nothing_is_written(store_cfg: StoreConfig,
                                                              other_bucket: str) -> None:
    """Where SeaweedFS differs from Scaleway: no storage classes, so no Transitions."""
    put_rules(store_cfg, other_bucket, [LOGS])
    glacier = {"ID": "to-glacier", "Filter": {"Prefix": "archive/"}, "Status": "Enabled",
               "Transitions": [{"Days": 90, "StorageClass": "GLACIER"}]}

    with pytest.raises(StoreError, match="does not implement part of these lifecycle rules"):
        apply_lifecycle(S3BucketAdmin(store_cfg), other_bucket, {"Rules": [OURS, glacier]})

    assert set(live_rules(store_cfg, other_bucket)) == {"logs-30d"}


# --- lifecycle verify -------------------------------------------------------------------------

def test_verify_is_ok_after_apply(store_cfg: StoreConfig, other_bucket: str) -> None:
    apply_lifecycle(S3BucketAdmin(store_cfg), other_bucket, default_rule_doc())

    proof = verify_lifecycle(S3BucketAdmin(store_cfg), other_bucket, default_rule_doc())

    assert proof.status == "OK" and proof.exit_code == 0
    record = json.loads(proof.to_json())
    assert record["bucket"] == other_bucket and record["endpoint"] == store_cfg.endpoint_url
    assert RFC3339_UTC.fullmatch(record["checked_at"])
    (rule,) = record["rules"]
    assert rule["status"] == "OK" and rule["differences"] == []
    assert rule["found"]["Expiration"] == {"Days": 7}
    text = proof.human()
    assert text.startswith("lifecycle proof: OK") and other_bucket in text
    assert "expire after 7 days" in text and str(store_cfg.endpoint_url) in text


def test_verify_mismatch_when_the_live_rule_differs(store_cfg: StoreConfig,
                                                    other_bucket: str) -> None:
    put_rules(store_cfg, other_bucket, [with_days(30), LOGS])

    proof = verify_lifecycle(S3BucketAdmin(store_cfg), other_bucket, default_rule_doc())

    assert proof.status == "MISMATCH" and proof.exit_code == 1
    assert proof.checks[0].differences == ("Expiration.Days: expected 7, found 30",)
    assert "differs   Expiration.Days: expected 7, found 30" in proof.human()


def test_verify_mismatch_when_the_rule_is_disabled(store_cfg: StoreConfig,
                                                   other_bucket: str) -> None:
    put_rules(store_cfg, other_bucket, [dict(OURS, Status="Disabled")])

    proof = verify_lifecycle(S3BucketAdmin(store_cfg), other_bucket, default_rule_doc())

    assert proof.checks[0].differences == ("Status: expected 'Enabled', found 'Disabled'",)


def test_verify_mismatch_when_the_bucket_has_no_lifecycle(store_cfg: StoreConfig,
                                                          other_bucket: str) -> None:
    proof = verify_lifecycle(S3BucketAdmin(store_cfg), other_bucket, default_rule_doc())

    assert proof.status == "MISMATCH" and proof.exit_code == 1
    assert proof.checks[0].found is None
    assert "is not on the bucket" in proof.checks[0].differences[0]


def test_verify_mismatch_when_only_other_rules_are_live(store_cfg: StoreConfig,
                                                        other_bucket: str) -> None:
    put_rules(store_cfg, other_bucket, [LOGS])

    proof = verify_lifecycle(S3BucketAdmin(store_cfg), other_bucket, default_rule_doc())

    assert proof.status == "MISMATCH" and proof.checks[0].found is None


def test_verify_notes_a_bucket_wide_rule_overlapping_ours(store_cfg: StoreConfig,
                                                          other_bucket: str) -> None:
    everything = {"ID": "everything-1d", "Filter": {"Prefix": ""}, "Status": "Enabled",
                  "Expiration": {"Days": 1}}
    put_rules(store_cfg, other_bucket, [OURS, everything])

    proof = verify_lifecycle(S3BucketAdmin(store_cfg), other_bucket, default_rule_doc())

    assert proof.status == "OK" and proof.checks[0].overlapping == ("everything-1d",)
    assert "S3 applies the shortest expiration" in proof.human()


# --- bucket check -----------------------------------------------------------------------------

def test_bucket_check_reports_what_is_missing_then_ok(store_cfg: StoreConfig,
                                                      other_bucket: str) -> None:
    before = bucket_check(S3BucketAdmin(store_cfg), other_bucket)
    assert (before.encryption, before.lifecycle.status, before.exit_code) == (
        "not_set", "MISMATCH", 1)
    assert "default encryption  NOT SET" in before.human()

    client(store_cfg).put_bucket_encryption(
        Bucket=other_bucket, ServerSideEncryptionConfiguration={"Rules": [
            {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    half = bucket_check(S3BucketAdmin(store_cfg), other_bucket)
    assert (half.encryption, half.encryption_algorithm, half.exit_code) == ("set", "AES256", 1)

    apply_lifecycle(S3BucketAdmin(store_cfg), other_bucket, default_rule_doc())
    after = bucket_check(S3BucketAdmin(store_cfg), other_bucket)
    assert after.exit_code == 0 and after.lifecycle.status == "OK"
    record = json.loads(after.to_json())
    assert record["status"] == "OK" and record["encryption"] == "set"
    assert record["lifecycle"]["status"] == "OK" and RFC3339_UTC.fullmatch(record["checked_at"])


def test_bucket_check_of_a_missing_bucket_exits_3(store_cfg: StoreConfig) -> None:
    with pytest.raises(StoreError) as err:
        bucket_check(S3BucketAdmin(store_cfg), "s43-no-such-bucket-here")

    assert err.value.exit_code == 3 and "s43-no-such-bucket-here" in str(err.value)


def test_bucket_check_of_an_unreachable_store_exits_3() -> None:
    (port,) = free_ports(1)
    cfg = StoreConfig(bucket="b-unreachable", endpoint_url=f"http://127.0.0.1:{port}",
                      region="us-east-1", max_attempts=1, connect_timeout=1.0)

    with pytest.raises(StoreUnreachable) as err:
        bucket_check(S3BucketAdmin(cfg), "b-unreachable")

    assert err.value.exit_code == 3 and f"127.0.0.1:{port}" in str(err.value)


# --- gc ---------------------------------------------------------------------------------------

def write_run(store: S3Store, prefix: str, run_id: str, members: int = 2) -> list[str]:
    keys = [f"{prefix}/{run_id}/m{i:05d}.arrow" for i in range(members)]
    keys += [f"{prefix}/{run_id}/_run.json", f"{prefix}/{run_id}/_gate.json"]
    for key in keys:
        store.put(key, b"payload-" + key.encode(), metadata={})
    return keys


def outside_keys(store: S3Store, prefix: str) -> list[str]:
    """Keys that share the prefix's characters but are outside ``<prefix>/``."""
    keys = [f"{prefix}-sibling/r-old/m00000.arrow", f"{prefix}x/r-old/_run.json"]
    for key in keys:
        store.put(key, b"not ours", metadata={})
    return keys


def test_gc_dry_run_lists_old_runs_and_deletes_nothing(store: S3Store,
                                                      store_cfg: StoreConfig) -> None:
    p = store_cfg.prefix
    written = write_run(store, p, "r-old-1") + write_run(store, p, "r-old-2", members=3)
    outside = outside_keys(store, p)

    report = gc_runs(store, p, 7 * DAY, now=time.time() + 8 * DAY)

    assert [(r.run_id, r.action, r.objects) for r in report.runs] == [
        ("r-old-1", "expired", 4), ("r-old-2", "expired", 5)]
    assert all(r.bytes > 0 and r.newest is not None for r in report.runs)
    assert sorted(keys_under(store, p + "/")) == sorted(written)
    assert all(keys_under(store, k) == [k] for k in outside)
    record = json.loads(report.to_json())
    assert record["dry_run"] is True and record["expired_objects"] == 9
    assert "r-old-1" in report.human() and "--yes" in report.human()


def test_gc_deletes_whole_old_runs_and_nothing_outside_the_prefix(
        store: S3Store, store_cfg: StoreConfig) -> None:
    p = store_cfg.prefix
    write_run(store, p, "r-old-1")
    write_run(store, p, "r-old-2")
    outside = outside_keys(store, p)
    store.put(f"{p}/loose.txt", b"not in a run", metadata={})

    report = gc_runs(store, p, 7 * DAY, now=time.time() + 8 * DAY, delete=True)

    assert [(r.run_id, r.action) for r in report.runs] == [("r-old-1", "deleted"),
                                                            ("r-old-2", "deleted")]
    assert keys_under(store, p + "/") == [f"{p}/loose.txt"]
    assert all(keys_under(store, k) == [k] for k in outside)
    assert report.loose_keys == 1 and json.loads(report.to_json())["dry_run"] is False


def test_gc_never_touches_a_run_with_one_fresh_object(store: S3Store,
                                                      store_cfg: StoreConfig) -> None:
    p = store_cfg.prefix
    old_run = write_run(store, p, "r-old")
    live_run = write_run(store, p, "r-live")
    time.sleep(2.2)  # LastModified has whole seconds
    cutoff = time.time()
    time.sleep(2.2)
    store.put(f"{p}/r-live/m00009.arrow", b"a member finishing late", metadata={})

    report = gc_runs(store, p, DAY, now=cutoff + DAY, delete=True)

    assert {r.run_id: r.action for r in report.runs} == {"r-live": "kept", "r-old": "deleted"}
    assert sorted(keys_under(store, f"{p}/r-live/")) == sorted(
        [*live_run, f"{p}/r-live/m00009.arrow"])
    assert keys_under(store, f"{p}/r-old/") == [] and old_run


def test_gc_deletes_in_batches(store: S3Store, store_cfg: StoreConfig,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    p = store_cfg.prefix
    write_run(store, p, "r-big", members=5)  # 5 members + 2 control objects
    batches: list[int] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        batches.append(len(params["Delete"]["Objects"]))

    event = "provide-client-params.s3.DeleteObjects"
    client(store_cfg).meta.events.register(event, count)
    monkeypatch.setattr(s3_module, "DELETE_BATCH", 2)
    try:
        gc_runs(store, p, DAY, now=time.time() + 2 * DAY, delete=True)
    finally:
        client(store_cfg).meta.events.unregister(event, count)

    assert batches == [2, 2, 1, 2]  # 5 members in batches of 2, then the 2 control objects
    assert keys_under(store, p + "/") == []
