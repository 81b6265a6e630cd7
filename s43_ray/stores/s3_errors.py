"""What an S3 answer means, for both S3 clients (boto3 in :mod:`.s3`, obstore in
:mod:`.s3_fast_get`): one table of error codes, one classifier into the project's error tree,
and whether a retry may succeed.

Each client only extracts the answer's S3 error code and HTTP status (boto3 from its
``ClientError``, obstore from its message) and calls :func:`classify`; a client failure with no
HTTP answer at all (refused, reset, DNS, timeout) is :class:`StoreUnreachable`, named by the
client that saw it.
"""

from __future__ import annotations

import re

from ..config import ENV_SSE_C_KEY
from ..errors import (
    AccessDenied,
    NoSuchBucket,
    ObjectNotFound,
    SseKeyRequired,
    StoreError,
    Throttled,
)
from .base import IF_NONE_MATCH, precondition_failed

NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
# A conditional write refused (412), or lost to a concurrent conditional write (AWS: 409).
PRECONDITION = frozenset({"412", "PreconditionFailed", "ConditionalRequestConflict"})
DENIED = frozenset({"401", "403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "Forbidden", "AllAccessDisabled", "ExpiredToken", "InvalidToken",
                    "AccountProblem"})
# botocore's throttling codes (its "standard" retry mode retries these), and 503 SlowDown.
THROTTLING = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                        "TooManyRequests", "RequestThrottled", "503", "429"})
# Server errors a retry may cure (botocore's standard mode retries the same).
RETRYABLE_STATUS = frozenset({"500", "502", "503", "504"})
# Bucket configuration absent, or an API the store does not implement (SeaweedFS: some of it).
NO_LIFECYCLE = frozenset({"NoSuchLifecycleConfiguration"})
NO_ENCRYPTION = frozenset({"ServerSideEncryptionConfigurationNotFoundError"})
NOT_IMPLEMENTED = frozenset({"NotImplemented", "501"})
# A document the store refused as malformed (lifecycle rules).
MALFORMED = frozenset({"MalformedXML", "InvalidArgument", "InvalidRequest"})


# An S3 error body's code and message, for the clients that read the XML themselves.
CODE = re.compile(r"<Code>([^<]{1,200})</Code>")
MESSAGE = re.compile(r"<Message>([^<]{0,500})</Message>")


def first(pattern: re.Pattern[str], text: str) -> str:
    """``pattern``'s first group in ``text``, "" when it is not there."""
    match = pattern.search(text)
    return match.group(1) if match else ""


def classify(code: str, *, status: str = "", message: str = "", op: str, where: str,
             sse: str = "none", condition: str | None = None
             ) -> tuple[StoreError | SseKeyRequired, bool]:
    """The project's error for an S3 answer, and whether a retry may succeed.

    ``code``: the S3 error code ("" when the answer had none: a HEAD has no body);
    ``status``: the HTTP status, which stands for the code when there is none. ``where``
    names the request in the message (``GET s3://b/k at ENDPOINT``). ``condition``: the
    header of a conditional request (``If-None-Match: *``, ``If-Match: E``). A refused
    condition (412), a conditional write that lost to a concurrent one (409
    ``ConditionalRequestConflict``, AWS) and an ``If-Match`` on a key that no longer exists
    (404, AWS) are :class:`PreconditionFailed`."""
    given, code = code, code or status
    sse_error = sse_read_error(code, message, op=op, where=where, sse=sse)
    if sse_error is not None:
        return sse_error, False
    if code in PRECONDITION:
        if code == "ConditionalRequestConflict":
            why, condition = ("a concurrent conditional write to the key won",
                              "; ".join(filter(None, [code, condition])))
        elif condition == IF_NONE_MATCH:
            why = "the key already exists"
        elif condition:
            why = "the object changed or was deleted since its ETag was read"
        else:
            why, condition = "a condition did not hold", code
        return precondition_failed(where, why, condition), False
    if code in NOT_FOUND or (status == "404" and not given):
        if condition and condition != IF_NONE_MATCH:
            return precondition_failed(where, "the key does not exist", condition), False
        return ObjectNotFound(f"{where}: not found"), False
    if code == "NoSuchBucket":
        return NoSuchBucket(f"{where}: no such bucket"), False
    if code in DENIED or (status in ("401", "403") and not given):
        return AccessDenied(f"{where}: access denied ({code})"), False
    if code in THROTTLING or status == "429":
        return Throttled(f"{where}: throttled ({code}) after retries"), True
    return StoreError(f"{where}: {code}"), status in RETRYABLE_STATUS or code in RETRYABLE_STATUS


def sse_read_error(code: str, message: str, *, op: str, where: str, sse: str
                   ) -> SseKeyRequired | AccessDenied | None:
    """What a refused GET or HEAD of an SSE-C object means: no key given (exit 2), or another
    key (exit 3). None when it is not about SSE-C."""
    if op not in {"GET", "HEAD"}:
        return None
    # GET says so in its body; HEAD has no body, only 400.
    if sse != "sse-c" and ("customer key" in message.lower() or (op == "HEAD"
                                                                  and code == "400")):
        return SseKeyRequired(f"{where}: the object is encrypted with a customer key (SSE-C); "
                              f"expected --sse sse-c with {ENV_SSE_C_KEY} or --sse-c-key-file")
    if sse == "sse-c" and code in {"403", "AccessDenied"}:
        return AccessDenied(f"{where}: access denied ({code}): not allowed, or the object was "
                            "written with another SSE-C key")
    return None
