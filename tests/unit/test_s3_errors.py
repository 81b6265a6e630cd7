"""stores.s3_errors: one table for both S3 clients. What each answer means, as both see it."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from obstore.exceptions import GenericError, PermissionDeniedError

from s43_ray.errors import (
    AccessDenied,
    NoSuchBucket,
    ObjectNotFound,
    PreconditionFailed,
    S43Error,
    SseKeyRequired,
    StoreError,
    StoreUnreachable,
    Throttled,
)
from s43_ray.stores.s3 import translate
from s43_ray.stores.s3_errors import classify
from s43_ray.stores.s3_fast_get import classify_failure

WHERE = "GET s3://b/k at http://127.0.0.1:9"


def _boto(status: int, code: str | None, message: str = "") -> ClientError:
    error = {"Message": message} | ({"Code": code} if code else {})
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


def _obstore(status: int, code: str | None, message: str = "") -> Exception:
    body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>" if code else ""
    return GenericError(f"Generic S3 error: Error performing GET: Client error with status "
                        f"code: {status} ({body})")


# (HTTP status, S3 code or None, the project's error, retryable)
ANSWERS = [
    (404, "NoSuchKey", ObjectNotFound, False),
    (404, "NoSuchBucket", NoSuchBucket, False),
    (403, "AccessDenied", AccessDenied, False),
    (403, "SignatureDoesNotMatch", AccessDenied, False),
    (401, None, AccessDenied, False),
    (400, "ExpiredToken", AccessDenied, False),
    (403, "RequestTimeTooSkewed", StoreError, False),  # a clock to fix, not a grant
    (404, "NoSuchUpload", StoreError, False),  # the store refused something else
    (503, "SlowDown", Throttled, True),
    (503, None, Throttled, True),
    (429, None, Throttled, True),
    (500, "InternalError", StoreError, True),
    (502, None, StoreError, True),
    (400, "InvalidArgument", StoreError, False),
]


@pytest.mark.parametrize(("status", "code", "kind", "retryable"), ANSWERS)
def test_both_clients_read_an_answer_the_same_way(status: int, code: str | None,
                                                  kind: type[S43Error], retryable: bool) -> None:
    boto = translate(_boto(status, code), op="GET", target="s3://b/k",
                     endpoint="http://127.0.0.1:9")
    ob, ob_retryable = classify_failure(_obstore(status, code), WHERE, "none")

    assert type(boto) is kind and type(ob) is kind
    assert str(boto).startswith(WHERE) and str(ob).startswith(WHERE)
    assert ob_retryable is retryable


def test_no_http_answer_is_unreachable_and_retried() -> None:
    error, retryable = classify_failure(GenericError("error sending request: connection "
                                                     "refused"), WHERE, "none")
    assert type(error) is StoreUnreachable and retryable


def test_a_refusal_with_no_status_is_still_access_denied() -> None:
    error, retryable = classify_failure(PermissionDeniedError("denied"), WHERE, "none")
    assert type(error) is AccessDenied and not retryable


@pytest.mark.parametrize(("code", "condition", "why"), [
    ("PreconditionFailed", "If-None-Match: *", "the key already exists"),
    ("PreconditionFailed", 'If-Match: "e1"', "changed or was deleted"),
    ("ConditionalRequestConflict", "If-None-Match: *", "a concurrent conditional write"),
    ("NoSuchKey", 'If-Match: "e1"', "the key does not exist"),
])
def test_a_refused_condition_is_a_precondition_failure(code: str, condition: str,
                                                       why: str) -> None:
    error, retryable = classify(code, status="412", op="PUT", where="PUT s3://b/k at E",
                                condition=condition)
    assert type(error) is PreconditionFailed and why in str(error) and not retryable


def test_a_read_without_the_customer_key_asks_for_it() -> None:
    error, _ = classify("InvalidRequest", status="400", op="GET", where=WHERE,
                        message="The object was stored using a form of SSE-C: customer key")
    assert type(error) is SseKeyRequired and error.exit_code == 2
