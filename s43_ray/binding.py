"""What ties an object to its run: the run id, member, attempt and schema digest in its metadata.

Every member object carries, next to the codec's own metadata (codec, format version, checksum,
bytes), the run it was written for, the member it holds, the attempt of the run that wrote it and
a digest of its schema (array names, dtypes, shapes). The gate checks each against what it
expects, so an object copied onto another member's key, left over from another run or attempt,
or holding arrays the run did not declare is ``invalid`` with an error class saying which.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from .codec import ArraySpec
from .errors import CodecMismatch, SchemaMismatch, WrongAttempt, WrongMember, WrongRun

# S3 user-metadata names (x-amz-meta-*), next to the codec's s43-codec/-checksum/-bytes.
META_RUN = "s43-run"
META_MEMBER = "s43-member"
META_ATTEMPT = "s43-attempt"
META_SCHEMA = "s43-schema"
# A schema digest names its algorithm so it can change without ambiguity.
SCHEMA_DIGEST_PREFIX = "s1:"


def schema_of(specs: Mapping[str, ArraySpec]) -> dict[str, dict[str, Any]]:
    """A JSON-able schema: ``{name: {"dtype": "<f4", "shape": [rows]}}`` in name order."""
    return {name: {"dtype": spec.dtype, "shape": list(spec.shape)}
            for name, spec in sorted(specs.items())}


def schema_digest(specs: Mapping[str, ArraySpec]) -> str:
    """``s1:<32 hex>``: a digest of the array names, dtypes and shapes (not the values)."""
    text = ";".join(f"{name}={spec.dtype}{list(spec.shape)}"
                    for name, spec in sorted(specs.items()))
    return SCHEMA_DIGEST_PREFIX + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def specs_from_schema(schema: Mapping[str, Mapping[str, Any]]) -> dict[str, ArraySpec]:
    """The inverse of :func:`schema_of` (a record's declared schema, read back)."""
    return {str(name): ArraySpec(tuple(int(d) for d in field["shape"]), str(field["dtype"]))
            for name, field in schema.items()}


def binding_metadata(run_id: str, member: str, attempt: int, digest: str) -> dict[str, str]:
    return {META_RUN: run_id, META_MEMBER: member, META_ATTEMPT: str(attempt),
            META_SCHEMA: digest}


def object_attempt(meta: Mapping[str, str]) -> int | None:
    """The attempt an object's (or a verdict's) metadata names; None when it names none."""
    raw = meta.get(META_ATTEMPT, "")
    return int(raw) if raw.isascii() and raw.isdigit() else None


def check_binding(meta: Mapping[str, str], *, run_id: str, member: str,
                  attempt: int | None = None, schema: str = "") -> None:
    """Raise a :class:`~s43_ray.errors.LoadError` unless the object's metadata names this run,
    this member, (when given) this attempt and (when given) this schema digest."""
    found_run = meta.get(META_RUN)
    if found_run is None or META_MEMBER not in meta or META_SCHEMA not in meta:
        raise CodecMismatch("object has no run binding (s43-run, s43-member, s43-schema "
                            "metadata); not written for this run by s43_ray")
    if found_run != run_id:
        raise WrongRun(f"object was written for run {found_run!r}; expected {run_id!r}")
    if meta[META_MEMBER] != member:
        raise WrongMember(f"object holds member {meta[META_MEMBER]!r}; expected {member!r} "
                          "(copied or swapped onto this key?)")
    found_attempt = object_attempt(meta)
    if attempt is not None and found_attempt != attempt:
        raise WrongAttempt(f"object was written by attempt {meta.get(META_ATTEMPT)!r} of the "
                           f"run; the ledger recorded attempt {attempt} (overwritten by another "
                           "driver or attempt?)")
    if schema and meta[META_SCHEMA] != schema:
        raise SchemaMismatch(f"object's schema {meta[META_SCHEMA]} differs from the expected "
                             f"{schema}")
