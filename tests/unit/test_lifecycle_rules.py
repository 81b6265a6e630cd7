"""The lifecycle document and the gc plan, as pure functions (no S3, no Ray)."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from s43_ray.errors import InputError
from s43_ray.ops.gc import gc_runs
from s43_ray.ops.lifecycle import (
    compare_rule,
    covers_prefix,
    default_rule_doc,
    load_rule_file,
    merge_rules,
    parse_age,
    validate_rule_doc,
)
from s43_ray.stores.memory import MemoryStore

DAY = 86_400
OURS = default_rule_doc()["Rules"][0]
LOGS = {"ID": "logs-30d", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
        "Expiration": {"Days": 30}}
TAGGED = {"ID": "tmp-tagged", "Filter": {"And": {"Prefix": "s43-predictions/",
                                                 "Tags": [{"Key": "keep", "Value": "no"}]}},
          "Status": "Enabled", "Expiration": {"Days": 1}}
GLACIER = {"ID": "preds-to-glacier", "Filter": {"Prefix": "s43-predictions/"},
           "Status": "Enabled", "Transitions": [{"Days": 90, "StorageClass": "GLACIER"}]}


# --- the document -----------------------------------------------------------------------------

def test_default_rule_doc_is_valid() -> None:
    assert validate_rule_doc(default_rule_doc()) == default_rule_doc()


@pytest.mark.parametrize(("mutate", "named"), [
    (lambda d: d.update(Other=1), 'exactly {"Rules"'),
    (lambda d: d.update(Rules=[]), "0 rules"),
    (lambda d: d["Rules"][0].pop("ID"), "ID None"),
    (lambda d: d["Rules"].append(copy.deepcopy(d["Rules"][0])), "unique ID"),
    (lambda d: d["Rules"][0].update(Status="enabled"), "'enabled'"),
    (lambda d: d["Rules"][0].update(Prefix="x/"), "both Filter and Prefix"),
    (lambda d: d["Rules"][0].update(Expiration={"Days": 0}), "Days 0"),
    (lambda d: d["Rules"][0].update(Expiration={"Days": "7"}), "Days '7'"),
    (lambda d: d["Rules"][0].update(Expiry={"Days": 7}), "unknown keys ['Expiry']"),
    (lambda d: [d["Rules"][0].pop(k) for k in ("Expiration", "AbortIncompleteMultipartUpload")],
     "no action"),
], ids=["top-level", "empty", "no-id", "dup-id", "status", "filter-and-prefix", "days-0",
        "days-str", "unknown-key", "no-action"])
def test_invalid_rule_doc_is_refused_naming_the_problem(mutate: Any, named: str) -> None:
    doc = default_rule_doc()
    mutate(doc)

    with pytest.raises(InputError) as err:
        validate_rule_doc(doc, source="f.json")

    assert named in str(err.value) and "'f.json'" in str(err.value)
    assert "expected" in str(err.value) and "\n" not in str(err.value)


def test_load_rule_file_errors_are_input_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")

    with pytest.raises(InputError, match="is not JSON"):
        load_rule_file(bad)
    with pytest.raises(InputError, match="cannot be read"):
        load_rule_file(tmp_path / "missing.json")


def test_load_rule_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "rule.json"
    path.write_text(json.dumps(default_rule_doc()))

    assert load_rule_file(path) == default_rule_doc()


@pytest.mark.parametrize(("prefix", "covered"), [
    ("s43-predictions", True), ("s43-predictions/", True), ("s43-predictions/team-a", True),
    ("s43-predictions-old", False), ("other", False)])
def test_covers_prefix(prefix: str, covered: bool) -> None:
    assert covers_prefix(default_rule_doc(), prefix) is covered


# --- comparing --------------------------------------------------------------------------------

def test_compare_ignores_the_shape_the_server_returns() -> None:
    legacy = {"ID": OURS["ID"], "Prefix": "s43-predictions/", "Status": "Enabled",
              "Expiration": {"Days": 7, "ExpiredObjectDeleteMarker": False},
              "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}

    assert compare_rule(OURS, legacy) == []


def test_compare_lists_each_difference() -> None:
    live = copy.deepcopy(OURS)
    live["Expiration"]["Days"] = 30
    live["Status"] = "Disabled"
    del live["AbortIncompleteMultipartUpload"]

    diffs = compare_rule(OURS, live)

    assert "Expiration.Days: expected 7, found 30" in diffs
    assert "Status: expected 'Enabled', found 'Disabled'" in diffs
    assert ("AbortIncompleteMultipartUpload.DaysAfterInitiation: expected 1, found '(absent)'"
            in diffs)
    assert len(diffs) == 3


def test_compare_absent_rule() -> None:
    assert compare_rule(OURS, None) == [
        "rule 's43-predictions-7d' (prefix 's43-predictions/') is not on the bucket"]


def test_compare_dates_as_returned_by_boto3() -> None:
    want = {"ID": "d", "Filter": {"Prefix": "x/"}, "Status": "Enabled",
            "Expiration": {"Date": "2030-01-01T00:00:00Z"}}
    live = dict(want, Expiration={"Date": datetime(2030, 1, 1, tzinfo=timezone.utc)})

    assert compare_rule(want, live) == []


# --- merging ----------------------------------------------------------------------------------

def test_merge_adds_ours_and_keeps_every_other_rule() -> None:
    merged, added, replaced, kept = merge_rules([LOGS, TAGGED, GLACIER], [OURS])

    assert merged == [LOGS, TAGGED, GLACIER, OURS]
    assert (added, replaced, kept) == (["s43-predictions-7d"], [],
                                       ["logs-30d", "tmp-tagged", "preds-to-glacier"])


def test_merge_replaces_the_rule_with_the_same_id_in_place() -> None:
    old = dict(copy.deepcopy(OURS), Expiration={"Days": 30})

    merged, added, replaced, _ = merge_rules([LOGS, old, GLACIER], [OURS])

    assert merged == [LOGS, OURS, GLACIER]
    assert (added, replaced) == ([], ["s43-predictions-7d"])


def test_merge_replaces_another_expiration_of_the_same_prefix() -> None:
    other_id = {"ID": "expire-preds", "Prefix": "s43-predictions/", "Status": "Enabled",
                "Expiration": {"Days": 90}}

    merged, added, replaced, kept = merge_rules([other_id, LOGS], [OURS])

    assert merged == [OURS, LOGS]
    assert (added, replaced, kept) == ([], ["expire-preds"], ["logs-30d"])


def test_merge_strips_what_put_refuses_from_kept_rules() -> None:
    returned = {"ID": "logs-30d", "Filter": {"Prefix": "logs/"}, "Prefix": "logs/",
                "Status": "Enabled", "Expiration": {"Days": 30}, "Unknown": "x"}

    merged, *_ = merge_rules([returned], [OURS])

    assert merged[0] == LOGS


# --- parse_age --------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [("7d", 7 * DAY), ("36h", 36 * 3600),
                                               ("90m", 5400), (" 1d ", DAY)])
def test_parse_age(text: str, seconds: int) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "0d", "-1d", "7w", "1.5d", "7 d", "d", "7dd"])
def test_parse_age_refuses_naming_the_value(text: str) -> None:
    with pytest.raises(InputError) as err:
        parse_age(text)

    msg = str(err.value)
    assert repr(text) in msg and "expected" in msg and "7d, 36h or 90m" in msg and "\n" not in msg


# --- gc, on the in-memory store ---------------------------------------------------------------

class RecordingStore(MemoryStore):
    """Remembers the order of deletions."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[str] = []

    def delete(self, key: str) -> None:
        self.deleted.append(key)
        super().delete(key)


def put_at(store: MemoryStore, key: str, ts: float, body: bytes = b"x") -> None:
    store.objects[key] = (body, {}, ts)


def test_gc_rejects_root_prefix_and_short_ages() -> None:
    with pytest.raises(InputError, match="bucket root"):
        gc_runs(MemoryStore(), "", 7 * DAY)
    with pytest.raises(InputError, match="at least 1h"):
        gc_runs(MemoryStore(), "p", 59 * 60)


def test_gc_deletes_members_first_and_control_objects_last() -> None:
    store = RecordingStore()
    for key in ("p/old/_gate.json", "p/old/_run.json", "p/old/m00000.arrow", "p/old/m00001.arrow"):
        put_at(store, key, 1_000.0)

    report = gc_runs(store, "p", DAY, now=1_000.0 + 2 * DAY, delete=True)

    assert [r.action for r in report.runs] == ["deleted"]
    assert set(store.deleted[:2]) == {"p/old/m00000.arrow", "p/old/m00001.arrow"}
    assert set(store.deleted[2:]) == {"p/old/_gate.json", "p/old/_run.json"}
    assert store.objects == {}


def test_gc_dry_run_lists_old_runs_and_deletes_nothing() -> None:
    store = RecordingStore()
    put_at(store, "p/old/m0.npz", 1_000.0, b"12345")
    put_at(store, "p/old/_run.json", 1_500.0, b"{}")
    put_at(store, "p/new/m0.npz", 1_000.0)
    put_at(store, "p/new/m1.npz", 1_000.0 + 2 * DAY)  # one fresh object keeps the whole run
    put_at(store, "p/loose.txt", 0.0)
    put_at(store, "q/old/m0.npz", 0.0)

    report = gc_runs(store, "p", DAY, now=1_000.0 + 2 * DAY)

    assert store.deleted == []
    by_id = {r.run_id: r for r in report.runs}
    assert by_id["old"].action == "expired" and by_id["new"].action == "kept"
    assert (by_id["old"].objects, by_id["old"].bytes, by_id["old"].newest) == (2, 7, 1_500.0)
    assert report.loose_keys == 1
    summary = json.loads(report.to_json())
    assert summary["dry_run"] is True and summary["expired_runs"] == 1
    assert summary["cutoff"] == "1970-01-02T00:16:40Z"
    assert "would be deleted; run again with --yes" in report.human()


def test_gc_skips_a_run_written_between_listing_and_deletion() -> None:
    class LateWriter(RecordingStore):
        def list(self, prefix: str) -> Any:
            listed = list(super().list(prefix))
            if prefix == "p/r/":  # the re-listing just before deletion
                put_at(self, "p/r/m9.npz", 10 * DAY)
            return iter(listed)

    store = LateWriter()
    put_at(store, "p/r/m0.npz", 0.0)
    put_at(store, "p/r/_run.json", 0.0)

    report = gc_runs(store, "p", DAY, now=5 * DAY, delete=True)

    assert report.runs[0].action == "skipped"
    assert "p/r/_run.json" in store.objects and "p/r/m9.npz" in store.objects
    assert "p/r/_run.json" not in store.deleted
