"""summary: latency percentiles, exit codes, and the ``--json`` summary line."""

from __future__ import annotations

import json

import pytest

from s43_ray.summary import Summary, latency_stats


def _summary(**overrides: object) -> Summary:
    fields: dict[str, object] = {"run_id": "r1", "status": "passed", "expected": 4,
                                 "cohort_count": 4, "missing": [], "invalid": {},
                                 "unexpected": [], "gate_persisted": True,
                                 "gate_key": "p/r1/_gate.json", "store": "s3://s43-local/p"}
    fields.update(overrides)
    return Summary(**fields)  # type: ignore[arg-type]


def test_latency_stats_of_no_samples_is_none_with_count_zero() -> None:
    assert latency_stats([]) == {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}


def test_latency_stats_of_samples_gives_percentiles_and_max() -> None:
    stats = latency_stats([i / 100 for i in range(1, 101)])  # 0.01 .. 1.00 s

    assert stats["n"] == 100
    assert stats["p50"] == pytest.approx(0.505)
    assert stats["p95"] == pytest.approx(0.9505)
    assert stats["p99"] == pytest.approx(0.9901)
    assert stats["max"] == 1.0


def test_latency_stats_of_one_sample_is_that_sample() -> None:
    assert latency_stats([0.25]) == {"n": 1, "p50": 0.25, "p95": 0.25, "p99": 0.25, "max": 0.25}


@pytest.mark.parametrize(("status", "persisted", "code"), [
    ("passed", True, 0),
    ("failed", True, 1),
    ("failed", False, 1),
    ("passed", False, 3),
])
def test_summary_exit_code(status: str, persisted: bool, code: int) -> None:
    assert _summary(status=status, gate_persisted=persisted).exit_code == code


def test_summary_json_is_one_line_with_shortfall_and_missing_members() -> None:
    summary = _summary(status="failed", cohort_count=3, missing=["m00002"],
                       write_latency_s=latency_stats([0.1, 0.2]))

    text = summary.to_json()

    assert "\n" not in text
    record = json.loads(text)
    assert record["shortfall"] == 1
    assert record["missing"] == ["m00002"]
    assert record["expected"] == 4 and record["cohort_count"] == 3
    assert record["status"] == "failed"
    assert record["write_latency_s"]["n"] == 2
    assert "version" in record and "wall_seconds" in record


def test_human_summary_names_the_verdict_and_missing_members() -> None:
    text = _summary(status="failed", cohort_count=3, missing=["m00002"],
                    gate_persisted=False).human()

    assert "FAILED 3/4" in text
    assert "missing (1): m00002" in text
    assert "NOT persisted to s3://s43-local/p/r1/_gate.json" in text


def test_human_summary_shortens_long_member_lists() -> None:
    missing = [f"m{i:05d}" for i in range(25)]

    text = _summary(status="failed", cohort_count=0, expected=25, missing=missing).human()

    assert "missing (25): m00000" in text
    assert "(+15 more)" in text
    assert "m00024" not in text


def test_human_summary_says_why_each_invalid_member_failed() -> None:
    text = _summary(status="failed", cohort_count=2, store="s3://bkt/p", invalid={
        "m00001": "checksum: payload checksum crc64nvme:AAAA does not match the ledger's",
        "m00003": "wrong_run: object is bound to run 'other'; expected 'r1'"},
        persist_failed={"m00002": "auth: AccessDenied on PUT"}).human()

    lines = text.splitlines()
    assert "  invalid (2):" in lines
    assert any(line.split()[:2] == ["m00001", "checksum:"] for line in lines)
    assert any("m00003" in line and "bound to run 'other'" in line for line in lines)
    assert any("m00002" in line and "AccessDenied" in line for line in lines)


def test_human_summary_names_the_verdict_as_a_url_to_paste() -> None:
    s3 = _summary(store="s3://bkt/p", gate_key="p/r1/_gate.json").human()
    local = _summary(store="file:///mnt/shared", gate_key="p/r1/_gate.json").human()

    assert "  verdict: s3://bkt/p/r1/_gate.json" in s3.splitlines()
    assert "  verdict: file:///mnt/shared/p/r1/_gate.json" in local.splitlines()
