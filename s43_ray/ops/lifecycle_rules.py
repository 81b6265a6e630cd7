"""The lifecycle rule document: load, validate, compare and merge. Pure; no store calls.

The document is the JSON body of S3's PutBucketLifecycleConfiguration, ``{"Rules": [...]}``,
as in ``infra/scaleway/s3-lifecycle-s43-predictions.json``. Servers return rules in more than
one shape (a legacy top-level ``Prefix`` or ``Filter.Prefix``, extra false flags, dates as
datetimes), so rules are compared by what they do, not by their JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..keys import DEFAULT_PREFIX

# The JSON body of PutBucketLifecycleConfiguration, ``{"Rules": [...]}``, as S3 defines it.
LifecycleDoc = dict[str, Any]
Rule = dict[str, Any]

RULE_ID = "s43-predictions-7d"
# Predictions are needed until the gate has run and a human has looked at a failure; a week
# covers a weekend plus a re-run, and bounds what a leaked credential can read.
RETENTION_DAYS = 7
# s43 writes with single PUTs; a multipart upload left by another tool is garbage after a day.
ABORT_MULTIPART_DAYS = 1
# S3's own limits: 1000 rules per bucket, 255 characters per rule ID.
MAX_RULES = 1000
MAX_RULE_ID_LEN = 255
ACTIONS = ("Expiration", "Transitions", "NoncurrentVersionTransitions",
           "NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload")
# The keys PutBucketLifecycleConfiguration accepts in a rule; anything else a GET returns is
# dropped before a live rule is put back.
RULE_KEYS = ("ID", "Filter", "Prefix", "Status", *ACTIONS)


# --- the document -----------------------------------------------------------------------------

def default_rule_doc(prefix: str = DEFAULT_PREFIX, days: int = RETENTION_DAYS) -> LifecycleDoc:
    """The rule of ``infra/scaleway/s3-lifecycle-s43-predictions.json``, for installs without it."""
    return {"Rules": [{
        "ID": RULE_ID if (prefix, days) == (DEFAULT_PREFIX, RETENTION_DAYS)
        else f"{prefix.replace('/', '-')}-{days}d",
        "Filter": {"Prefix": f"{prefix.strip('/')}/"},
        "Status": "Enabled",
        "Expiration": {"Days": days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS},
    }]}


def load_rule_file(path: str | Path) -> LifecycleDoc:
    """Read and validate a lifecycle file; :class:`InputError` (exit 2) names what is wrong."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"lifecycle file {str(path)!r} cannot be read: "
                         f"{exc.strerror or exc}; expected a readable JSON file") from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InputError(f"lifecycle file {str(path)!r} is not JSON ({exc}); expected "
                         '{"Rules": [...]}') from exc
    return validate_rule_doc(doc, source=str(path))


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def validate_rule_doc(doc: object, *, source: str = "lifecycle document") -> LifecycleDoc:
    """Check the shape S3 accepts, plus what AWS rejects and SeaweedFS lets through (Days 0)."""
    def bad(what: str, expected: str) -> InputError:
        return InputError(f"lifecycle file {source!r}: {what}; expected {expected}")

    if not isinstance(doc, dict) or set(doc) != {"Rules"} or not isinstance(doc["Rules"], list):
        raise bad("the top level is not {\"Rules\": [...]}", 'exactly {"Rules": [...]}')
    rules = doc["Rules"]
    if not 1 <= len(rules) <= MAX_RULES:
        raise bad(f"{len(rules)} rules", f"1 to {MAX_RULES}")
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise bad(f"rule {i} is not an object", "an object per rule")
        rid = rule.get("ID")
        if not isinstance(rid, str) or not 1 <= len(rid) <= MAX_RULE_ID_LEN or rid in seen:
            raise bad(f"rule {i} has ID {rid!r}", f"a unique ID of 1-{MAX_RULE_ID_LEN} characters")
        seen.add(rid)
        unknown = sorted(set(rule) - set(RULE_KEYS))
        if unknown:
            raise bad(f"rule {rid!r} has unknown keys {unknown}", f"only {list(RULE_KEYS)}")
        if rule.get("Status") not in ("Enabled", "Disabled"):
            raise bad(f"rule {rid!r} has Status {rule.get('Status')!r}", "Enabled or Disabled")
        if ("Filter" in rule) == ("Prefix" in rule) or not isinstance(
                rule.get("Filter", {}), dict):
            raise bad(f"rule {rid!r} has no Filter or both Filter and Prefix",
                      'one "Filter": {"Prefix": ...}')
        if not any(k in rule for k in ACTIONS):
            raise bad(f"rule {rid!r} has no action", f"at least one of {list(ACTIONS)}")
        days = rule.get("Expiration", {}).get("Days", 1)
        abort = rule.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation", 1)
        if not _positive_int(days) or not _positive_int(abort):
            raise bad(f"rule {rid!r} has Days {days!r} / DaysAfterInitiation {abort!r}",
                      "whole numbers of days of at least 1")
    return doc


def prefix_of(rule: Mapping[str, Any]) -> str:
    flt = rule.get("Filter")
    if isinstance(flt, Mapping):
        inner = flt.get("And", flt)
        return str(inner.get("Prefix", "")) if isinstance(inner, Mapping) else ""
    return str(rule.get("Prefix", ""))


def _pure_prefix(rule: Mapping[str, Any]) -> str | None:
    """The prefix of a rule filtered on a prefix alone; None when tags or sizes also filter."""
    flt = rule.get("Filter")
    if flt is None:
        return str(rule.get("Prefix", ""))
    if isinstance(flt, Mapping) and set(flt) <= {"Prefix"}:
        return str(flt.get("Prefix", ""))
    return None


def covers_prefix(doc: LifecycleDoc, prefix: str) -> bool:
    """Whether an enabled rule of ``doc`` expires the store prefix ``prefix`` (no leading '/')."""
    key = prefix.strip("/") + "/"
    return any(r.get("Status") == "Enabled" and "Expiration" in r
               and key.startswith(prefix_of(r)) for r in doc["Rules"])


# --- comparing and merging --------------------------------------------------------------------

def plain(value: Any) -> Any:
    """JSON-comparable: dates as ISO strings, false delete-marker flags dropped."""
    if isinstance(value, (datetime, date)):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()
                if not (k == "ExpiredObjectDeleteMarker" and v is False)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _normal(rule: Mapping[str, Any]) -> dict[str, Any]:
    """What a rule does, whatever shape the server returned it in (legacy Prefix or Filter)."""
    flt = rule.get("Filter")
    inner = flt.get("And", flt) if isinstance(flt, Mapping) else {}
    out: dict[str, Any] = {"Status": rule.get("Status"), "Prefix": prefix_of(rule)}
    if isinstance(inner, Mapping):
        tags = inner.get("Tags") or ([inner["Tag"]] if "Tag" in inner else [])
        if tags:
            out["Tags"] = sorted((t["Key"], t["Value"]) for t in tags)
        for size in ("ObjectSizeGreaterThan", "ObjectSizeLessThan"):
            if size in inner:
                out[size] = inner[size]
    for key in ACTIONS:
        if key in rule:
            out[key] = plain(rule[key])
    return out


def _flat(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{path}.{k}" if path else str(k)))
        return out
    return {path: value}


def compare_rule(expected: Mapping[str, Any], found: Mapping[str, Any] | None) -> list[str]:
    """The differences between the rule of the file and the live one, one line each."""
    if found is None:
        return [f"rule {expected['ID']!r} (prefix {prefix_of(expected)!r}) is not on the bucket"]
    want, got = _flat(_normal(expected)), _flat(_normal(found))
    diffs = [f"{k}: expected {want.get(k, '(absent)')!r}, found {got.get(k, '(absent)')!r}"
             for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
    if found.get("ID") != expected["ID"]:
        diffs.append(f"ID: expected {expected['ID']!r}, found {found.get('ID')!r}")
    return diffs


def _same_target(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """The same rule: the same ID, or another expiration of exactly the same prefix (a rule
    that only transitions or aborts uploads on that prefix is someone else's, and kept)."""
    if a.get("ID") == b.get("ID"):
        return True
    pa, pb = _pure_prefix(a), _pure_prefix(b)
    return pa is not None and pa == pb and "Expiration" in a and "Expiration" in b


def match_rule(wanted: Mapping[str, Any], live: Sequence[Mapping[str, Any]]
               ) -> Mapping[str, Any] | None:
    """The live rule ``wanted`` stands for: the same ID, else the same prefix-only filter."""
    by_id = [r for r in live if r.get("ID") == wanted["ID"]]
    same = by_id or [r for r in live if _same_target(wanted, r)]
    return same[0] if same else None


def _putable(rule: Mapping[str, Any]) -> Rule:
    """A live rule as PutBucketLifecycleConfiguration accepts it back."""
    out = {k: rule[k] for k in RULE_KEYS if k in rule}
    if "Filter" in out:
        out.pop("Prefix", None)  # some servers return both; S3 refuses both on PUT
    return out


def merge_rules(live: Sequence[Mapping[str, Any]], wanted: Sequence[Mapping[str, Any]]
                ) -> tuple[list[Rule], list[str], list[str], list[str]]:
    """``(merged, added, replaced, kept)``: live rules with the same ID, or expiring the same
    prefix, are replaced by the wanted ones (in place of the first); every other live rule is
    kept as the store returned it (minus keys S3 refuses on PUT), never dropped."""
    merged: list[Rule] = []
    placed: set[str] = set()
    replaced: list[str] = []
    kept: list[str] = []
    for rule in live:
        hits = [w for w in wanted if _same_target(w, rule)]
        if not hits:
            merged.append(_putable(rule))
            kept.append(str(rule.get("ID", "")))
            continue
        replaced.append(str(rule.get("ID", "")))
        for w in hits:
            if w["ID"] not in placed:
                merged.append(dict(w))
                placed.add(w["ID"])
    added = [w["ID"] for w in wanted if w["ID"] not in placed]
    merged.extend(dict(w) for w in wanted if w["ID"] not in placed)
    return merged, added, replaced, kept


def describe(rule: Mapping[str, Any]) -> str:
    """One line for operators: ``ID: prefix 'p/', Enabled, expire after 7 days, ...``."""
    n = _normal(rule)
    parts = [f"{rule.get('ID', '')}: prefix {n['Prefix']!r}", str(n["Status"])]
    if "Tags" in n:
        parts.append(f"tags {dict(n['Tags'])}")
    exp = n.get("Expiration", {})
    if "Days" in exp:
        parts.append(f"expire after {exp['Days']} days")
    elif exp:
        parts.append(f"expiration {exp}")
    if "AbortIncompleteMultipartUpload" in n:
        days = n["AbortIncompleteMultipartUpload"].get("DaysAfterInitiation")
        parts.append(f"abort incomplete multipart uploads after {days} day(s)")
    parts += [k for k in ACTIONS[1:4] if k in n]
    return ", ".join(parts)
