"""GETs through obstore (Rust ``object_store``) instead of boto3.

Why: a boto3 request costs about 0.85 ms of Python CPU under the GIL, so a gate verifying
10,000 members with 16 threads is bound by the client, not the server (1.4x a serial loop on
2 cores); obstore does the same GET for a third of that CPU, and its body is a buffer handed
over without a copy. Measured in the benchmark (README, *Benchmark*).

Everything else about a GET stays the project's: the same endpoint, region, addressing and
credentials (the embedded server's, else boto3's standard chain, refreshed), SSE-C, connect and
read timeouts, errors translated into the project's tree, and retries: obstore's own are off,
and this module retries transient failures (5xx, throttling, resets, timeouts) with botocore's
"standard" policy (exponential backoff with jitter, the same attempt budget), logging one
WARNING per retry with its attempt number, exactly like the boto3 calls.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from datetime import timedelta
from functools import lru_cache
from typing import Any, NamedTuple

import boto3
import obstore
from obstore.exceptions import PermissionDeniedError, UnauthenticatedError
from obstore.store import S3Store as ObStore

from .. import metrics
from ..config import StoreConfig
from ..errors import (
    S3_THROTTLING_CODES,
    AccessDenied,
    NoSuchBucket,
    ObjectNotFound,
    S43Error,
    StoreError,
    StoreUnreachable,
    Throttled,
    sse_read_error,
)

log = logging.getLogger("s43_ray.store")

# botocore's "standard" mode: sleep random() * min(MAX_BACKOFF, 2 ** (attempt - 1)) seconds.
MAX_BACKOFF_S = 20.0
_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([^<]+)</Code>")
_RETRYABLE_STATUS = {"500", "502", "503", "504"}


class _RetryCounter:
    def __init__(self) -> None:
        self.retries = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.retries += 1


_COUNTERS: dict[StoreConfig, _RetryCounter] = {}
_COUNTERS_LOCK = threading.Lock()


def _counter(cfg: StoreConfig) -> _RetryCounter:
    with _COUNTERS_LOCK:
        return _COUNTERS.setdefault(cfg, _RetryCounter())


@lru_cache(maxsize=8)
def _ob_store(cfg: StoreConfig) -> ObStore:
    """One obstore client per process and config, like the boto3 client."""
    kwargs: dict[str, Any] = {
        "region": cfg.region or "us-east-1",
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
    if cfg.sse == "sse-c" and cfg.sse_c_key is not None:
        kwargs.update(server_side_encryption="sse-c", sse_customer_key_base64=cfg.sse_c_key.value)
    if cfg.access_key_id and cfg.secret_access_key:
        # Through a provider, not plain config keys: obstore would add an AWS_SESSION_TOKEN
        # from the environment to them (boto3 does not, and the server refuses the pair).
        static = {"access_key_id": cfg.access_key_id.value,
                  "secret_access_key": cfg.secret_access_key.value,
                  "token": None, "expires_at": None}
        kwargs["credential_provider"] = lambda: static
    else:  # boto3's standard chain (env, profile, web identity, instance), refreshed as it does
        from obstore.auth.boto3 import Boto3CredentialProvider

        session = boto3.session.Session()
        if session.get_credentials() is None:
            raise AccessDenied(f"GET at {cfg.endpoint_url or 'AWS S3'}: no credentials found "
                               "(set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")
        kwargs["credential_provider"] = Boto3CredentialProvider(session)
    return ObStore(cfg.bucket, **kwargs)


def _classify(exc: Exception, where: str, sse: str) -> tuple[S43Error, bool]:
    """The project's error for an obstore failure, and whether a retry may succeed."""
    text = str(exc)
    status = (_STATUS.search(text) or [None, ""])[1]
    code = (_CODE.search(text) or [None, ""])[1]
    if isinstance(exc, FileNotFoundError) or (status == "404" and code != "NoSuchBucket"):
        return ObjectNotFound(f"{where}: not found"), False
    if code == "NoSuchBucket":
        return NoSuchBucket(f"{where}: no such bucket"), False
    denied = isinstance(exc, (PermissionDeniedError, UnauthenticatedError)) or status == "403"
    sse_error = sse_read_error(code or status or ("403" if denied else ""), text, op="GET",
                               where=where, sse=sse)
    if sse_error is not None:
        return sse_error, False
    if denied:
        return AccessDenied(f"{where}: access denied ({code or status or '403'})"), False
    if code in S3_THROTTLING_CODES or status == "429":
        return Throttled(f"{where}: throttled ({code or status}) after retries"), True
    if status in _RETRYABLE_STATUS:
        return StoreError(f"{where}: {code or status}"), True
    if status:
        return StoreError(f"{where}: {code or status}"), False
    # No HTTP answer: refused, reset, DNS, timeout.
    return StoreUnreachable(f"{where}: unreachable ({text.splitlines()[0][:200]})"), True


class GetResult(NamedTuple):
    body: memoryview  # without a copy
    content_type: str | None
    last_modified: float  # epoch seconds
    metadata: dict[str, str]  # user metadata
    etag: str | None  # as the store sent it, quotes included


def get(cfg: StoreConfig, key: str) -> GetResult:
    """GET ``key`` whole. Raises the project's errors after the attempt budget."""
    store, counter = _ob_store(cfg), _counter(cfg)
    endpoint = cfg.endpoint_url or "AWS S3"
    where = f"GET s3://{cfg.bucket}/{key} at {endpoint}"
    attempt = 1
    while True:
        try:
            result = obstore.get(store, key)
            body = memoryview(result.bytes())
            attrs = dict(result.attributes)
            break
        except Exception as exc:  # obstore raises its own classes and builtins
            error, retryable = _classify(exc, where, cfg.sse)
            if not retryable or attempt >= cfg.max_attempts:
                raise error from None
            attempt += 1
            counter.add()
            metrics.record_retry("GetObject")
            log.warning("s3 GetObject retry attempt %d to %s (/%s/%s)", attempt, endpoint,
                        cfg.bucket, key)
            time.sleep(random.random() * min(MAX_BACKOFF_S, 2 ** (attempt - 2)))
    content_type = attrs.pop("Content-Type", None)
    for name in ("Content-Disposition", "Content-Encoding", "Content-Language",
                 "Cache-Control"):
        attrs.pop(name, None)
    metadata = {str(k): str(v) for k, v in attrs.items()}
    etag = result.meta.get("e_tag")
    return GetResult(body, content_type, result.meta["last_modified"].timestamp(), metadata,
                     str(etag) if etag else None)


def retries(cfg: StoreConfig) -> int:
    """GETs retried by this process for ``cfg`` so far."""
    return _counter(cfg).retries
