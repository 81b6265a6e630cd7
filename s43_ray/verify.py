"""One member object verified: against its ledger entry, or, with no ledger, its own metadata.

:func:`verify_member` checks the binding (run, member, attempt, schema), the size, the
CRC64NVME checksum (the store's own in head mode, the downloaded payload's in full mode) and
that the payload decodes safely; it returns a :class:`MemberCheck` and never raises for a bad
object (only for a command that is wrong, e.g. an SSE-C object read without its key).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import codec as codecs
from .binding import META_SCHEMA, check_binding, object_attempt, schema_digest
from .codec import ArraySpec, Codec
from .errors import (
    ChecksumMismatch,
    CodecMismatch,
    InputError,
    LoadError,
    S43Error,
    SchemaMismatch,
    TruncatedObject,
)
from .stores.base import ObjectInfo, Store

VerifyMode = Literal["full", "head"]
VERIFY_MODES: tuple[VerifyMode, ...] = ("full", "head")


@dataclass(frozen=True)
class Expectation:
    """What the gate knows of a member before it looks: its ledger entry."""

    checksum: str
    bytes: int
    schema: str = ""  # schema digest; "" when not recorded
    attempt: int | None = None  # the attempt that wrote the object; None: not checked


@dataclass(frozen=True)
class MemberCheck:
    member: str
    key: str
    status: Literal["ok", "missing", "invalid"]
    error_class: str = ""
    detail: str = ""
    bytes: int = 0
    read_seconds: float = 0.0
    last_modified: float | None = None
    downloaded: bool = False  # False for head-mode checks verified by the store's own checksum
    checksum: str = ""  # the checksum verified (ok) or recorded in the object's metadata
    attempt: int | None = None  # the attempt named in the object's metadata
    schema: str = ""  # the object's schema digest
    etag: str | None = None  # the object's ETag as the gate read it (a rewrite changes it)


@dataclass(frozen=True)
class _Want:
    checksum: str
    bytes: int | None
    schema: str
    attempt: int | None


def verify_member(store: Store, member: str, key: str, codec: Codec,
                  expect: Expectation | None, mode: VerifyMode,
                  listed_size: int | None = None, *, run_id: str = "",
                  declared_schema: str = "") -> MemberCheck:
    """Verify one object against its ledger entry (``expect``) or, without a ledger, against
    its own metadata. ``run_id`` "" skips the binding check (benchmarks of the codec path)."""
    meta: dict[str, str] = {}
    try:
        check, _ = _check(store, member, key, codec, expect, mode, listed_size, run_id,
                          declared_schema, meta)
        return check
    except LoadError as exc:
        return MemberCheck(member, key, "invalid", exc.error_class, str(exc),
                           checksum=str(meta.get(codecs.META_CHECKSUM, "")),
                           attempt=object_attempt(meta), schema=str(meta.get(META_SCHEMA, "")))
    except InputError:
        raise  # e.g. an SSE-C object and no key: the command is wrong, not the member
    except S43Error as exc:
        if exc.error_class == "not_found":  # deleted between LIST and GET
            return MemberCheck(member, key, "missing", "not_found", str(exc))
        # The store refused or failed this read after retries: not verified, so not counted.
        return MemberCheck(member, key, "invalid", exc.error_class, str(exc))


def load_member(store: Store, member: str, key: str, codec: Codec, expect: Expectation | None,
                *, run_id: str, declared_schema: str = ""
                ) -> tuple[dict[str, np.ndarray], MemberCheck]:
    """Download one member, verify it exactly as the gate's full mode does, and return its
    arrays with the check. Raises :class:`~s43_ray.errors.LoadError` (the class says why) for
    an object that does not verify, and the store's errors (``ObjectNotFound``...)."""
    check, arrays = _check(store, member, key, codec, expect, "full", None, run_id,
                           declared_schema, {})
    assert arrays is not None  # full mode always decodes
    return arrays, check


def _check(store: Store, member: str, key: str, codec: Codec, expect: Expectation | None,
           mode: VerifyMode, listed_size: int | None, run_id: str, declared_schema: str,
           meta: dict[str, str]) -> tuple[MemberCheck, dict[str, np.ndarray] | None]:
    """The verification itself; ``meta`` is filled with the object's metadata as soon as it is
    read (for the caller's report of an invalid object)."""
    t0 = time.perf_counter()
    if mode == "head":
        info = store.head(key)
        meta.update(info.metadata)
        want = _want(info, member, codec, expect, run_id, declared_schema)
        if info.size == 0 or (want.bytes is not None and info.size != want.bytes):
            raise TruncatedObject(f"object has {info.size} bytes; expected {want.bytes}")
        if info.s3_checksum is not None:
            if want.checksum.split(":", 1)[-1] != info.s3_checksum:
                raise ChecksumMismatch(f"store checksum {info.s3_checksum} does not match "
                                       f"the recorded {want.checksum}")
            return MemberCheck(member, key, "ok", bytes=info.size,
                               read_seconds=time.perf_counter() - t0,
                               last_modified=info.last_modified, checksum=want.checksum,
                               attempt=object_attempt(meta), schema=want.schema,
                               etag=info.etag), None
        # The store keeps no checksum of its own for this object: download and verify.
        t0 = time.perf_counter()
    body, info = store.get(key, size_hint=expect.bytes if expect else listed_size)
    elapsed = time.perf_counter() - t0
    meta.update(info.metadata)
    want = _want(info, member, codec, expect, run_id, declared_schema)
    codecs.verify(body, codec=codec, expected_checksum=want.checksum,
                  expected_bytes=want.bytes)
    try:
        arrays = codecs.decode(body, codec)  # proves it opens safely; nothing is unpickled
    except LoadError:
        raise
    except Exception as exc:  # a crafted payload may break a decoder in any way
        raise CodecMismatch(f"does not decode: {type(exc).__name__}: {exc}") from exc
    if want.schema:
        found = schema_digest({n: ArraySpec(tuple(a.shape), a.dtype.str)
                               for n, a in arrays.items()})
        if found != want.schema:
            raise SchemaMismatch(f"object's arrays have schema {found}; expected "
                                 f"{want.schema}")
    return MemberCheck(member, key, "ok", bytes=info.size, read_seconds=elapsed,
                       last_modified=info.last_modified, downloaded=True,
                       checksum=want.checksum, attempt=object_attempt(meta),
                       schema=want.schema, etag=info.etag), arrays


def _want(info: ObjectInfo, member: str, codec: Codec, expect: Expectation | None, run_id: str,
          declared_schema: str) -> _Want:
    """What to verify the object against: its ledger entry, cross-checked with the object's
    metadata and binding; or, with no ledger, the object's own metadata and binding."""
    meta = info.metadata
    if not expect and info.size == 0:
        raise TruncatedObject("object is empty (0 bytes)")
    meta_codec = meta.get(codecs.META_CODEC)
    meta_sum = meta.get(codecs.META_CHECKSUM)
    if meta_codec is not None and meta_codec != codec:
        raise CodecMismatch(f"object metadata says codec {meta_codec}; expected {codec}")
    if run_id:
        check_binding(meta, run_id=run_id, member=member,
                      attempt=expect.attempt if expect else None,
                      schema=declared_schema or (expect.schema if expect else ""))
    if expect is not None:
        if meta_sum is not None and meta_sum != expect.checksum:
            raise ChecksumMismatch(f"object metadata checksum {meta_sum} differs from the "
                                   f"ledger's {expect.checksum} (overwritten?)")
        return _Want(expect.checksum, expect.bytes, expect.schema or declared_schema,
                     expect.attempt)
    if not meta_sum or not meta_codec:
        raise CodecMismatch("object has no s43 metadata (codec, checksum); not written by s43")
    size = meta.get(codecs.META_BYTES)
    return _Want(meta_sum, int(size) if size and size.isdigit() else None,
                 declared_schema or str(meta.get(META_SCHEMA, "")), object_attempt(meta))
