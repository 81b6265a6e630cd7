"""GETs through obstore (Rust ``object_store``) instead of boto3.

Why: a boto3 request costs about 0.85 ms of Python CPU under the GIL, so a gate verifying
10,000 members with 16 threads is bound by the client, not the server (1.4x a serial loop on
2 cores); obstore does the same GET for a third of that CPU, and its body is a buffer handed
over without a copy. Measured in the benchmark (docs/benchmark.md).

Everything else about a GET stays the project's: the same endpoint, region, addressing and
credentials (the embedded server's, else boto3's standard chain, refreshed), SSE-C, connect and
read timeouts (:mod:`.s3_settings`), errors translated by the table both clients share
(:mod:`.s3_errors`), and retries: obstore's own are off, and this module retries transient
failures (5xx, throttling, resets, timeouts) with botocore's "standard" policy (exponential
backoff with jitter, the same attempt budget), reporting each retry to the config's one
:class:`~.s3_settings.RetryLog`, exactly like the boto3 calls.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from functools import lru_cache
from typing import Any, NamedTuple

import boto3
import obstore
from obstore.exceptions import PermissionDeniedError, UnauthenticatedError
from obstore.store import S3Store as ObStore

from ..config import StoreConfig
from ..errors import AccessDenied, ObjectNotFound, S43Error, StoreUnreachable
from .s3_errors import CODE, THROTTLING, classify, first
from .s3_settings import DEFAULT_REGION, S3Settings, backoff_s, retry_log

_STATUS = re.compile(r"status code: (\d{3})")


@lru_cache(maxsize=8)
def _ob_store(cfg: StoreConfig) -> ObStore:
    """One obstore client per process and config, like the boto3 client."""
    settings = S3Settings(cfg)
    kwargs: dict[str, Any] = {
        "region": settings.region or DEFAULT_REGION,
        "virtual_hosted_style_request": cfg.addressing_style == "virtual",
        "client_options": {"connect_timeout": f"{cfg.connect_timeout}s",
                           "timeout": f"{cfg.read_timeout}s",
                           "allow_http": bool(cfg.endpoint_url
                                              and cfg.endpoint_url.startswith("http://"))},
        # Our own retries, logged per attempt (see the module docstring).
        "retry_config": {"max_retries": 0, "retry_timeout": timedelta(seconds=1)},
    }
    if cfg.endpoint_url:
        # obstore also reads AWS_ENDPOINT_URL_S3 from the environment and lets it win over
        # `endpoint`; the config decides here (the embedded server ignores that variable).
        kwargs["endpoint"] = kwargs["aws_endpoint_url_s3"] = cfg.endpoint_url
    if settings.sse_c_key_b64 is not None:
        kwargs.update(server_side_encryption="sse-c",
                      sse_customer_key_base64=settings.sse_c_key_b64)
    if settings.static_credentials:
        # Through a provider, not plain config keys: obstore would add an AWS_SESSION_TOKEN
        # from the environment to them (boto3 does not, and the server refuses the pair).
        key_id, secret = settings.static_credentials
        static = {"access_key_id": key_id, "secret_access_key": secret,
                  "token": None, "expires_at": None}
        kwargs["credential_provider"] = lambda: static
    else:  # boto3's standard chain (env, profile, web identity, instance), refreshed as it does
        from obstore.auth.boto3 import Boto3CredentialProvider

        session = boto3.session.Session()
        if session.get_credentials() is None:
            raise AccessDenied(f"GET at {cfg.display_endpoint}: no credentials found "
                               "(set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")
        kwargs["credential_provider"] = Boto3CredentialProvider(session)
    return ObStore(cfg.bucket, **kwargs)


def classify_failure(exc: Exception, where: str, sse: str) -> tuple[S43Error, bool]:
    """The project's error for an obstore failure, and whether a retry may succeed: the S3
    code and status are read from obstore's message and classified like boto3's."""
    if isinstance(exc, FileNotFoundError):
        return ObjectNotFound(f"{where}: not found"), False
    text = str(exc)
    status, code = first(_STATUS, text), first(CODE, text)
    if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)) and not status:
        status = "403"
    if not status and code != "NoSuchBucket" and code not in THROTTLING:
        # No HTTP answer: refused, reset, DNS, timeout.
        return StoreUnreachable(f"{where}: unreachable ({text.splitlines()[0][:200]})"), True
    return classify(code, status=status, message=text, op="GET", where=where, sse=sse)


class GetResult(NamedTuple):
    body: memoryview  # without a copy
    content_type: str | None
    last_modified: float  # epoch seconds
    metadata: dict[str, str]  # user metadata
    etag: str | None  # as the store sent it, quotes included


def get(cfg: StoreConfig, key: str) -> GetResult:
    """GET ``key`` whole. Raises the project's errors after the attempt budget."""
    store = _ob_store(cfg)
    where = f"GET s3://{cfg.bucket}/{key} at {cfg.display_endpoint}"
    attempt = 1
    while True:
        try:
            result = obstore.get(store, key)
            body = memoryview(result.bytes())
            attrs = dict(result.attributes)
            break
        except Exception as exc:  # obstore raises its own classes and builtins
            error, retryable = classify_failure(exc, where, cfg.sse)
            if not retryable or attempt >= cfg.max_attempts:
                raise error from None
            attempt += 1
            retry_log(cfg).retried("GetObject", attempt, f"/{cfg.bucket}/{key}")
            time.sleep(backoff_s(attempt - 1))
    content_type = attrs.pop("Content-Type", None)
    for name in ("Content-Disposition", "Content-Encoding", "Content-Language",
                 "Cache-Control"):
        attrs.pop(name, None)
    metadata = {str(k): str(v) for k, v in attrs.items()}
    etag = result.meta.get("e_tag")
    return GetResult(body, content_type, result.meta["last_modified"].timestamp(), metadata,
                     str(etag) if etag else None)
