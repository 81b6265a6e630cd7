"""The store boundary's shape: what every store offers, whatever it is built on.

One small protocol per capability (:class:`Reads`, :class:`Writes`, :class:`Lists`,
:class:`ListsDirs`, :class:`Heads`, :class:`Deletes`, :class:`BatchDeletes`,
:class:`BucketAdmin`); :class:`Store` is the set the task, the gate, the reports, the run
listing and the benchmark depend on; :class:`ObjectInfo` is what a HEAD or a LIST says of an
object. Implementations: :mod:`.s3` (S3 through boto3 and obstore; :mod:`.s3_listing` for its
paginated listings, :mod:`.s3_admin` for bucket settings), :mod:`.file` (a shared folder),
:mod:`.memory` (pure unit tests). Code above this package names these protocols, never an
implementation.

Conditional writes: ``put(..., if_none_match=True)`` creates a key only if it is absent
(``If-None-Match: *``), ``put(..., if_match=etag)`` replaces an object only if it is still the one
whose ETag the caller read (``If-Match``). A refused condition raises
:class:`~s43_ray.errors.PreconditionFailed`. ETags are kept exactly as the store sends them
(quotes included), so one read from :class:`ObjectInfo` or returned by ``put`` goes back as
``if_match`` unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..errors import ObjectNotFound, PreconditionFailed

# The condition of a create-if-absent, as messages name it.
IF_NONE_MATCH = "If-None-Match: *"


@dataclass(frozen=True)
class ObjectInfo:
    """What HEAD or LIST says of an object."""

    key: str
    size: int
    metadata: Mapping[str, str] = field(default_factory=dict)  # empty from LIST
    last_modified: float | None = None  # epoch seconds
    s3_checksum: str | None = None  # the store's own CRC64NVME (base64), when it keeps one
    etag: str | None = None  # as the store sends it, quotes included: usable as ``if_match``


class Writes(Protocol):
    def put(self, key: str, body: bytes | memoryview, *, metadata: Mapping[str, str],
            s3_checksum: str | None = None, content_type: str = "application/octet-stream",
            if_none_match: bool = False, if_match: str | None = None) -> str | None:
        """Write ``body`` whole under ``key`` (overwriting), with user metadata; returns the new
        object's ETag when the store reports one.

        ``if_none_match=True``: only if ``key`` does not exist; ``if_match=etag``: only if the
        current object's ETag is ``etag``. A refused condition raises
        :class:`PreconditionFailed` naming the key and the condition."""


class Reads(Protocol):
    def get(self, key: str, *, size_hint: int | None = None) -> tuple[memoryview, ObjectInfo]:
        """Read an object whole (``size_hint``: its size, when the caller knows it).
        Raises :class:`ObjectNotFound`."""


class Heads(Protocol):
    def head(self, key: str) -> ObjectInfo:
        """Metadata of an object. Raises :class:`ObjectNotFound`."""


class Lists(Protocol):
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every key under ``prefix``, paginated, in key order."""


class ListsDirs(Protocol):
    def list_dirs(self, prefix: str) -> Iterator[str]:
        """The immediate "folders" under ``prefix``, paginated, in key order: each one the
        prefix plus the text up to and including the next ``/``, for every key under it that
        has one (S3's ``CommonPrefixes`` with ``Delimiter='/'``); ``"p/"`` -> ``"p/r1/"``,
        ``"p/r1/"``'s keys never read one by one. A folder holding no key (an empty
        directory) is not listed; keys directly under ``prefix`` are not either."""


class Deletes(Protocol):
    def delete(self, key: str) -> None:
        """Remove a key; absent keys are not an error."""


@runtime_checkable
class BatchDeletes(Protocol):
    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove many keys in few requests; a key the store refuses raises."""


@runtime_checkable
class BucketAdmin(Protocol):
    """Bucket settings: an operator's capability, not the pipeline's."""

    @property
    def endpoint(self) -> str:
        """The endpoint as messages name it."""

    def lifecycle_rules(self, bucket: str) -> list[dict[str, Any]]:
        """The bucket's lifecycle rules ([] when none). :class:`NotSupported` when the store
        does not implement them."""

    def put_lifecycle_rules(self, bucket: str, rules: list[dict[str, Any]]) -> None:
        """Replace the bucket's lifecycle rules."""

    def default_encryption(self, bucket: str) -> str | None:
        """The default encryption's algorithm, None when unset; :class:`NotSupported`."""

    def create_bucket(self, bucket: str) -> None:
        """Create the bucket unless it exists."""


class Store(Reads, Writes, Heads, Lists, ListsDirs, Deletes, Protocol):
    """The operations the task, the gate and the benchmark depend on."""

    @property
    def url(self) -> str: ...

    @property
    def retries(self) -> int:
        """Attempts this process has retried for this store's config so far."""

    def check(self) -> None:
        """Fail fast with a :class:`StoreError` if the bucket cannot be listed."""

    def probe(self, timeout: float) -> None:
        """One cheap request proving the store answers now, within ``timeout`` seconds and
        without retries. Raises :class:`StoreUnreachable` (or e.g. :class:`AccessDenied`)."""


def put_condition(if_none_match: bool, if_match: str | None) -> str | None:
    """The condition of a ``put`` as its HTTP header (for messages); None when unconditional."""
    if if_none_match and if_match is not None:
        raise ValueError("put takes if_none_match or if_match, not both")
    if if_match is not None and not if_match:
        raise ValueError("put(if_match=...) needs an ETag, got an empty string")
    if if_none_match:
        return IF_NONE_MATCH
    return f"If-Match: {if_match}" if if_match is not None else None


class CreatesOnce(Writes, Reads, Protocol):
    """What :func:`create_once` needs of a store."""


def create_once(store: CreatesOnce, key: str, body: bytes, *, metadata: Mapping[str, str],
                content_type: str = "application/octet-stream") -> None:
    """Create ``key`` with ``If-None-Match: *``. A refusal is accepted when the object there is
    ``body`` byte for byte: an earlier try of this very request landed and its answer was lost
    (the retry is refused by the object it wrote). Only for bodies no other writer can produce
    (each names its writer's random token). Else :class:`PreconditionFailed`, as the store
    raised it."""
    try:
        store.put(key, body, metadata=metadata, content_type=content_type, if_none_match=True)
    except PreconditionFailed as refused:
        try:
            found, _ = store.get(key, size_hint=len(body))
        except ObjectNotFound:
            raise refused from None
        if found != body:
            raise


def precondition_failed(where: str, why: str, condition: str) -> PreconditionFailed:
    """The one wording of a refused conditional write, whichever store refused it."""
    return PreconditionFailed(f"{where}: precondition failed: {why} ({condition})")


def finished_within(seconds: float, call: Callable[[], None]) -> bool:
    """Run ``call`` in a daemon thread and wait at most ``seconds``: True when it returned,
    its exception re-raised here, False when it is still running (it is left to finish on its
    own). For probes, whose callers must get an answer in time whatever blocks (a hung mount,
    a DNS lookup, a credential provider)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # handed to the waiting thread
            outcome.append(exc)

    worker = threading.Thread(target=run, name="s43-store-probe", daemon=True)
    worker.start()
    worker.join(seconds)
    if not outcome:
        return False
    if outcome[0] is not None:
        raise outcome[0]
    return True
