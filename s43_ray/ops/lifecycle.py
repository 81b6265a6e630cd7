"""Retention on the bucket: the lifecycle rule (apply, verify) and the bucket check.

The store expires run objects itself once the lifecycle rule of
``infra/scaleway/s3-lifecycle-s43-predictions.json`` is on the bucket: objects under
``s43-predictions/`` after 7 days, incomplete multipart uploads after 1 day.

- :func:`apply_lifecycle` puts the rule, merged with the rules already on the bucket: a rule
  with the same ID, or a rule for the same prefix, is replaced; every other rule is kept as it is.
- :func:`verify_lifecycle` reads the live configuration back: the operator's proof (bucket,
  endpoint, the rule as found, timestamp, OK or MISMATCH with the differences).
- :func:`bucket_check` adds whether the bucket encrypts by default.

Stores without lifecycle support use :func:`s43_ray.ops.gc.gc_runs` instead (re-exported here).
Bucket-level calls (Get/PutBucketLifecycleConfiguration, GetBucketEncryption) are an operator's
actions, not the s43 application's; the bucket policy in ``infra/scaleway`` grants them to the
owner and the operator only. GET-merge-PUT is not atomic: S3 has no conditional lifecycle write,
so two operators applying at once can lose one's change (``verify`` shows it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import EXIT_GATE_FAILED, EXIT_PASSED, NotSupported, StoreError
from ..events import rfc3339_now
from ..stores.base import BucketAdmin
from .gc import GcReport, GcRun, gc_runs, parse_age
from .lifecycle_rules import (
    RULE_ID,
    LifecycleDoc,
    Rule,
    compare_rule,
    covers_prefix,
    default_rule_doc,
    describe,
    load_rule_file,
    match_rule,
    merge_rules,
    plain,
    prefix_of,
    validate_rule_doc,
)

__all__ = ["RULE_ID", "ApplyResult", "BucketCheck", "GcReport", "GcRun", "LifecycleDoc",
           "LifecycleProof", "RuleCheck", "apply_lifecycle", "bucket_check", "compare_rule",
           "covers_prefix", "default_rule_doc", "gc_runs", "load_rule_file", "merge_rules",
           "parse_age", "validate_rule_doc", "verify_lifecycle"]

_GC_HINT = ("use `s43-ray gc --older-than 7d --yes` daily and file a waiver "
            "(infra/scaleway/WAIVER.md)")

Status = Literal["OK", "MISMATCH"]
Encryption = Literal["set", "not_set", "unsupported"]


# --- talking to the store ---------------------------------------------------------------------

def _live_rules(admin: BucketAdmin, bucket: str) -> list[Rule]:
    try:
        return admin.lifecycle_rules(bucket)
    except NotSupported as exc:
        raise StoreError(f"{exc.where}: the store does not implement bucket lifecycle rules; "
                         f"{_GC_HINT}") from exc


@dataclass(frozen=True)
class ApplyResult:
    """What ``lifecycle apply`` changed on the bucket."""

    bucket: str
    endpoint: str
    applied_at: str  # RFC 3339 UTC
    changed: bool  # False: the live rules already matched, nothing was written
    added: tuple[str, ...]  # rule IDs that were not on the bucket
    replaced: tuple[str, ...]  # live rule IDs replaced (same ID or same prefix)
    kept: tuple[str, ...]  # live rule IDs for other prefixes, left as they were
    rules: tuple[Rule, ...]  # the configuration now on the bucket

    exit_code = EXIT_PASSED

    def to_dict(self) -> dict[str, Any]:
        return {"command": "lifecycle apply", "bucket": self.bucket, "endpoint": self.endpoint,
                "applied_at": self.applied_at, "changed": self.changed,
                "added": list(self.added), "replaced": list(self.replaced),
                "kept": list(self.kept), "rules": plain(list(self.rules)),
                "exit_code": self.exit_code}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def human(self) -> str:
        if not self.changed:
            head = f"lifecycle of s3://{self.bucket} already as wanted; nothing written"
        else:
            head = (f"lifecycle of s3://{self.bucket} written: added {list(self.added)}, "
                    f"replaced {list(self.replaced)}, kept {list(self.kept)}")
        lines = [head, f"  endpoint {self.endpoint}", f"  at       {self.applied_at}"]
        lines += [f"  rule     {describe(r)}" for r in self.rules]
        return "\n".join(lines)


def apply_lifecycle(admin: BucketAdmin, bucket: str, rule_doc: LifecycleDoc) -> ApplyResult:
    """GET the bucket's rules, merge ``rule_doc`` in (:func:`merge_rules`), PUT them back.

    Nothing is written when every rule of ``rule_doc`` is already live as it is (idempotent).
    Needs s3:GetLifecycleConfiguration and s3:PutLifecycleConfiguration on the bucket.
    Raises InputError (exit 2) for a document S3 refuses, StoreError (exit 3) otherwise."""
    wanted = validate_rule_doc(rule_doc)["Rules"]
    endpoint = admin.endpoint
    live = _live_rules(admin, bucket)
    merged, added, replaced, kept = merge_rules(live, wanted)
    unchanged = all(not compare_rule(w, match_rule(w, live)) for w in wanted) and \
        len(replaced) == len(wanted)
    if not unchanged:
        try:
            admin.put_lifecycle_rules(bucket, merged)
        except NotSupported as exc:
            raise StoreError(f"{exc.where}: the store does not implement part of these "
                             f"lifecycle rules (e.g. Transitions on SeaweedFS); {_GC_HINT}"
                             ) from exc
    return ApplyResult(bucket, endpoint, rfc3339_now(), not unchanged, tuple(added),
                       () if unchanged else tuple(replaced), tuple(kept),
                       tuple(live if unchanged else merged))


# --- the operator's proof ---------------------------------------------------------------------

@dataclass(frozen=True)
class RuleCheck:
    """One rule of the file against the bucket."""

    rule_id: str
    expected: Rule
    found: Rule | None  # the live rule with the same ID (or prefix), as the store returned it
    differences: tuple[str, ...]
    overlapping: tuple[str, ...] = ()  # other live rules on an enclosing or enclosed prefix

    @property
    def ok(self) -> bool:
        return not self.differences


@dataclass(frozen=True)
class LifecycleProof:
    """``lifecycle verify``: the live rules compared with the file; exit 0 only when all match."""

    bucket: str
    endpoint: str
    checked_at: str  # RFC 3339 UTC
    checks: tuple[RuleCheck, ...]

    @property
    def status(self) -> Status:
        return "OK" if all(c.ok for c in self.checks) else "MISMATCH"

    @property
    def exit_code(self) -> int:
        return EXIT_PASSED if self.status == "OK" else EXIT_GATE_FAILED

    def to_dict(self) -> dict[str, Any]:
        return {"command": "lifecycle verify", "status": self.status,
                "exit_code": self.exit_code, "bucket": self.bucket, "endpoint": self.endpoint,
                "checked_at": self.checked_at,
                "rules": [{"id": c.rule_id, "status": "OK" if c.ok else "MISMATCH",
                           "expected": plain(c.expected), "found": plain(c.found),
                           "differences": list(c.differences),
                           "overlapping": list(c.overlapping)} for c in self.checks]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def human(self) -> str:
        lines = [f"lifecycle proof: {self.status}", f"  bucket    {self.bucket}",
                 f"  endpoint  {self.endpoint}", f"  checked   {self.checked_at}"]
        for c in self.checks:
            lines.append(f"  expected  {describe(c.expected)}")
            lines.append(f"  found     {describe(c.found) if c.found else '(none)'}")
            lines += [f"  differs   {d}" for d in c.differences]
            if c.overlapping:
                lines.append(f"  note      other rules on overlapping prefixes: "
                             f"{list(c.overlapping)} (S3 applies the shortest expiration)")
        return "\n".join(lines)


def _proof(bucket: str, endpoint: str, wanted: Sequence[Rule], live: Sequence[Rule]
           ) -> LifecycleProof:
    checks = []
    for w in wanted:
        found = match_rule(w, live)
        prefix = prefix_of(w)
        overlapping = tuple(str(r.get("ID", "")) for r in live if r is not found
                            and r.get("Status") == "Enabled"
                            and (prefix.startswith(prefix_of(r))
                                 or prefix_of(r).startswith(prefix)))
        checks.append(RuleCheck(w["ID"], dict(w), dict(found) if found is not None else None,
                                tuple(compare_rule(w, found)), overlapping))
    return LifecycleProof(bucket, endpoint, rfc3339_now(), tuple(checks))


def verify_lifecycle(admin: BucketAdmin, bucket: str, rule_doc: LifecycleDoc
                     ) -> LifecycleProof:
    """Read the live rules and compare each rule of ``rule_doc``; needs
    s3:GetLifecycleConfiguration. A bucket without lifecycle configuration is a MISMATCH."""
    wanted = validate_rule_doc(rule_doc)["Rules"]
    return _proof(bucket, admin.endpoint, wanted, _live_rules(admin, bucket))


# --- the bucket check -------------------------------------------------------------------------

@dataclass(frozen=True)
class BucketCheck:
    """``bucket check``: default encryption and the lifecycle rule. Exit 0 when both are set
    (and the rule matches), 1 when either is missing or differs; errors raise (exit 3)."""

    bucket: str
    endpoint: str
    checked_at: str
    encryption: Encryption  # "unsupported": the store answered NotImplemented
    encryption_algorithm: str | None  # e.g. "AES256" (SSE-S3, Scaleway SSE-ONE), "aws:kms"
    lifecycle: LifecycleProof

    @property
    def exit_code(self) -> int:
        ok = self.encryption == "set" and self.lifecycle.status == "OK"
        return EXIT_PASSED if ok else EXIT_GATE_FAILED

    def to_dict(self) -> dict[str, Any]:
        return {"command": "bucket check", "status": "OK" if self.exit_code == 0 else "MISSING",
                "exit_code": self.exit_code, "bucket": self.bucket, "endpoint": self.endpoint,
                "checked_at": self.checked_at, "encryption": self.encryption,
                "encryption_algorithm": self.encryption_algorithm,
                "lifecycle": self.lifecycle.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def human(self) -> str:
        enc = {"set": f"set ({self.encryption_algorithm})", "not_set": "NOT SET",
               "unsupported": "NOT SUPPORTED by this store"}[self.encryption]
        lines = [f"bucket check s3://{self.bucket}: "
                 f"{'OK' if self.exit_code == 0 else 'MISSING'}",
                 f"  endpoint            {self.endpoint}",
                 f"  checked             {self.checked_at}",
                 f"  default encryption  {enc}",
                 f"  lifecycle rule      {self.lifecycle.status}"]
        lines += [f"    {d}" for c in self.lifecycle.checks for d in c.differences]
        return "\n".join(lines)


def _encryption(admin: BucketAdmin, bucket: str) -> tuple[Encryption, str | None]:
    try:
        algorithm = admin.default_encryption(bucket)
    except NotSupported:
        return "unsupported", None
    return ("set", algorithm) if algorithm else ("not_set", None)


def bucket_check(admin: BucketAdmin, bucket: str,
                 rule_doc: LifecycleDoc | None = None) -> BucketCheck:
    """Default encryption (GetBucketEncryption) and the lifecycle rule (as ``verify``).
    Needs s3:GetEncryptionConfiguration and s3:GetLifecycleConfiguration: an operator's."""
    wanted = validate_rule_doc(rule_doc or default_rule_doc())["Rules"]
    encryption, algorithm = _encryption(admin, bucket)
    proof = _proof(bucket, admin.endpoint, wanted, _live_rules(admin, bucket))
    return BucketCheck(bucket, admin.endpoint, proof.checked_at, encryption, algorithm, proof)

