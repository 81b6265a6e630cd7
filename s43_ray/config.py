"""Typed, frozen, picklable configuration. Only :func:`env_defaults` reads ``os.environ``.

Ray ships these objects to tasks, so they hold no clients and no open resources. Credentials
normally come from the standard AWS chain inside each worker (env vars from a Kubernetes Secret,
a profile, instance metadata); the only credentials a config carries are the ones the embedded
local server generates, wrapped in :class:`Secret` so they never print.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from .errors import InputError, InvalidSetting, InvalidStoreUrl
from .keys import DEFAULT_PREFIX

AddressingStyle = Literal["path", "virtual", "auto"]
# "crc64nvme": send our CRC64NVME as S3's own checksum header, so the server verifies the upload
# and keeps the checksum (HEAD returns it). "off": send no checksum headers at all, for
# S3-compatible stores that reject the CRC headers boto3 >= 1.36 adds by default.
S3Checksum = Literal["crc64nvme", "off"]
# Encryption at rest. "none": the store's own behaviour; "bucket-default": rely on the bucket's
# default encryption (Scaleway SSE-ONE, AWS SSE-S3; `s43-ray bucket check` proves it is set);
# "sse-c": every PUT, HEAD and GET carries the customer's 256-bit key (and its MD5), and the
# store cannot read an object back without it.
SseMode = Literal["none", "sse-c", "bucket-default"]
SSE_MODES: tuple[SseMode, ...] = ("none", "sse-c", "bucket-default")
SSE_C_KEY_BYTES = 32
# The endpoint's name in messages when none is configured (AWS's own).
AWS_S3 = "AWS S3"
ADDRESSING_STYLES: tuple[AddressingStyle, ...] = ("path", "virtual", "auto")
S3_CHECKSUMS: tuple[S3Checksum, ...] = ("crc64nvme", "off")
# Which client sends PUTs: "auto" (s43_ray's own SigV4 client for bodies up to 8 MiB to an
# S3-compatible endpoint without a proxy, boto3 otherwise; stores/s3_fast_put.py), "boto3" (all).
PutClient = Literal["auto", "boto3"]
PUT_CLIENTS: tuple[PutClient, ...] = ("auto", "boto3")
# S3 attempts per request, the first included.
MAX_ATTEMPTS_RANGE = (1, 20)

# Environment variables read by env_defaults() (and nowhere else).
ENV_STORE = "S43_STORE"
ENV_ENDPOINT = "AWS_ENDPOINT_URL_S3"
ENV_ENDPOINT_GENERIC = "AWS_ENDPOINT_URL"
ENV_REGION = "AWS_REGION"
ENV_REGION_DEFAULT = "AWS_DEFAULT_REGION"
ENV_ADDRESS = "RAY_ADDRESS"
ENV_ADDRESSING = "S43_S3_ADDRESSING_STYLE"
ENV_S3_CHECKSUM = "S43_S3_CHECKSUM"
ENV_MAX_ATTEMPTS = "S43_S3_MAX_ATTEMPTS"
ENV_PUT_CLIENT = "S43_S3_PUT_CLIENT"
ENV_LOCAL_DIR = "S43_LOCAL_S3_DIR"
ENV_SSE = "S43_SSE"
ENV_SSE_C_KEY = "S43_SSE_C_KEY"


@dataclass(frozen=True, repr=False)
class Secret:
    """A credential value that never appears in repr, str, logs or events."""

    value: str

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class StoreConfig:
    """Where and how to reach the S3 store."""

    bucket: str
    prefix: str = DEFAULT_PREFIX  # key prefix under the bucket, no leading/trailing '/'
    endpoint_url: str | None = None  # None: AWS; Scaleway is https://s3.fr-par.scw.cloud
    region: str | None = None  # None: the SDK's own default chain, else us-east-1
    addressing_style: AddressingStyle = "path"  # path works on every S3-compatible store
    s3_checksum: S3Checksum = "crc64nvme"  # see S3Checksum above
    put_client: PutClient = "auto"  # see PutClient above
    connect_timeout: float = 5.0  # seconds; a dead host fails fast instead of hanging
    read_timeout: float = 60.0  # seconds; long enough for a 256 MiB body on a slow link
    max_attempts: int = 5  # botocore "standard" retry mode: attempts including the first
    max_pool_connections: int = 32  # gate verification runs this many GETs at once
    access_key_id: Secret | None = None  # only set for the embedded server; else the AWS chain
    secret_access_key: Secret | None = None
    sse: SseMode = "none"
    sse_c_key: Secret | None = None  # base64 of the 32-byte key; travels in task args, never
    # in runtime_env, a log line, an event or an object

    def __post_init__(self) -> None:
        """Every field checked here, once, whoever builds the config (the CLI, a library
        user, a test): :class:`InvalidSetting` names the field, the value and what it takes."""
        for name, allowed in (("addressing_style", ADDRESSING_STYLES),
                              ("s3_checksum", S3_CHECKSUMS), ("put_client", PUT_CLIENTS),
                              ("sse", SSE_MODES)):
            if getattr(self, name) not in allowed:
                raise InvalidSetting(name, getattr(self, name), f"one of {list(allowed)}")
        lo, hi = MAX_ATTEMPTS_RANGE
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) \
                or not lo <= self.max_attempts <= hi:
            raise InvalidSetting("max_attempts", self.max_attempts, f"an integer {lo}..{hi}")
        for name in ("connect_timeout", "read_timeout", "max_pool_connections"):
            if not getattr(self, name) > 0:
                raise InvalidSetting(name, getattr(self, name), "a positive number")
        if self.endpoint_url is not None:
            validate_endpoint(self.endpoint_url)
        if (self.sse == "sse-c") != (self.sse_c_key is not None):
            raise InputError("--sse sse-c needs a customer key and only it takes one; expected "
                             f"{ENV_SSE_C_KEY} or --sse-c-key-file with --sse sse-c")

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def display_endpoint(self) -> str:
        """The endpoint as messages name it: its URL, or ``AWS S3`` for AWS's own."""
        return self.endpoint_url or AWS_S3


@dataclass(frozen=True)
class FileStoreConfig:
    """A directory used as the store: ``file:///mnt/shared`` holds ``<root>/<prefix>/<run_id>/..``.

    Correct only when every node sees the same directory (a shared volume such as NFS). The root
    is resolved on the node that opens it, ``~`` and ``$VARS`` included: on a pod's own disk
    (``file:///tmp``) each node sees only its own files, the bug this project exists to fix.
    """

    root: str
    prefix: str = DEFAULT_PREFIX
    max_attempts: int = 1  # no network, no retries; kept for symmetry with StoreConfig

    @property
    def url(self) -> str:
        return f"file://{self.root}"

    @property
    def endpoint_url(self) -> str | None:
        return None

    @property
    def display_endpoint(self) -> str:
        return self.url


AnyStoreConfig = StoreConfig | FileStoreConfig


def is_file_url(url: str) -> bool:
    return url.startswith("file:")


def parse_file_url(url: str) -> str:
    """``file:///ABSOLUTE/DIR`` -> the directory; ``~`` and ``$VARS`` are left for each node."""
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in {"", "localhost"} or parts.query \
            or parts.fragment:
        raise InvalidStoreUrl(f"store {url!r} is not a file store URL; expected file:///DIR")
    path = parts.path.rstrip("/") or "/"
    if not path.startswith("/"):
        raise InvalidStoreUrl(f"store {url!r} has a relative path; expected file:///ABSOLUTE/DIR")
    if path == "/":
        raise InvalidStoreUrl(f"store {url!r} is the filesystem root; expected file:///SHARED/DIR")
    if path.startswith(("/$", "/~")):
        path = path[1:]  # file:///$TMPDIR/x and file:///~/x name $TMPDIR/x and ~/x
    if ".." in path.split("/") or "\x00" in path:
        raise InvalidStoreUrl(f"store {url!r} contains '..'; expected a plain directory path")
    return path


_BUCKET_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")
# Name forms S3 reserves (AWS's bucket naming rules; Scaleway's are a subset).
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_name_problem(bucket: str) -> str:
    """What S3 would reject about a bucket name ("" when it is valid)."""
    if not 3 <= len(bucket) <= 63:
        return f"{len(bucket)} characters"
    bad = sorted(set(bucket) - _BUCKET_CHARS)
    if bad:
        return f"character(s) {', '.join(repr(c) for c in bad)}"
    if not bucket[0].isalnum() or not bucket[-1].isalnum():
        return "it must start and end with a letter or digit"
    if ".." in bucket or ".-" in bucket or "-." in bucket:
        return "two adjacent periods, or a period next to a hyphen"
    if all(part.isdigit() for part in bucket.split(".")) and bucket.count(".") == 3:
        return "it is formatted as an IP address"
    if bucket.startswith(_RESERVED_PREFIXES) or bucket.endswith(_RESERVED_SUFFIXES):
        return "a prefix or suffix S3 reserves"
    return ""


def parse_store_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET[/PREFIX]`` -> (bucket, prefix); the default prefix when none is given."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise InvalidStoreUrl(f"store {url!r} is not a store URL; expected s3://BUCKET/PREFIX "
                              "or file:///SHARED/DIR")
    bucket = parts.netloc
    problem = bucket_name_problem(bucket)
    if problem:
        raise InvalidStoreUrl(f"store {url!r} has bucket {bucket!r}: {problem}; expected 3-63 "
                              "lower-case ASCII letters, digits, '-' or '.', as S3 requires")
    prefix = parts.path.strip("/")
    if "//" in prefix or any(seg in {".", ".."} for seg in prefix.split("/") if prefix):
        raise InvalidStoreUrl(f"store {url!r} has prefix {prefix!r}; expected plain "
                              "'/'-separated names")
    return bucket, prefix or DEFAULT_PREFIX


def validate_endpoint(url: str) -> str:
    """An endpoint must be an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InputError(f"endpoint URL {url!r} is not valid; expected http(s)://HOST[:PORT]")
    try:
        port = parts.port
    except ValueError as exc:
        raise InputError(f"endpoint URL {url!r} has a bad port; expected 1-65535") from exc
    if port == 0:
        raise InputError(f"endpoint URL {url!r} has port 0; expected 1-65535")
    return url


def load_sse_c_key(raw: bytes | str, source: str) -> Secret:
    """A customer key from base64 text (or, from a file, 32 raw bytes), as base64 in a
    :class:`Secret`. Errors name the source, never the value."""
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) == SSE_C_KEY_BYTES and not isinstance(raw, str):
        return Secret(base64.b64encode(data).decode())
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != SSE_C_KEY_BYTES:
        raise InputError(f"SSE-C key from {source} is not a 256-bit key; expected base64 of "
                         f"{SSE_C_KEY_BYTES} bytes (openssl rand -base64 32)")
    return Secret(base64.b64encode(key).decode())


@dataclass(frozen=True)
class EnvDefaults:
    """Defaults for CLI flags, taken from the environment: raw text, None when unset. The
    config built from them checks them (:class:`StoreConfig`), and the CLI names the variable
    a bad value came from."""

    store: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    address: str | None = None
    addressing_style: str | None = None
    s3_checksum: str | None = None
    put_client: str | None = None
    max_attempts: str | None = None
    local_dir: str | None = None
    sse: str | None = None
    sse_c_key: Secret | None = None  # the raw variable, unchecked until a command uses it


def env_max_attempts(raw: str | None) -> int | None:
    """``S43_S3_MAX_ATTEMPTS`` as an integer (None when unset); :class:`InputError` naming the
    variable when it is not one (its range is checked by :class:`StoreConfig`)."""
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        lo, hi = MAX_ATTEMPTS_RANGE
        raise InputError(f"{ENV_MAX_ATTEMPTS}={raw!r} is not valid; expected an integer "
                         f"{lo}..{hi}") from None


def env_defaults(environ: Mapping[str, str] | None = None) -> EnvDefaults:
    """Read the environment once, at the CLI boundary."""
    env = os.environ if environ is None else environ
    return EnvDefaults(
        store=env.get(ENV_STORE) or None,
        endpoint_url=env.get(ENV_ENDPOINT) or env.get(ENV_ENDPOINT_GENERIC) or None,
        region=env.get(ENV_REGION) or env.get(ENV_REGION_DEFAULT) or None,
        address=env.get(ENV_ADDRESS) or None,
        addressing_style=env.get(ENV_ADDRESSING) or None,
        s3_checksum=env.get(ENV_S3_CHECKSUM) or None,
        put_client=env.get(ENV_PUT_CLIENT) or None,
        max_attempts=env.get(ENV_MAX_ATTEMPTS) or None,
        local_dir=env.get(ENV_LOCAL_DIR) or None,
        sse=env.get(ENV_SSE) or None,
        sse_c_key=Secret(env[ENV_SSE_C_KEY]) if env.get(ENV_SSE_C_KEY) else None,
    )
