"""The S3 store: :class:`~s43_ray.stores.base.Store` over boto3 (and obstore for GETs).

Everything above the store boundary sees the :class:`Store` protocol and the project's own
errors (:mod:`s43_ray.errors`); botocore's exceptions stop here, translated by :func:`translate`
with the table both S3 clients share (:mod:`.s3_errors`). Conditional writes and ETags: see
:mod:`.base`. Bucket configuration (lifecycle, encryption) is :mod:`.s3_admin`'s.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from ..config import StoreConfig
from ..errors import AccessDenied, InputError, SseKeyRequired, StoreError, StoreUnreachable
from . import hooks
from . import s3_fast_get as fast_get
from . import s3_fast_put as fast_put
from .base import ObjectInfo, finished_within, put_condition
from .s3_errors import classify
from .s3_listing import common_prefixes, list_pages
from .s3_settings import RetryLog, S3Settings, retry_log

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# GETs of objects at least this large go through boto3: obstore costs less CPU per request
# (4 KiB: 1.9 ms vs 2.7 ms here) but more per byte (64 MiB: ~58 ms vs 54 ms; 256 MiB: 20 %).
BOTO3_GET_MIN_BYTES = 8 * 1024**2
# S3 lists at most 1000 keys per page; asking for the maximum keeps a 10,000-member run at 10 calls.
LIST_PAGE_SIZE = 1000
# DeleteObjects takes at most 1000 keys a call.
DELETE_BATCH = 1000


# --- the boto3 client -------------------------------------------------------------------------

def _botocore_config(cfg: StoreConfig, *, connect_timeout: float, read_timeout: float,
                     attempts: int, pool: int) -> Config:
    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        # total_max_attempts counts the first attempt; botocore's max_attempts would not.
        retries={"mode": "standard", "total_max_attempts": attempts},
        max_pool_connections=pool,
        s3={"addressing_style": cfg.addressing_style},
        # We compute and verify our own CRC64NVME; botocore must not hash the payload again.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


@lru_cache(maxsize=8)
def client_for(cfg: StoreConfig) -> S3Client:
    """One boto3 client per process and config: built once in each Ray worker, never per call.
    Its retried attempts go to the config's :class:`RetryLog`."""
    client = _build_client(cfg, _botocore_config(
        cfg, connect_timeout=cfg.connect_timeout, read_timeout=cfg.read_timeout,
        attempts=cfg.max_attempts, pool=cfg.max_pool_connections))
    client.meta.events.register("request-created.s3.*", _RetryHandler(retry_log(cfg)))
    return client


class _RetryHandler:
    """botocore's ``request-created`` event: attempt 2 and later are retries."""

    def __init__(self, retries: RetryLog) -> None:
        self.retries = retries

    def __call__(self, request: Any, operation_name: str = "", **_: Any) -> None:
        attempt = getattr(request, "context", {}).get("retries", {}).get("attempt", 1)
        if attempt > 1:
            path = unquote(urlsplit(str(getattr(request, "url", ""))).path)
            self.retries.retried(operation_name, attempt, path)


@lru_cache(maxsize=8)
def probe_client(cfg: StoreConfig, timeout: float) -> S3Client:
    """The client of :meth:`S3Store.probe`: the same endpoint, credentials, region and
    addressing as :func:`client_for`, but one attempt and timeouts bounded by ``timeout``."""
    return _build_client(cfg, _botocore_config(
        cfg, connect_timeout=min(timeout, cfg.connect_timeout), read_timeout=timeout,
        attempts=1, pool=4))


def _build_client(cfg: StoreConfig, botocfg: Config) -> S3Client:
    settings = S3Settings(cfg)
    kwargs: dict[str, Any] = {"endpoint_url": cfg.endpoint_url, "config": botocfg}
    if settings.region:
        kwargs["region_name"] = settings.region
    if settings.static_credentials:
        kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"] = \
            settings.static_credentials
    try:
        return boto3.session.Session().client("s3", **kwargs)
    except ProfileNotFound as exc:
        raise InputError(f"AWS profile {exc.kwargs.get('profile')!r} is not configured; "
                         "expected a profile from ~/.aws/config or no AWS_PROFILE") from exc
    except BotoCoreError as exc:
        raise StoreError(f"S3 client for {cfg.display_endpoint} could not be built: "
                         f"{exc}") from exc


def error_code(exc: ClientError) -> str:
    """The S3 error code of a refusal, else its HTTP status."""
    err = exc.response.get("Error", {})
    return str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


def translate(exc: Exception, *, op: str, target: str, endpoint: str,
              condition: str | None = None, sse: str = "none") -> StoreError | SseKeyRequired:
    """A botocore exception as the project's error; the message names ``op`` and ``target``.
    ``condition``: the header of a conditional request (see :func:`.s3_errors.classify`)."""
    where = f"{op} {target} at {endpoint}"
    if isinstance(exc, ClientError):
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        message = str(exc.response.get("Error", {}).get("Message", ""))
        return classify(error_code(exc), status=status, message=message, op=op, where=where,
                        sse=sse, condition=condition)[0]
    if isinstance(exc, NoCredentialsError):
        return AccessDenied(f"{where}: no credentials found (set AWS_ACCESS_KEY_ID/"
                            "AWS_SECRET_ACCESS_KEY or a profile)")
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError,
                        ReadTimeoutError)):
        return StoreUnreachable(f"{where}: unreachable ({type(exc).__name__})")
    return StoreUnreachable(f"{where}: {type(exc).__name__}: {exc}")


def _body(body: bytes | memoryview) -> Any:
    """A request body botocore accepts without copying the payload."""
    if isinstance(body, bytes):
        return body
    return _ReadOnlyView(body.cast("B")) if body.c_contiguous else bytes(body)


class _ReadOnlyView(io.RawIOBase):
    """A seekable file over a memoryview, so a PUT streams the encoded buffer without a copy."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        chunk = self._view[self._pos:self._pos + len(buffer)]
        n = len(chunk)
        memoryview(buffer).cast("B")[:n] = chunk
        self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else self._pos + size
        chunk = bytes(self._view[self._pos:end])
        self._pos += len(chunk)
        return chunk


class S3Store:
    """:class:`Store` over boto3; safe to share between threads."""

    def __init__(self, cfg: StoreConfig) -> None:
        self.cfg = cfg
        self._client: S3Client | None = None  # built on first use: small PUTs and GETs
        # never need it, and building one costs ~0.2 s of CPU (botocore's service model)
        self._endpoint = cfg.display_endpoint
        # SSE-C: botocore adds the key's base64 and MD5 headers to every PUT, HEAD and GET.
        self._sse: dict[str, Any] = {}
        self._sse_headers: dict[str, str] = {}  # the same, as headers (small PUTs)
        key = S3Settings(cfg).sse_c_key_b64
        if key is not None:
            self._sse = {"SSECustomerAlgorithm": "AES256",
                         "SSECustomerKey": base64.b64decode(key)}
            self._sse_headers = fast_put.sse_c_headers(key)

    @property
    def url(self) -> str:
        return self.cfg.url

    @property
    def client(self) -> S3Client:
        """The boto3 client this store shares with every other store of its config."""
        if self._client is None:
            self._client = client_for(self.cfg)
        return self._client

    @property
    def retries(self) -> int:
        """Retried attempts made by this process's clients for this config so far."""
        return retry_log(self.cfg).retries

    def _fail(self, exc: Exception, op: str, key: str, condition: str | None = None
              ) -> StoreError | SseKeyRequired:
        return translate(exc, op=op, target=f"s3://{self.cfg.bucket}/{key}",
                         endpoint=self._endpoint, condition=condition, sse=self.cfg.sse)

    def put(self, key: str, body: bytes | memoryview, *, metadata: Mapping[str, str],
            s3_checksum: str | None = None, content_type: str = "application/octet-stream",
            if_none_match: bool = False, if_match: str | None = None) -> str | None:
        """PutObject; returns the ETag the store answers with.

        The conditions travel as ``If-None-Match: *`` / ``If-Match``; a store that ignores them
        writes anyway (callers that must know check with a read-back). Retries: a conditional
        PUT that reached the store but whose answer was lost (reset, read timeout) is retried
        (by botocore, or by :mod:`.s3_fast_put` for small bodies), and the retry then fails
        the condition against the object the first attempt wrote: :class:`PreconditionFailed`
        although this caller won. Callers read the key back and compare it with what they wrote
        (:func:`.base.create_once` for creates, :mod:`s43_ray.fence` for members)."""
        condition = put_condition(if_none_match, if_match)
        size = body.nbytes if isinstance(body, memoryview) else len(body)
        checksum = s3_checksum if s3_checksum and self.cfg.s3_checksum == "crc64nvme" else None
        if fast_put.enabled(self.cfg, size):
            headers = {"content-type": content_type,
                       **{f"x-amz-meta-{k.lower()}": v for k, v in metadata.items()},
                       **self._sse_headers}
            if checksum:
                headers["x-amz-checksum-crc64nvme"] = checksum
            if if_none_match:
                headers["if-none-match"] = "*"
            if if_match is not None:
                headers["if-match"] = if_match
            if fast_put.plain(headers):
                with hooks.request("put", metadata=metadata, content_type=content_type,
                                   nbytes=size):
                    return fast_put.put(self.cfg, key, body, headers, condition=condition)
        kwargs: dict[str, Any] = {"Bucket": self.cfg.bucket, "Key": key, "Body": _body(body),
                                  "Metadata": dict(metadata), "ContentType": content_type,
                                  **self._sse}
        if checksum:
            kwargs["ChecksumCRC64NVME"] = checksum
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        with hooks.request("put", metadata=metadata, content_type=content_type, nbytes=size):
            try:
                resp = self.client.put_object(**kwargs)
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc, "PUT", key, condition) from exc
        etag = resp.get("ETag")
        return str(etag) if etag else None

    def get(self, key: str, *, size_hint: int | None = None) -> tuple[memoryview, ObjectInfo]:
        """Small and unknown-size objects through obstore (:mod:`.s3_fast_get`): a third of
        boto3's CPU per request, the body without a copy. Objects known to be large through
        boto3, whose per-byte path is faster (docs/benchmark.md). Same settings, errors,
        retries and retry warnings either way."""
        if size_hint is not None and size_hint >= BOTO3_GET_MIN_BYTES:
            return self._get_boto3(key)
        with hooks.request("get") as req:
            got = fast_get.get(self.cfg, key)
            req.metadata, req.content_type = got.metadata, got.content_type
            req.nbytes = len(got.body)
        return got.body, ObjectInfo(key=key, size=len(got.body), metadata=got.metadata,
                                    last_modified=got.last_modified, etag=got.etag)

    def _get_boto3(self, key: str) -> tuple[memoryview, ObjectInfo]:
        with hooks.request("get") as req:
            try:
                resp = self.client.get_object(Bucket=self.cfg.bucket, Key=key, **self._sse)
                body = resp["Body"].read()
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc, "GET", key) from exc
            req.metadata, req.content_type = resp.get("Metadata"), resp.get("ContentType")
            req.nbytes = len(body)
        info = ObjectInfo(key=key, size=len(body), metadata=resp.get("Metadata", {}),
                          last_modified=resp["LastModified"].timestamp(),
                          etag=resp.get("ETag"))
        return memoryview(body), info

    def head(self, key: str) -> ObjectInfo:
        with hooks.request("head") as req:
            try:
                resp = self.client.head_object(Bucket=self.cfg.bucket, Key=key,
                                                ChecksumMode="ENABLED", **self._sse)
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc, "HEAD", key) from exc
            req.metadata, req.content_type = resp.get("Metadata"), resp.get("ContentType")
        return ObjectInfo(key=key, size=int(resp["ContentLength"]),
                          metadata=resp.get("Metadata", {}),
                          last_modified=resp["LastModified"].timestamp(),
                          s3_checksum=resp.get("ChecksumCRC64NVME"), etag=resp.get("ETag"))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        for page in self._pages(prefix):
            for obj in page.get("Contents", []):
                yield ObjectInfo(key=obj["Key"], size=int(obj["Size"]),
                                 last_modified=obj["LastModified"].timestamp(),
                                 etag=obj.get("ETag"))

    def list_dirs(self, prefix: str) -> Iterator[str]:
        """ListObjectsV2 with ``Delimiter='/'``: one request per :data:`LIST_PAGE_SIZE`
        folders, whatever number of keys each holds; same client, retries and errors as
        :meth:`list`."""
        return common_prefixes(self._pages(prefix, delimiter="/"))

    def _pages(self, prefix: str, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
        return list_pages(self.client, bucket=self.cfg.bucket, prefix=prefix,
                          page_size=LIST_PAGE_SIZE, delimiter=delimiter,
                          fail=lambda exc: self._fail(exc, "LIST", prefix))

    def delete(self, key: str) -> None:
        with hooks.request("delete"):
            try:
                self.client.delete_object(Bucket=self.cfg.bucket, Key=key)
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc, "DELETE", key) from exc

    def delete_many(self, keys: Sequence[str]) -> None:
        """DeleteObjects, :data:`DELETE_BATCH` keys a call; a key the store refuses raises
        (naming it, and how many of its batch were refused); absent keys are not an error."""
        for i in range(0, len(keys), DELETE_BATCH):
            chunk = keys[i:i + DELETE_BATCH]
            with hooks.request("delete"):
                try:
                    resp = self.client.delete_objects(Bucket=self.cfg.bucket, Delete={
                        "Objects": [{"Key": k} for k in chunk], "Quiet": True})
                except (ClientError, BotoCoreError) as exc:
                    raise self._fail(exc, "DELETE", chunk[0]) from exc
            errors = resp.get("Errors", [])
            if errors:
                first = errors[0]
                refused = ClientError({"Error": {"Code": first.get("Code", ""),
                                                 "Message": first.get("Message", "")}},
                                      "DeleteObjects")
                err = self._fail(refused, "DELETE", str(first.get("Key")))
                raise type(err)(f"{err}; {len(errors)} of {len(chunk)} keys refused") \
                    from refused

    def check(self) -> None:
        with hooks.request("list"):
            try:
                self.client.list_objects_v2(Bucket=self.cfg.bucket,
                                             Prefix=self.cfg.prefix + "/", MaxKeys=1)
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc, "LIST", self.cfg.prefix + "/") from exc

    def probe(self, timeout: float) -> None:
        """One LIST of at most one key under the prefix, on a client of its own (one attempt,
        connect timeout ``min(timeout, cfg.connect_timeout)``, read timeout ``timeout``): it
        returns within about ``timeout`` plus the connect timeout, even when the server accepts
        connections but never answers (a stopped process); a hard deadline 1 s later covers
        what botocore's timeouts do not (DNS, credential providers). Raises
        :class:`StoreUnreachable` (no answer, refused) or what the answer means
        (:class:`AccessDenied`, :class:`NoSuchBucket`, ...)."""
        if not timeout > 0:
            raise ValueError(f"probe timeout must be positive, got {timeout!r}")
        target = self.cfg.prefix + "/"

        def silent() -> StoreUnreachable:
            return StoreUnreachable(f"LIST s3://{self.cfg.bucket}/{target} at "
                                    f"{self._endpoint}: no answer within {timeout:g}s (probe)")

        connect_timeout = min(timeout, self.cfg.connect_timeout)

        def list_one() -> None:
            client = probe_client(self.cfg, float(timeout))
            try:
                client.list_objects_v2(Bucket=self.cfg.bucket, Prefix=target, MaxKeys=1)
            except (ReadTimeoutError, ConnectTimeoutError) as exc:
                raise silent() from exc
            except (ClientError, BotoCoreError) as exc:
                error = self._fail(exc, "LIST", target)
                if type(error) is StoreUnreachable:
                    error = StoreUnreachable(f"{error} (probe)")
                raise error from exc

        with hooks.request("list"):
            if not finished_within(timeout + connect_timeout + 1.0, list_one):
                raise silent()
