"""Attempts and ledgers: who wrote what, recorded next to the data.

- **Attempts** (``_attempts/<N>.json``): every ``run`` of a run id (the first, a re-run of the
  same cohort, a ``--resume``) claims the next attempt number with a conditional create, so two
  drivers never share one. Objects carry the attempt that wrote them.
- **Ledger** (``_ledgers/<N>.json``): when the driver of attempt N has gathered its references,
  it writes, per member, the key, checksum, bytes, schema digest and the attempt that wrote the
  object (an older one for members a ``--resume`` reused), plus the members whose task failed.
  The gate verifies the store against the ledger, never an object against itself: a swapped or
  substituted object, or an older object of a member whose task failed in this attempt, is not
  counted, in ``--verify head`` mode too.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .codec import CODECS, Codec
from .errors import CodecMismatch, ObjectNotFound, PreconditionFailed, S43Error, StoreError
from .events import rfc3339_now
from .keys import ATTEMPTS_DIR, LEDGERS_DIR, RunLayout, validate_member
from .manifest import holder_name
from .stores.base import Store, create_once
from .version import __version__

AttemptKind = Literal["first", "rerun", "resume"]
LEDGER_VERSION = 1
# Attempt numbers tried past the highest listed one before giving up (drivers racing).
CLAIM_ATTEMPT_TRIES = 20
# ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
_NUMBER = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class Attempt:
    """One attempt of a run, as claimed in ``_attempts/<N>.json``."""

    run_id: str
    number: int
    kind: AttemptKind
    started_at: str
    holder: str
    token: str
    s43_version: str = __version__

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, indent=1).encode()

    @classmethod
    def from_json(cls, body: bytes | memoryview) -> Attempt:
        try:
            data = json.loads(bytes(body))
            kind = data["kind"]
            if kind not in ("first", "rerun", "resume"):
                raise ValueError(f"kind {kind!r}")
            return cls(run_id=str(data["run_id"]), number=int(data["number"]), kind=kind,
                       started_at=str(data["started_at"]), holder=str(data["holder"]),
                       token=str(data["token"]), s43_version=str(data.get("s43_version", "")))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CodecMismatch(f"attempt record is not valid: {exc}") from exc


def read_attempt(store: Store, layout: RunLayout, number: int) -> Attempt | None:
    try:
        body, _ = store.get(layout.attempt_key(number))
    except ObjectNotFound:
        return None
    return Attempt.from_json(body)


def numbers_in(keys: Iterable[str], layout: RunLayout, folder: str) -> list[int]:
    """The attempt numbers among ``keys`` that name ``<run>/<folder>/<N>.json``, sorted."""
    prefix = layout.control_dir(folder)
    found = []
    for key in keys:
        name = key[len(prefix):] if key.startswith(prefix) else ""
        stem = name[:-5] if name.endswith(".json") else ""
        if _NUMBER.fullmatch(stem):
            found.append(int(stem))
    return sorted(found)


def _numbers(store: Store, layout: RunLayout, folder: str) -> list[int]:
    return numbers_in((info.key for info in store.list(layout.control_dir(folder))), layout,
                      folder)


def attempt_numbers(store: Store, layout: RunLayout) -> list[int]:
    return _numbers(store, layout, ATTEMPTS_DIR)


def claim_attempt(store: Store, layout: RunLayout, kind: AttemptKind) -> Attempt:
    """Claim the next attempt number with ``If-None-Match: *``; racing drivers get distinct
    numbers."""
    # Past every number the run has used: a ledger whose attempt record was deleted still
    # holds its number (reclaiming it would end in a ledger that cannot be written).
    numbers = attempt_numbers(store, layout) + ledger_numbers(store, layout)
    number = max(numbers, default=0) + 1
    token = secrets.token_hex(8)
    for _ in range(CLAIM_ATTEMPT_TRIES):
        attempt = Attempt(layout.run_id, number, kind, rfc3339_now(), holder_name(), token)
        try:
            create_once(store, layout.attempt_key(number), attempt.to_json(),
                        metadata={"s43-kind": "attempt", "s43-token": token},
                        content_type="application/json")
            return attempt
        except PreconditionFailed:
            number += 1
    raise StoreError(f"run {layout.run_id!r}: could not claim an attempt number after "
                     f"{CLAIM_ATTEMPT_TRIES} tries in {store.url}; expected fewer drivers racing")


@dataclass(frozen=True)
class LedgerEntry:
    """What the gate expects of one member's object."""

    key: str
    checksum: str
    bytes: int
    schema: str  # schema digest
    attempt: int  # the attempt that wrote the object


@dataclass(frozen=True)
class Ledger:
    """Attempt N's record of the cohort as its driver gathered it."""

    run_id: str
    attempt: int
    codec: Codec
    entries: dict[str, LedgerEntry]
    failed: dict[str, str] = field(default_factory=dict)  # member -> "error_class: message"
    cohort: tuple[str, ...] = ()  # every member of the run, in order (entries + failed)
    token: str = ""  # the claim token of attempt N (``_attempts/<N>.json``) that wrote it
    written_at: str = ""
    s43_version: str = __version__
    ledger_version: int = LEDGER_VERSION

    @property
    def members(self) -> tuple[str, ...]:
        """The run's whole cohort as this ledger records it."""
        return self.cohort or tuple(sorted({*self.entries, *self.failed}))

    def covers(self, members: Sequence[str]) -> bool:
        """Whether ``members`` is the cohort this ledger records (every member it lists, when
        an older ledger did not record the whole cohort)."""
        if self.cohort:
            return sorted(members) == sorted(self.cohort)
        return set(self.members) <= set(members)

    def to_json(self) -> bytes:
        record: dict[str, Any] = {
            "run_id": self.run_id, "attempt": self.attempt, "codec": self.codec,
            "written_at": self.written_at or rfc3339_now(), "s43_version": self.s43_version,
            "ledger_version": self.ledger_version, "failed": self.failed,
            "cohort": list(self.cohort), "token": self.token,
            "members": {m: [e.key, e.checksum, e.bytes, e.schema, e.attempt]
                        for m, e in self.entries.items()},
            "members_fields": ["key", "checksum", "bytes", "schema", "attempt"]}
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, body: bytes | memoryview) -> Ledger:
        try:
            data = json.loads(bytes(body))
            codec = data["codec"]
            if codec not in CODECS:
                raise ValueError(f"codec {codec!r}")
            entries = {}
            for member, (key, checksum, size, schema, attempt) in data["members"].items():
                entries[validate_member(str(member))] = LedgerEntry(
                    str(key), str(checksum), int(size), str(schema), int(attempt))
            failed = data.get("failed") or {}
            if not isinstance(failed, Mapping):
                raise ValueError("failed is not an object")
            cohort = tuple(validate_member(str(m)) for m in data.get("cohort") or ())
            return cls(run_id=str(data["run_id"]), attempt=int(data["attempt"]), codec=codec,
                       entries=entries, failed={str(k): str(v) for k, v in failed.items()},
                       cohort=cohort, token=str(data.get("token", "")),
                       written_at=str(data.get("written_at", "")),
                       s43_version=str(data.get("s43_version", "")),
                       ledger_version=int(data.get("ledger_version", 0)))
        except (ValueError, KeyError, TypeError, AttributeError, S43Error) as exc:
            raise CodecMismatch(f"ledger is not valid: {exc}") from exc


def write_ledger(store: Store, layout: RunLayout, ledger: Ledger) -> None:
    """Write attempt N's ledger once (``If-None-Match: *``: an attempt has one ledger)."""
    create_once(store, layout.ledger_key(ledger.attempt), ledger.to_json(),
                metadata={"s43-kind": "ledger", "s43-attempt": str(ledger.attempt)},
                content_type="application/json")


def read_ledger(store: Store, layout: RunLayout, attempt: int) -> Ledger | None:
    """Attempt N's ledger, checked against its key and against the attempt's own claim (a
    ledger of an attempt nobody claimed, or another claim's, is refused)."""
    try:
        body, _ = store.get(layout.ledger_key(attempt))
    except ObjectNotFound:
        return None
    ledger = Ledger.from_json(body)
    if ledger.run_id != layout.run_id or ledger.attempt != attempt:
        raise CodecMismatch(f"ledger {layout.ledger_key(attempt)} names run {ledger.run_id!r} "
                            f"attempt {ledger.attempt}; expected {layout.run_id!r} attempt "
                            f"{attempt}")
    claimed = read_attempt(store, layout, attempt)
    if claimed is None or claimed.token != ledger.token:
        raise CodecMismatch(f"ledger {layout.ledger_key(attempt)} is not attempt {attempt}'s: "
                            + ("that attempt was never claimed" if claimed is None else
                               "its token is not the attempt's claim token")
                            + "; expected a ledger written by the attempt's own driver")
    return ledger


def ledger_numbers(store: Store, layout: RunLayout) -> list[int]:
    return _numbers(store, layout, LEDGERS_DIR)


def latest_ledger(store: Store, layout: RunLayout) -> Ledger | None:
    """The ledger of the most recent attempt that wrote one."""
    numbers = ledger_numbers(store, layout)
    return read_ledger(store, layout, numbers[-1]) if numbers else None
