"""The run's record, ``<prefix>/<run_id>/_run.json``: what the run is, claimed once, atomically.

It lets ``gate`` re-check a run from the store alone (members, format, declared schema), and it
is how a run id is claimed: :func:`claim_run` creates it with ``If-None-Match: *``, so of two
drivers starting the same run id only one creates it; the other reads it back and either joins
as a new attempt of the same cohort or is refused (exit 2) naming the holder, before it writes
anything. A store that ignores the condition is detected (:class:`NoConditionalWrites`), never
assumed to honour it.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass, field
from typing import Any

from .binding import schema_digest, schema_of, specs_from_schema
from .codec import CODECS, ArraySpec, Codec
from .errors import (
    CodecMismatch,
    InputError,
    NoConditionalWrites,
    ObjectNotFound,
    PreconditionFailed,
    S43Error,
)
from .events import rfc3339_now
from .keys import ATTEMPTS_DIR, RunLayout, validate_member
from .stores.base import Store
from .version import __version__

MANIFEST_VERSION = 2


def holder_name() -> str:
    """Who claims: ``host pid N``, enough for an operator to find the other driver."""
    return f"{socket.gethostname()} pid {os.getpid()}"


@dataclass(frozen=True)
class RunManifest:
    run_id: str
    members: tuple[str, ...]
    codec: Codec
    rows: int
    predictor: str
    created_at: str = ""
    s43_version: str = __version__
    manifest_version: int = MANIFEST_VERSION
    # The arrays every member holds, when the predictor declares them ({} when it does not):
    # {name: {"dtype": "<f4", "shape": [rows]}}, and its digest (objects carry the same digest).
    schema: dict[str, Any] = field(default_factory=dict)
    schema_digest: str = ""
    holder: str = ""  # the driver that created the record: host and pid
    token: str = ""  # a random claim token: tells our own claim from another driver's

    @classmethod
    def new(cls, run_id: str, members: tuple[str, ...], codec: Codec, rows: int,
            predictor: str, schema: dict[str, ArraySpec] | None = None) -> RunManifest:
        return cls(run_id, tuple(members), codec, rows, predictor, created_at=rfc3339_now(),
                   schema=schema_of(schema) if schema else {},
                   schema_digest=schema_digest(schema) if schema else "",
                   holder=holder_name(), token=secrets.token_hex(8))

    @property
    def declared_specs(self) -> dict[str, ArraySpec]:
        return specs_from_schema(self.schema)

    def differences(self, other: RunManifest) -> list[str]:
        """What differs in the cohort definition (members, format, rows, predictor, schema)."""
        out = []
        if self.members != other.members:
            gone = sorted(set(self.members) - set(other.members))
            new = sorted(set(other.members) - set(self.members))
            out.append(f"members ({len(self.members)} -> {len(other.members)}; "
                       f"dropped {gone[:5]}, added {new[:5]})")
        for name in ("codec", "rows", "predictor"):
            if getattr(self, name) != getattr(other, name):
                out.append(f"{name} ({getattr(self, name)!r} -> {getattr(other, name)!r})")
        if self.schema_digest and other.schema_digest and self.schema_digest != other.schema_digest:
            out.append(f"schema ({self.schema_digest} -> {other.schema_digest})")
        return out

    def describe(self) -> str:
        """``held by HOST pid N since T (40 members, arrow, 1000 rows)``, for refusals."""
        return (f"held by {self.holder or 'an unknown driver'} since {self.created_at or '?'} "
                f"({len(self.members)} members, {self.codec}, {self.rows} rows, predictor "
                f"{self.predictor})")

    def to_json(self) -> bytes:
        record: dict[str, Any] = asdict(self)
        record["members"] = list(self.members)
        return json.dumps(record, indent=1).encode()

    @classmethod
    def from_json(cls, body: bytes | memoryview) -> RunManifest:
        try:
            data = json.loads(bytes(body))
            codec = data["codec"]
            if codec not in CODECS:
                raise ValueError(f"codec {codec!r}")
            members = tuple(validate_member(str(m)) for m in data["members"])
            if len(set(members)) != len(members):
                raise ValueError("duplicate member names")
            schema = data.get("schema") or {}
            if not isinstance(schema, dict):
                raise ValueError("schema is not an object")
            digest = str(data.get("schema_digest", ""))
            if schema and digest != schema_digest(specs_from_schema(schema)):
                raise ValueError("schema_digest does not match schema")
            return cls(run_id=str(data["run_id"]), members=members, codec=codec,
                       rows=int(data["rows"]), predictor=str(data["predictor"]),
                       created_at=str(data.get("created_at", "")),
                       s43_version=str(data.get("s43_version", "")),
                       manifest_version=int(data.get("manifest_version", 0)),
                       schema=schema, schema_digest=digest,
                       holder=str(data.get("holder", "")), token=str(data.get("token", "")))
        except (ValueError, KeyError, TypeError, S43Error) as exc:
            raise CodecMismatch(f"run manifest is not valid: {exc}") from exc


def read_manifest(store: Store, layout: RunLayout) -> RunManifest | None:
    try:
        body, _ = store.get(layout.manifest_key)
    except ObjectNotFound:
        return None
    return RunManifest.from_json(body)


def _refuse(store: Store, layout: RunLayout, existing: RunManifest, diff: list[str]) -> InputError:
    return InputError(f"run {layout.run_id!r} in {store.url} is {existing.describe()} with a "
                      f"different cohort: {'; '.join(diff)}; expected the same cohort or a new "
                      "--run-id")


def _refuse_orphaned_history(store: Store, layout: RunLayout) -> None:
    """A run with attempts but no record lost its record (deleted, or expired first by an
    age-based lifecycle rule): what its cohort was can no longer be proven."""
    prefix = layout.control_dir(ATTEMPTS_DIR)
    found = next(iter(store.list(prefix)), None)
    # Read the record again: another driver may have created it and claimed its first
    # attempt between our read of the record and the listing.
    if found is not None and read_manifest(store, layout) is None:
        raise InputError(f"run {layout.run_id!r} in {store.url} has attempts ({prefix}) but no "
                         f"record ({layout.manifest_key} was deleted or expired): its cohort "
                         "cannot be proven any more; expected a new --run-id")


def check_run(store: Store, layout: RunLayout, wanted: RunManifest, *,
              resume: bool = False) -> RunManifest | None:
    """Read-only, before anything starts: the existing record (None for a new run), or
    :class:`InputError` naming the holder when it records a different cohort, or when the run
    has history but lost its record."""
    existing = read_manifest(store, layout)
    if existing is None:
        _refuse_orphaned_history(store, layout)
    if existing is not None:
        diff = existing.differences(wanted)
        if diff and resume:
            raise InputError(f"cannot resume run {layout.run_id!r}: it was started with a "
                             f"different cohort: {'; '.join(diff)} (the run is "
                             f"{existing.describe()}); expected the same members, --format, "
                             "--rows and --predictor")
        if diff:
            raise _refuse(store, layout, existing, diff)
    return existing


@dataclass(frozen=True)
class Claim:
    """The record this driver works under, and whether this driver created it."""

    record: RunManifest
    created: bool


def claim_run(store: Store, layout: RunLayout, wanted: RunManifest) -> Claim:
    """Create the run's record atomically (``If-None-Match: *``), or join an existing record
    that asks for the same cohort. Raises :class:`InputError` (exit 2) naming the holder when
    the record is another cohort's, and :class:`NoConditionalWrites` (exit 3) when the store
    let a conditional create through that it should have refused."""
    body = wanted.to_json()
    meta = {"s43-kind": "run", "s43-token": wanted.token}
    if read_manifest(store, layout) is None:
        _refuse_orphaned_history(store, layout)
    try:
        store.put(layout.manifest_key, body, metadata=meta, content_type="application/json",
                  if_none_match=True)
    except PreconditionFailed:
        existing = read_manifest(store, layout)
        if existing is None:  # deleted between our PUT and the read: try once more, honestly
            raise InputError(f"run {layout.run_id!r}: its record in {store.url} appeared and "
                             "vanished while claiming it; expected one driver at a time") from None
        if existing.token == wanted.token:  # our own PUT, retried after a lost answer
            return Claim(existing, created=True)
        diff = existing.differences(wanted)
        if diff:
            raise _refuse(store, layout, existing, diff) from None
        return Claim(existing, created=False)
    # We created it. Prove the store enforces the condition: the same create again must fail.
    try:
        store.put(layout.manifest_key, body, metadata=meta, content_type="application/json",
                  if_none_match=True)
    except PreconditionFailed:
        pass
    else:
        raise NoConditionalWrites(
            f"store {store.url} accepted a second If-None-Match: * create of "
            f"{layout.manifest_key}: it ignores conditional writes, so two drivers could both "
            "claim one run id; expected an S3 store that honours them (AWS, Scaleway, "
            "SeaweedFS >= 4.48, MinIO)")
    back = read_manifest(store, layout)
    if back is None or back.token != wanted.token:
        raise NoConditionalWrites(
            f"store {store.url}: the record we created at {layout.manifest_key} now holds "
            f"another driver's claim ({back.describe() if back else 'deleted'}); the store does "
            "not make conditional creates atomic")
    return Claim(wanted, created=True)
