"""The cohort gate: what is really in the store decides, never what the scheduler reported.

The gate LISTs the run prefix (paginated), cross-checks every key against the expected members
and their references, verifies every member object (size, codec, CRC64NVME checksum, and a safe
decode) concurrently, and passes only if ``cohort_count == expected`` with nothing invalid.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import ray

from . import __version__
from . import codec as codecs
from .codec import Codec
from .config import AnyStoreConfig
from .errors import (
    ChecksumMismatch,
    CodecMismatch,
    InputError,
    LoadError,
    S43Error,
    TruncatedObject,
)
from .events import rfc3339_now
from .keys import RunLayout
from .store import ObjectInfo, Store, open_store

VerifyMode = Literal["full", "head"]
# Concurrent verifications; below the client's connection pool (StoreConfig.max_pool_connections).
GATE_CONCURRENCY = 16
PASSED, FAILED = "passed", "failed"


@dataclass(frozen=True)
class Expectation:
    """What the gate knows of a member before it looks: from its reference, when there is one."""

    checksum: str
    bytes: int


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


@dataclass(frozen=True)
class Verdict:
    """The gate's decision and everything an operator needs to act on it."""

    run_id: str
    store: str
    codec: str
    expected: int
    cohort_count: int
    status: str
    reason: str  # one line: why it passed or failed, naming members
    missing: list[str]
    invalid: dict[str, str]  # member -> "error_class: detail"
    unexpected: list[str]  # keys under the run prefix that belong to no member
    checks: list[MemberCheck] = field(default_factory=list)
    verify: str = "full"
    listed_keys: int = 0  # every key under the run prefix, control objects included
    started_at: str = ""
    finished_at: str = ""
    gate_seconds: float = 0.0
    node_id: str = ""
    version: str = __version__

    @property
    def shortfall(self) -> int:
        return self.expected - self.cohort_count

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def to_record(self) -> dict[str, Any]:
        """The ``_gate.json`` body: the verdict, per-member checks, when and by which version."""
        record = asdict(self)
        record["shortfall"] = self.shortfall
        return record

    def to_json(self) -> bytes:
        return json.dumps(self.to_record(), indent=1, sort_keys=True).encode()


def _verify_one(store: Store, member: str, key: str, codec: Codec,
                expect: Expectation | None, mode: VerifyMode,
                listed_size: int | None = None) -> MemberCheck:
    t0 = time.perf_counter()
    try:
        if mode == "head":
            info = store.head(key)
            want_sum, want_bytes = _check_metadata(info, codec, expect)
            if info.size == 0 or (want_bytes is not None and info.size != want_bytes):
                raise TruncatedObject(f"object has {info.size} bytes; expected {want_bytes}")
            if info.s3_checksum is not None:
                if want_sum.split(":", 1)[-1] != info.s3_checksum:
                    raise ChecksumMismatch(f"store checksum {info.s3_checksum} does not match "
                                           f"the recorded {want_sum}")
                return MemberCheck(member, key, "ok", bytes=info.size,
                                   read_seconds=time.perf_counter() - t0,
                                   last_modified=info.last_modified)
            # The store keeps no checksum of its own for this object: download and verify.
            t0 = time.perf_counter()
        body, info = store.get(key, size_hint=expect.bytes if expect else listed_size)
        elapsed = time.perf_counter() - t0
        want_sum, want_bytes = _check_metadata(info, codec, expect)
        codecs.verify(body, codec=codec, expected_checksum=want_sum, expected_bytes=want_bytes)
        try:
            codecs.decode(body, codec)  # proves it opens safely; nothing is unpickled
        except LoadError:
            raise
        except Exception as exc:  # a crafted payload may break a decoder in any way
            raise CodecMismatch(f"does not decode: {type(exc).__name__}: {exc}") from exc
        return MemberCheck(member, key, "ok", bytes=info.size, read_seconds=elapsed,
                           last_modified=info.last_modified, downloaded=True)
    except LoadError as exc:
        return MemberCheck(member, key, "invalid", exc.error_class, str(exc))
    except InputError:
        raise  # e.g. an SSE-C object and no key: the command is wrong, not the member
    except S43Error as exc:
        if exc.error_class == "not_found":  # deleted between LIST and GET
            return MemberCheck(member, key, "missing", "not_found", str(exc))
        # The store refused or failed this read after retries: not verified, so not counted.
        return MemberCheck(member, key, "invalid", exc.error_class, str(exc))


def _check_metadata(info: ObjectInfo, codec: Codec, expect: Expectation | None
                    ) -> tuple[str, int | None]:
    """The checksum and size to verify against: the reference's, cross-checked with the object's
    metadata; or the metadata alone when the gate runs from the store without references."""
    meta = info.metadata
    if not expect and info.size == 0:
        raise TruncatedObject("object is empty (0 bytes)")
    meta_codec = meta.get(codecs.META_CODEC)
    meta_sum = meta.get(codecs.META_CHECKSUM)
    if meta_codec is not None and meta_codec != codec:
        raise CodecMismatch(f"object metadata says codec {meta_codec}; expected {codec}")
    if expect is not None:
        if meta_sum is not None and meta_sum != expect.checksum:
            raise ChecksumMismatch(f"object metadata checksum {meta_sum} differs from the "
                                          f"task's reference {expect.checksum} (overwritten?)")
        return expect.checksum, expect.bytes
    if not meta_sum or not meta_codec:
        raise CodecMismatch("object has no s43 metadata (codec, checksum); not written by s43")
    size = meta.get(codecs.META_BYTES)
    return meta_sum, int(size) if size and size.isdigit() else None


def run_gate(store: Store, *, run_id: str, prefix: str, members: Sequence[str], codec: Codec,
             expected: int | None = None, refs: Mapping[str, Expectation] | None = None,
             mode: VerifyMode = "full", concurrency: int = GATE_CONCURRENCY,
             node_id: str = "") -> Verdict:
    """Decide whether the run's cohort is complete, from the store's contents."""
    started, t0 = rfc3339_now(), time.perf_counter()
    layout = RunLayout(prefix, run_id)
    if len(set(members)) != len(members):
        raise InputError(f"run {run_id!r}: the member list names some members twice; "
                         "expected unique names")
    wanted = set(members)
    present: dict[str, str] = {}  # member -> key in the run's codec
    sizes: dict[str, int] = {}  # key -> size as listed
    other_codec: dict[str, str] = {}  # member -> key written in another codec
    unexpected: list[str] = []
    listed = 0
    for info in store.list(layout.run_prefix):
        listed += 1
        sizes[info.key] = info.size
        if layout.is_control(info.key):
            continue
        found = layout.classify(info.key)
        if found and found[0] in wanted:
            (present if found[1] == codec else other_codec)[found[0]] = info.key
        else:
            unexpected.append(info.key)
    # A member present in the run's format may also have a stray object in the other format.
    unexpected.extend(k for m, k in other_codec.items() if m in present)
    unexpected.sort()
    refs = refs or {}
    checks: dict[str, MemberCheck] = {}
    for m in members:
        if m not in present:
            if m in other_codec:
                checks[m] = MemberCheck(m, other_codec[m], "invalid", "codec",
                                        f"written as {other_codec[m].rsplit('.', 1)[-1]}; "
                                        f"the run's format is {codec}")
            else:
                checks[m] = MemberCheck(m, layout.member_key(m, codec), "missing", "not_found",
                                        "not in the store")
    todo = [m for m in members if m in present]
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(todo) or 1))) as pool:
        for check in pool.map(lambda m: _verify_one(store, m, present[m], codec, refs.get(m),
                                                    mode, sizes.get(present[m])), todo):
            checks[check.member] = check
    ordered = [checks[m] for m in members]
    count = sum(c.status == "ok" for c in ordered)
    missing = [c.member for c in ordered if c.status == "missing"]
    invalid = {c.member: f"{c.error_class}: {c.detail}" for c in ordered if c.status == "invalid"}
    exp = len(members) if expected is None else expected
    status = PASSED if count == exp and not missing and not invalid else FAILED
    return Verdict(run_id=run_id, store=store.url, codec=codec, expected=exp,
                   cohort_count=count, status=status,
                   reason=_reason(run_id, exp, len(members), count, missing, invalid),
                   missing=missing, invalid=invalid,
                   unexpected=unexpected, checks=ordered, verify=mode, listed_keys=listed,
                   started_at=started, finished_at=rfc3339_now(),
                   gate_seconds=time.perf_counter() - t0, node_id=node_id)


def _reason(run_id: str, expected: int, listed: int, count: int, missing: list[str],
            invalid: dict[str, str]) -> str:
    """One line saying why the gate decided as it did, naming members (first 10)."""
    def names(items: Sequence[str]) -> str:
        return str(list(items[:10])) + (f" (+{len(items) - 10} more)" if len(items) > 10 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} of {expected} members missing: {names(missing)}")
    if invalid:
        parts.append(f"{len(invalid)} invalid: {names(sorted(invalid))}")
    if listed != expected:
        parts.append(f"the cohort has {listed} members but {expected} are expected")
    if not parts:
        return f"run {run_id!r}: {count} of {expected} members present and verified"
    return f"run {run_id!r}: " + "; ".join(parts)


@ray.remote(max_retries=2)
def gate_task(cfg: AnyStoreConfig, run_id: str, members: list[str], codec: Codec,
              expected: int | None, refs: dict[str, Expectation], mode: VerifyMode,
              concurrency: int) -> Verdict:
    """The gate as its own Ray task (another "pod"): it sees only the store."""
    node = str(ray.get_runtime_context().get_node_id())
    return run_gate(open_store(cfg), run_id=run_id, prefix=cfg.prefix, members=members, codec=codec,
                    expected=expected, refs=refs, mode=mode, concurrency=concurrency,
                    node_id=node)
