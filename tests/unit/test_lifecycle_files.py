"""The infra files operators apply: they parse, and grant exactly what docs/security.md says."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from s43_ray.keys import DEFAULT_PREFIX
from s43_ray.ops.lifecycle import default_rule_doc, load_rule_file

INFRA = Path(__file__).resolve().parents[2] / "infra"
LIFECYCLE_FILE = INFRA / "scaleway" / "s3-lifecycle-s43-predictions.json"
POLICY_FILE = INFRA / "scaleway" / "bucket-policy-s43.json"
IDENTITIES_FILE = INFRA / "seaweedfs" / "s3-identities.json"
APP = "application_id:<S43_APPLICATION_ID>"
ADMINS = {"user_id:<OWNER_USER_ID>", "application_id:<OPERATOR_APPLICATION_ID>"}
# What the s43 application uses, and nothing more (docs/security.md, "Least privilege").
APP_OBJECT_ACTIONS = {"s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}
# Scaleway's documented bucket-policy actions (docs: object-storage/api-cli/bucket-policy).
SCALEWAY_ACTIONS = {
    "*", "s3:*", "s3:DeleteBucketWebsite", "s3:GetBucketAcl", "s3:GetBucketCORS",
    "s3:GetBucketLocation", "s3:GetBucketObjectLockConfiguration", "s3:GetBucketTagging",
    "s3:GetBucketVersioning", "s3:GetBucketWebsite", "s3:GetLifecycleConfiguration",
    "s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:ListBucketVersions", "s3:PutBucketAcl",
    "s3:PutBucketCORS", "s3:PutBucketObjectLockConfiguration", "s3:PutBucketTagging",
    "s3:PutBucketVersioning", "s3:PutBucketWebsite", "s3:PutLifecycleConfiguration",
    "s3:AbortMultipartUpload", "s3:DeleteObject", "s3:DeleteObjectTagging",
    "s3:DeleteObjectVersion", "s3:DeleteObjectVersionTagging", "s3:GetObject", "s3:GetObjectAcl",
    "s3:GetObjectLegalHold", "s3:GetObjectRetention", "s3:GetObjectTagging", "s3:GetObjectVersion",
    "s3:GetObjectVersionTagging", "s3:ListMultipartUploadParts", "s3:PutObject",
    "s3:PutObjectAcl", "s3:PutObjectLegalHold", "s3:PutObjectRetention", "s3:PutObjectTagging",
    "s3:PutObjectVersionTagging", "s3:RestoreObject"}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def principals(statement: dict[str, Any]) -> set[str]:
    return set(as_list(statement["Principal"]["SCW"]))


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(POLICY_FILE.read_text())
    return doc


@pytest.mark.parametrize("path", [LIFECYCLE_FILE, POLICY_FILE, IDENTITIES_FILE],
                         ids=lambda p: p.name)
def test_infra_json_files_parse(path: Path) -> None:
    assert isinstance(json.loads(path.read_text()), dict)


def test_lifecycle_file_has_exactly_the_required_rule() -> None:
    doc = load_rule_file(LIFECYCLE_FILE)

    assert doc == {"Rules": [{
        "ID": "s43-predictions-7d",
        "Filter": {"Prefix": "s43-predictions/"},
        "Status": "Enabled",
        "Expiration": {"Days": 7},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    }]}


def test_lifecycle_file_is_the_packaged_default() -> None:
    """``s43-ray lifecycle apply`` without a file applies the same rule as the file."""
    assert load_rule_file(LIFECYCLE_FILE) == default_rule_doc()
    assert load_rule_file(LIFECYCLE_FILE)["Rules"][0]["Filter"]["Prefix"] == DEFAULT_PREFIX + "/"


def test_bucket_policy_is_scaleway_format(policy: dict[str, Any]) -> None:
    assert policy["Version"] == "2023-04-17"
    assert policy["Id"] and len(policy["Id"]) <= 280
    sids = [s["Sid"] for s in policy["Statement"]]
    assert len(sids) == len(set(sids))
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"  # Deny is meaningless in 2023-04-17
        assert set(st["Principal"]) == {"SCW"}
        for p in principals(st):
            assert re.fullmatch(r"(user_id|application_id):<[A-Z0-9_]+>", p), p
        assert set(as_list(st["Action"])) <= SCALEWAY_ACTIONS
        for resource in as_list(st["Resource"]):
            assert not resource.startswith("arn:")  # Scaleway resources are BUCKET[/KEY]
            assert resource.split("/")[0] == "<BUCKET>"


def test_bucket_policy_keeps_the_owner_and_operator_in(policy: dict[str, Any]) -> None:
    """With 2023-04-17 whoever no statement names is locked out, administrators included."""
    admin = [st for st in policy["Statement"] if principals(st) & ADMINS]

    assert len(admin) == 1
    assert principals(admin[0]) == ADMINS
    assert as_list(admin[0]["Action"]) == ["s3:*"]
    assert sorted(as_list(admin[0]["Resource"])) == ["<BUCKET>", "<BUCKET>/*"]


def test_bucket_policy_grants_the_app_only_its_actions_on_the_prefix(
        policy: dict[str, Any]) -> None:
    app = [st for st in policy["Statement"] if APP in principals(st)]
    assert all(principals(st) == {APP} for st in app)  # never shares a statement with admins

    granted = {(a, r) for st in app for a in as_list(st["Action"])
               for r in as_list(st["Resource"])}
    assert granted == {("s3:ListBucket", "<BUCKET>")} | {
        (a, "<BUCKET>/s43-predictions/*") for a in APP_OBJECT_ACTIONS}
    assert not any("*" in a for a, _ in granted)  # no wildcard actions
    assert "<BUCKET>/*" not in {r for _, r in granted}  # no bucket-wide object resource


def test_bucket_policy_lets_the_app_list_only_the_prefix(policy: dict[str, Any]) -> None:
    (listing,) = [st for st in policy["Statement"]
                  if APP in principals(st) and "s3:ListBucket" in as_list(st["Action"])]

    assert as_list(listing["Action"]) == ["s3:ListBucket"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": "s43-predictions/*"}}


def test_seaweedfs_app_identity_is_prefix_scoped() -> None:
    identities = {i["name"]: i for i in json.loads(IDENTITIES_FILE.read_text())["identities"]}

    app = identities["s43-app"]
    assert sorted(app["actions"]) == sorted(
        f"{a}:<BUCKET>/s43-predictions/*" for a in ("Read", "Write", "List"))
    # No global or bucket-wide action: SeaweedFS treats "Read" or "Read:<BUCKET>" as the
    # whole bucket (or every bucket), and un-wildcarded prefixes as matching nothing.
    assert all(a.endswith("/s43-predictions/*") for a in app["actions"])
    assert app["credentials"] == [{"accessKey": "<S43_ACCESS_KEY>",
                                   "secretKey": "<S43_SECRET_KEY>"}]


def test_seaweedfs_operator_identity_is_bucket_scoped() -> None:
    identities = {i["name"]: i for i in json.loads(IDENTITIES_FILE.read_text())["identities"]}

    assert identities["s43-operator"]["actions"] == ["Admin:<BUCKET>"]
    assert set(identities) == {"s43-app", "s43-operator"}  # no anonymous identity


def test_infra_files_hold_no_real_secret() -> None:
    for path in INFRA.rglob("*.json"):
        for key in re.findall(r'"(?:accessKey|secretKey)":\s*"([^"]*)"', path.read_text()):
            assert re.fullmatch(r"<[A-Z0-9_]+>", key), f"{path.name}: {key!r}"
