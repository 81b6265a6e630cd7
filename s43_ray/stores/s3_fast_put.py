"""PUTs of small objects signed here (AWS Signature V4) and sent on a kept-warm connection.

Why: boto3 spends about 1.5-2 ms of Python CPU on a PutObject (its event system, parameter
validation, the request model, urllib3), more than SeaweedFS takes to store a 4 KiB member. The
same request signed here and sent with :mod:`http.client` costs what obstore's PUT costs
(docs/benchmark.md), and, unlike obstore, carries the ``x-amz-checksum-crc64nvme`` header that
makes the store check the body against the checksum computed at encode time.

Scope: S3-compatible endpoints (``endpoint_url`` set: SeaweedFS, Scaleway, MinIO) reached
without a proxy, bodies up to :data:`FAST_PUT_MAX_BYTES`. Anything else goes through boto3
(:meth:`~.s3.S3Store.put`), as does everything when the config's ``put_client`` is
``boto3`` (``S43_S3_PUT_CLIENT=boto3``). The request is the
one boto3 would send: the same endpoint, addressing style, region, credentials (the config's
key pair, else boto3's standard chain, refreshed by it), SSE-C headers, user metadata,
conditions (``If-None-Match``/``If-Match``), connect and read timeouts. The checksum header is
signed, so the body's integrity is covered without hashing it again (``UNSIGNED-PAYLOAD``);
with ``s3_checksum="off"`` the body's SHA-256 is signed instead.

Answers: a 2xx returns the ETag; when the store echoes a checksum, it must be the one sent.
Errors are classified by the table both other clients share (:mod:`.s3_errors`); transient
ones (5xx, throttling, no answer) are retried with botocore's "standard" policy and reported to
the config's one :class:`~.s3_settings.RetryLog`, exactly like boto3's retries. A connection
the server closed while idle is noticed before it is reused (as urllib3 does); one closed
while a request was being sent is retried like any lost answer. Informational (1xx) answers
are skipped; a connection with bytes past an answer is never reused (they would be read as
the next request's answer).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import re
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
from botocore.exceptions import ProfileNotFound

from ..config import StoreConfig
from ..errors import AccessDenied, InputError, S43Error, StoreError, StoreUnreachable
from .s3_errors import CODE, MESSAGE, classify, first
from .s3_http import Conn
from .s3_settings import DEFAULT_REGION, S3Settings, backoff_s, retry_log

# Larger bodies go through boto3, whose per-byte path is measured at 1.00x a raw PUT at 64 MiB.
FAST_PUT_MAX_BYTES = 8 * 1024**2
_ALGORITHM = "AWS4-HMAC-SHA256"
_UNSIGNED = "UNSIGNED-PAYLOAD"
# Header values go on the wire as they are: printable ASCII only, else boto3 sends the request.
_PLAIN = re.compile(r"[\x20-\x7e]*")


@dataclass(frozen=True)
class _Target:
    """Where a config's PUTs go: scheme, host (as signed), port and the path before the key."""

    https: bool
    host: str  # the Host header: host[:port] as in the endpoint, bucket-prefixed if virtual
    connect_host: str
    port: int
    base_path: str  # "/bucket" (path style) or "" (virtual)
    region: str


def enabled(cfg: StoreConfig, nbytes: int) -> bool:
    """Whether a PUT of ``nbytes`` under ``cfg`` goes through this module."""
    return (cfg.put_client == "auto" and nbytes <= FAST_PUT_MAX_BYTES
            and _target(cfg) is not None)


@lru_cache(maxsize=8)
def _target(cfg: StoreConfig) -> _Target | None:
    """None when this module must not send ``cfg``'s PUTs: no endpoint, or a proxy for it."""
    if cfg.endpoint_url is None:
        return None
    url = urlsplit(cfg.endpoint_url)
    if url.hostname is None or url.path.strip("/"):
        return None
    proxies = urllib.request.getproxies_environment()
    if proxies.get(url.scheme) and not urllib.request.proxy_bypass_environment(  # type: ignore[attr-defined]
            url.netloc):
        return None
    if cfg.addressing_style == "virtual" and not _dns_bucket_host(cfg.bucket, url.hostname):
        return None  # as botocore does: path style for an IP endpoint or a non-DNS bucket name
    https = url.scheme == "https"
    port = url.port or (443 if https else 80)
    host = url.netloc.rsplit("@", 1)[-1]
    region = S3Settings(cfg).region or DEFAULT_REGION
    if cfg.addressing_style == "virtual":
        return _Target(https, f"{cfg.bucket}.{host}", f"{cfg.bucket}.{url.hostname}", port, "",
                       region)
    return _Target(https, host, url.hostname, port, f"/{quote(cfg.bucket, safe='')}", region)


_DNS_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


def _dns_bucket_host(bucket: str, host: str) -> bool:
    """Whether ``bucket`` can be a DNS label in front of ``host`` (a name, not an address)."""
    try:
        ipaddress.ip_address(host)
        return False
    except ValueError:
        return bool(_DNS_BUCKET.fullmatch(bucket))


@lru_cache(maxsize=8)
def _chain(cfg: StoreConfig) -> Any:
    """boto3's standard credential chain for ``cfg`` (refreshable credentials refresh
    themselves); None when the config carries its own key pair."""
    if S3Settings(cfg).static_credentials:
        return None
    try:
        credentials = boto3.session.Session().get_credentials()
    except ProfileNotFound as exc:  # as the boto3 client says it (s3._build_client)
        raise InputError(f"AWS profile {exc.kwargs.get('profile')!r} is not configured; "
                         "expected a profile from ~/.aws/config or no AWS_PROFILE") from exc
    if credentials is None:
        raise AccessDenied(f"PUT at {cfg.display_endpoint}: no credentials found "
                           "(set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")
    return credentials


def _credentials(cfg: StoreConfig) -> tuple[str, str, str | None]:
    static = S3Settings(cfg).static_credentials
    if static:
        return static[0], static[1], None
    frozen = _chain(cfg).get_frozen_credentials()
    return frozen.access_key, frozen.secret_key, frozen.token


@lru_cache(maxsize=64)
def _signing_key(secret: str, day: str, region: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
    for part in (region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def sign(method: str, path: str, headers: dict[str, str], *, payload_hash: str,
         access_key: str, secret_key: str, region: str, now: datetime) -> dict[str, str]:
    """``headers`` (lower-case names, ``host`` included) plus ``x-amz-date``,
    ``x-amz-content-sha256`` and ``authorization``: AWS Signature V4 for S3, every header
    signed. ``path`` is already URI-encoded (S3 encodes it once); no query string."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    signed = {**headers, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    names = sorted(signed)
    canonical = "\n".join([method, path, "",
                           *(f"{n}:{' '.join(signed[n].split())}" for n in names), "",
                           ";".join(names), payload_hash])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join([_ALGORITHM, amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    signature = hmac.new(_signing_key(secret_key, day, region), to_sign.encode(),
                         hashlib.sha256).hexdigest()
    signed["authorization"] = (f"{_ALGORITHM} Credential={access_key}/{scope}, "
                               f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return signed


def plain(headers: Mapping[str, str]) -> bool:
    """Whether every header value can go on the wire as it is (printable ASCII)."""
    return all(_PLAIN.fullmatch(v) for v in headers.values())


# --- connections ------------------------------------------------------------------------------

_LOCAL = threading.local()


def _connection(cfg: StoreConfig, target: _Target) -> Conn:
    """This thread's open connection for ``cfg``, reused while the server keeps it open."""
    pool: dict[StoreConfig, Conn] = _LOCAL.__dict__.setdefault("pool", {})
    conn = pool.get(cfg)
    if conn is not None and not conn.dropped():
        return conn
    if conn is not None:
        conn.close()
    conn = pool[cfg] = Conn(target.connect_host, target.port, https=target.https,
                            connect_timeout=cfg.connect_timeout, read_timeout=cfg.read_timeout)
    return conn


def _discard(cfg: StoreConfig) -> None:
    conn = _LOCAL.__dict__.get("pool", {}).pop(cfg, None)
    if conn is not None:
        conn.close()


# --- the request ------------------------------------------------------------------------------

def put(cfg: StoreConfig, key: str, body: bytes | memoryview, headers: Mapping[str, str], *,
        condition: str | None = None) -> str | None:
    """PUT ``body`` at ``key`` with ``headers`` (lower-case names: content-type, x-amz-meta-*,
    x-amz-checksum-crc64nvme, SSE-C, if-none-match/if-match); returns the ETag. Raises the
    project's errors once the attempt budget is spent. Callers check :func:`enabled` first."""
    target = _target(cfg)
    assert target is not None, "callers check enabled() first"
    path = f"{target.base_path}/{quote(key, safe='/~')}"
    where = f"PUT s3://{cfg.bucket}/{key} at {cfg.display_endpoint}"
    size = memoryview(body).nbytes
    sent_checksum = headers.get("x-amz-checksum-crc64nvme")
    payload_hash = _UNSIGNED if sent_checksum else hashlib.sha256(body).hexdigest()
    attempt = 1
    while True:
        try:
            return _attempt(cfg, target, path, body, size, headers, payload_hash, where,
                            sent_checksum, condition)
        except _Retryable as exc:
            if attempt >= cfg.max_attempts:
                raise exc.error from None
            attempt += 1
            retry_log(cfg).retried("PutObject", attempt, f"/{cfg.bucket}/{key}")
            time.sleep(backoff_s(attempt - 1))


class _Retryable(Exception):
    def __init__(self, error: S43Error) -> None:
        super().__init__(str(error))
        self.error = error


def _attempt(cfg: StoreConfig, target: _Target, path: str, body: bytes | memoryview, size: int,
             headers: Mapping[str, str], payload_hash: str, where: str,
             sent_checksum: str | None, condition: str | None) -> str | None:
    access_key, secret_key, token = _credentials(cfg)
    request = {"host": target.host, **headers}
    if token:
        request["x-amz-security-token"] = token
    signed = sign("PUT", path, request, payload_hash=payload_hash, access_key=access_key,
                  secret_key=secret_key, region=target.region, now=datetime.now(timezone.utc))
    signed["content-length"] = str(size)
    head = "".join([f"PUT {path} HTTP/1.1\r\n",
                    *(f"{name}: {value}\r\n" for name, value in signed.items()),
                    "\r\n"]).encode("ascii")
    try:
        status, answer_headers, answer, closes = _connection(cfg, target).exchange(head, body)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        _discard(cfg)
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise _Retryable(StoreUnreachable(f"{where}: unreachable ({reason[:200]})")) from None
    if closes:
        _discard(cfg)
    if 200 <= status < 300:
        echoed = answer_headers.get("x-amz-checksum-crc64nvme")
        if sent_checksum and echoed and echoed != sent_checksum:
            raise StoreError(f"{where}: the store answered checksum {echoed} for a body sent "
                             f"with {sent_checksum}; expected the same")
        return answer_headers.get("etag")
    text = answer.decode("utf-8", "replace")
    error, retryable = classify(first(CODE, text), status=str(status),
                                message=first(MESSAGE, text), op="PUT", where=where,
                                sse=cfg.sse, condition=condition)
    if retryable:
        raise _Retryable(error)
    raise error


def sse_c_headers(key_b64: str) -> dict[str, str]:
    """The three SSE-C headers of a request, as botocore builds them from the key."""
    key = base64.b64decode(key_b64)
    return {"x-amz-server-side-encryption-customer-algorithm": "AES256",
            "x-amz-server-side-encryption-customer-key": key_b64,
            "x-amz-server-side-encryption-customer-key-md5":
                base64.b64encode(hashlib.md5(key).digest()).decode()}
