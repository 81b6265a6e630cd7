"""events: one JSON object per line with ts, severity, event and run_id; never a secret."""

from __future__ import annotations

import io
import json
import re
from datetime import datetime

from s43_ray.config import Secret, StoreConfig
from s43_ray.events import EVENT_NAMES, EventLog, rfc3339_now

SECRET_VALUE = "s43-unit-secret-0f9e8d"
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_event_is_one_json_line_with_the_required_fields() -> None:
    stream = io.StringIO()
    log = EventLog(stream, run_id="manual__2026-11-28T10:00:00+00:00")

    log.emit("s43_gate_outcome", cohort_count=3, expected=4, shortfall=1, status="failed")
    log.emit("s43_pred_persist_failed", "error", member="m00001", error_class="checksum")

    lines = _lines(stream)
    assert len(lines) == 2
    for record in lines:
        assert RFC3339_UTC.fullmatch(str(record["ts"]))
        datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00"))
        assert record["run_id"] == "manual__2026-11-28T10:00:00+00:00"
    assert lines[0]["event"] == "s43_gate_outcome"
    assert lines[0]["severity"] == "info"
    assert lines[0]["shortfall"] == 1
    assert lines[1]["severity"] == "error"
    assert lines[1]["error_class"] == "checksum"


def test_run_id_can_be_given_per_event() -> None:
    stream = io.StringIO()

    EventLog(stream, run_id="r1").emit("s43_run_started", run_id="r2")

    assert _lines(stream)[0]["run_id"] == "r2"


def test_secret_field_is_written_as_stars() -> None:
    stream = io.StringIO()
    log = EventLog(stream, run_id="r1")

    log.emit("s43_run_started", key=Secret(SECRET_VALUE),
             nested={"creds": [Secret(SECRET_VALUE), "public"]},
             config=StoreConfig(bucket="b", secret_access_key=Secret(SECRET_VALUE)))

    assert SECRET_VALUE not in stream.getvalue()
    record = _lines(stream)[0]
    assert record["key"] == "***"
    assert record["nested"] == {"creds": ["***", "public"]}
    assert SECRET_VALUE not in json.dumps(log.records, default=str)


def test_min_severity_filters_what_is_written_but_keeps_records() -> None:
    stream = io.StringIO()
    log = EventLog(stream, run_id="r1", min_severity="warning")

    log.emit("s43_pred_persisted", "debug", member="m0")
    log.emit("s43_pred_persisted", "info", member="m1")
    log.emit("s43_pred_load_failed", "warning", member="m2")
    log.emit("s43_pred_persist_failed", "error", member="m3")

    assert [r["member"] for r in _lines(stream)] == ["m2", "m3"]
    assert [r["member"] for r in log.records] == ["m0", "m1", "m2", "m3"]
    assert [r["member"] for r in log.named("s43_pred_persisted")] == ["m0", "m1"]


def test_before_write_runs_only_for_written_events() -> None:
    calls: list[int] = []
    log = EventLog(io.StringIO(), min_severity="info", before_write=lambda: calls.append(1))

    log.emit("s43_pred_persisted", "debug")
    log.emit("s43_pred_persisted", "info")

    assert calls == [1]


def test_non_json_field_values_are_written_as_text() -> None:
    stream = io.StringIO()

    EventLog(stream).emit("s43_acquire_outcome", keys={"a"}, when=datetime(2026, 1, 1))

    record = _lines(stream)[0]
    assert record["keys"] == "{'a'}"
    assert record["when"] == "2026-01-01 00:00:00"


def test_rfc3339_now_is_utc_with_z() -> None:
    assert RFC3339_UTC.fullmatch(rfc3339_now())


def test_event_names_operators_alert_on_are_present() -> None:
    for name in ("s43_pred_persist_failed", "s43_pred_load_failed", "s43_acquire_outcome",
                 "s43_gate_persist_failed", "s43_gate_outcome"):
        assert name in EVENT_NAMES
