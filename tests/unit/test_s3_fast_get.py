"""How obstore's failures map onto the project's errors, and which are retried (pure)."""

from __future__ import annotations

import pytest
from obstore.exceptions import GenericError, PermissionDeniedError

from s43_ray.errors import (
    AccessDenied,
    NoSuchBucket,
    ObjectNotFound,
    SseKeyRequired,
    StoreError,
    StoreUnreachable,
    Throttled,
)
from s43_ray.stores.s3_fast_get import classify_failure

WHERE = "GET s3://b/k at http://127.0.0.1:9"


def _answer(status: str, code: str, message: str = "m") -> str:
    return (f"Generic S3 error: Error performing GET http://h/b/k in 4ms - Server returned "
            f"non-2xx status code: {status} X: <?xml version=\"1.0\"?><Error><Code>{code}"
            f"</Code><Message>{message}</Message></Error>")


@pytest.mark.parametrize(("exc", "sse", "kind", "retry"), [
    (FileNotFoundError(_answer("404", "NoSuchKey")), "none", ObjectNotFound, False),
    (GenericError(_answer("404", "NoSuchBucket")), "none", NoSuchBucket, False),
    (PermissionDeniedError(_answer("403", "AccessDenied")), "none", AccessDenied, False),
    (GenericError(_answer("503", "SlowDown")), "none", Throttled, True),
    (GenericError(_answer("500", "InternalError")), "none", StoreError, True),
    (GenericError(_answer("400", "InvalidArgument",
                          "Requests specifying Server Side Encryption with Customer provided "
                          "keys must provide the customer key.")), "none", SseKeyRequired, False),
    (GenericError(_answer("400", "InvalidRequest")), "none", StoreError, False),
    (GenericError("Generic S3 error: HTTP error: error sending request"), "none",
     StoreUnreachable, True),
], ids=["not-found", "no-bucket", "denied", "slow-down", "5xx", "sse-c-without-key",
        "other-4xx", "connection"])
def test_obstore_failures_map_to_the_error_tree(exc: Exception, sse: str, kind: type,
                                                retry: bool) -> None:
    error, retryable = classify_failure(exc, WHERE, sse)
    assert type(error) is kind and retryable is retry
    assert str(error).startswith(WHERE)


def test_a_refused_read_with_a_key_suggests_another_key() -> None:
    error, retryable = classify_failure(PermissionDeniedError(_answer("403", "AccessDenied")),
                                        WHERE, "sse-c")
    assert isinstance(error, AccessDenied) and not retryable
    assert "another SSE-C key" in str(error)
