"""The Scaleway answers SeaweedFS does not give, replayed with botocore's Stubber.

Everything SeaweedFS implements is tested against it (tests/integration/test_lifecycle.py).
Only these differ, so only these are stubbed, with the responses Scaleway documents:
- a lifecycle rule with ``Transitions`` (SeaweedFS 4.48 answers NotImplemented to a PUT with
  one; Scaleway supports transitions to ONEZONE_IA/GLACIER): ``apply`` must put it back as is;
- ``get-bucket-encryption`` after SSE-ONE is disabled answers an empty
  ``ServerSideEncryptionConfiguration`` (SeaweedFS answers a 404 error); the Stubber cannot
  return that shape, so its XML is answered on the wire through botocore's parser;
- a store without lifecycle support answers NotImplemented: exit 3 naming ``gc`` and the waiver.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import ANY, Stubber

from s43_ray.config import StoreConfig
from s43_ray.errors import StoreError
from s43_ray.ops.lifecycle import apply_lifecycle, bucket_check, default_rule_doc, verify_lifecycle
from s43_ray.stores.s3_admin import S3BucketAdmin

SCALEWAY = "https://s3.fr-par.scw.cloud"
BUCKET = "acme-diag-prod"
OURS = default_rule_doc()["Rules"][0]
GLACIER = {"ID": "archive-reports", "Filter": {"Prefix": "reports/"}, "Status": "Enabled",
           "Transitions": [{"Days": 90, "StorageClass": "GLACIER"}]}


# What Scaleway sends once SSE-ONE is disabled (its docs show the CLI's rendering of it:
# {"ServerSideEncryptionConfiguration": {}}).
EMPTY_ENCRYPTION_XML = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
                        b'<ServerSideEncryptionConfiguration '
                        b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>')
LIFECYCLE_XML = (b'<?xml version="1.0" encoding="UTF-8"?>\n<LifecycleConfiguration '
                 b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Rule>'
                 b'<ID>s43-predictions-7d</ID><Filter><Prefix>s43-predictions/</Prefix></Filter>'
                 b'<Status>Enabled</Status><Expiration><Days>7</Days></Expiration>'
                 b'<AbortIncompleteMultipartUpload><DaysAfterInitiation>1'
                 b'</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule>'
                 b'</LifecycleConfiguration>')


def admin(client: Any) -> S3BucketAdmin:
    """The bucket admin s43-ray builds for a Scaleway store, on the stubbed client."""
    return S3BucketAdmin(StoreConfig(bucket=BUCKET, endpoint_url=SCALEWAY, region="fr-par"),
                         client)


@pytest.fixture
def client() -> Any:
    return boto3.session.Session().client(
        "s3", region_name="fr-par", endpoint_url=SCALEWAY, aws_access_key_id="SCWFAKE",
        aws_secret_access_key="fake")  # never sent: the Stubber answers every call


@pytest.fixture
def stub(client: Any) -> Iterator[Stubber]:
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def test_apply_on_scaleway_keeps_a_transition_rule(client: Any, stub: Stubber) -> None:
    stub.add_response("get_bucket_lifecycle_configuration", {"Rules": [GLACIER]},
                      {"Bucket": BUCKET})
    stub.add_response("put_bucket_lifecycle_configuration", {},
                      {"Bucket": BUCKET,
                       "LifecycleConfiguration": {"Rules": [GLACIER, OURS]}})

    result = apply_lifecycle(admin(client), BUCKET, default_rule_doc())

    assert result.changed and result.added == ("s43-predictions-7d",)
    assert result.kept == ("archive-reports",) and result.endpoint == SCALEWAY


def test_verify_on_scaleway_reports_the_endpoint(client: Any, stub: Stubber) -> None:
    stub.add_response("get_bucket_lifecycle_configuration", {"Rules": [GLACIER, OURS]},
                      {"Bucket": BUCKET})

    proof = verify_lifecycle(admin(client), BUCKET, default_rule_doc())

    assert proof.status == "OK" and proof.exit_code == 0
    assert proof.to_dict()["endpoint"] == SCALEWAY


class _RawBody:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def answer_on_the_wire(client: Any, operation: str, body: bytes) -> None:
    """Answer ``operation`` with raw XML, parsed by botocore's real response parser."""
    def send(request: Any, **_: Any) -> AWSResponse:
        headers: Any = {"Content-Type": "application/xml"}
        return AWSResponse(request.url, 200, headers, _RawBody(body))

    client.meta.events.register(f"before-send.s3.{operation}", send)


def test_bucket_check_reads_scaleways_empty_encryption_as_not_set(client: Any) -> None:
    """The Stubber refuses this response (botocore's model requires Rules), so the XML
    Scaleway sends is answered on the wire instead."""
    answer_on_the_wire(client, "GetBucketEncryption", EMPTY_ENCRYPTION_XML)
    answer_on_the_wire(client, "GetBucketLifecycleConfiguration", LIFECYCLE_XML)

    check = bucket_check(admin(client), BUCKET)

    assert check.encryption == "not_set" and check.exit_code == 1
    assert check.lifecycle.status == "OK"
    assert "default encryption  NOT SET" in check.human()


def test_bucket_check_sse_one_enabled(client: Any, stub: Stubber) -> None:
    stub.add_response("get_bucket_encryption", {"ServerSideEncryptionConfiguration": {"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
         "BucketKeyEnabled": False}]}}, {"Bucket": BUCKET})
    stub.add_response("get_bucket_lifecycle_configuration", {"Rules": [OURS]}, {"Bucket": ANY})

    check = bucket_check(admin(client), BUCKET)

    assert (check.encryption, check.encryption_algorithm, check.exit_code) == ("set", "AES256", 0)


def test_store_without_lifecycle_support_names_gc_and_the_waiver(client: Any,
                                                                  stub: Stubber) -> None:
    stub.add_client_error("get_bucket_lifecycle_configuration", "NotImplemented",
                          "A header you provided implies functionality that is not implemented",
                          http_status_code=501)

    with pytest.raises(StoreError) as err:
        apply_lifecycle(admin(client), BUCKET, default_rule_doc())

    msg = str(err.value)
    assert err.value.exit_code == 3
    assert "does not implement bucket lifecycle rules" in msg
    assert "s43-ray gc --older-than 7d --yes" in msg and "WAIVER.md" in msg


def test_encryption_not_implemented_is_reported_not_raised(client: Any, stub: Stubber) -> None:
    stub.add_client_error("get_bucket_encryption", "NotImplemented", http_status_code=501)
    stub.add_client_error("get_bucket_lifecycle_configuration", "NoSuchLifecycleConfiguration",
                          http_status_code=404)

    check = bucket_check(admin(client), BUCKET)

    assert check.encryption == "unsupported" and check.lifecycle.status == "MISMATCH"
    assert check.exit_code == 1
