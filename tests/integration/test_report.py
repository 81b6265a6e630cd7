"""``s43_ray.ops.report``: what the store says about a run, on real runs (real SeaweedFS, real Ray).

The report needs no Ray and writes nothing: each test makes a run with ``s43-ray run`` (the
``cli`` fixture), changes the store as an incident would, and reads the report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

import pytest
from helpers import CliResult, keys_under

from s43_ray.config import StoreConfig
from s43_ray.errors import EXIT_BAD_INPUT, InputError, InvalidRunId
from s43_ray.keys import RunLayout
from s43_ray.ops.report import RunReport, report_run
from s43_ray.stores.s3 import S3Store

Cli = Callable[..., CliResult]
MEMBERS = ["m00000", "m00001", "m00002"]


def finished_run(cli: Cli, store_args: list[str], run_id: str, fmt: str = "arrow") -> CliResult:
    r = cli("run", "--run-id", run_id, "--cohort-size", "3", "--rows", "100", "--format", fmt,
            "--json", *store_args)
    assert r.code == 0, r.stderr
    return r


def report(store: S3Store, cfg: StoreConfig, run_id: str, **kwargs: bool) -> RunReport:
    rep = report_run(store, RunLayout(cfg.prefix, run_id), **kwargs)
    json.loads(rep.to_json())  # always one valid JSON object
    return rep


def is_rfc3339_utc(stamp: str | None) -> bool:
    if not stamp or not stamp.endswith("Z"):
        return False
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).utcoffset() is not None


def test_report_of_a_passed_run_shows_verdict_objects_sizes_and_times(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig,
        aws_env: dict[str, str]) -> None:
    r = finished_run(cli, store_args, "rep-ok", fmt="npz")
    keys_before = keys_under(store, store_cfg.prefix + "/")

    rep = report(store, store_cfg, "rep-ok")

    assert rep.status == "passed" and rep.exit_code == 0 and not rep.stale
    assert rep.verdict is not None and rep.verdict["cohort_count"] == 3
    assert rep.verdict["shortfall"] == 0 and "checks" not in rep.verdict
    assert is_rfc3339_utc(rep.verdict_written_at)
    assert rep.manifest is not None and rep.manifest["members"] == 3
    assert rep.manifest["codec"] == "npz"
    assert [m.member for m in rep.members] == MEMBERS
    base = f"{store_cfg.prefix}/rep-ok/"
    sizes = {o.key: o.size for o in store.list(base)}
    for m in rep.members:
        assert m.present and m.verdict == "ok" and m.codec == "npz" and not m.changed
        assert m.key == f"{base}{m.member}.npz" and m.size == sizes[m.key]
        assert is_rfc3339_utc(m.written_at)
    assert rep.bytes_total == r.summary["bytes_written"]
    # 3 members, _run.json, _gate.json, and the history: one attempt, its ledger, one verdict
    assert rep.objects == 8 and rep.unexpected == [] and rep.missing == []
    human = rep.human()
    assert "verdict: PASSED (recomputed" in human and "claims PASSED 3/3 members" in human
    assert "STALE" not in human
    assert "m00002" in human and "npz" in human
    record = json.loads(rep.to_json())
    assert record["status"] == "passed" and record["command"] == "report"
    assert record["members"][0]["member"] == "m00000"
    assert keys_under(store, store_cfg.prefix + "/") == keys_before  # nothing written
    secret = aws_env["AWS_SECRET_ACCESS_KEY"]
    assert secret not in human and secret not in rep.to_json()


def test_a_member_deleted_after_the_verdict_makes_it_stale_until_the_gate_runs_again(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    finished_run(cli, store_args, "rep-del")
    store.delete(f"{store_cfg.prefix}/rep-del/m00001.arrow")

    rep = report(store, store_cfg, "rep-del")

    assert rep.status == "stale" and rep.exit_code == 1
    assert rep.missing == ["m00001"]
    (changed,) = [m for m in rep.members if m.changed]
    assert changed.member == "m00001" and changed.changed == "counted, now absent"
    assert "STALE" in rep.human() and "s43-ray gate --run-id rep-del" in rep.human()

    assert cli("gate", "--run-id", "rep-del", *store_args).code == 1
    rep = report(store, store_cfg, "rep-del")

    assert rep.status == "failed" and rep.exit_code == 1 and not rep.stale
    assert rep.verdict is not None and rep.verdict["missing"] == ["m00001"]
    assert rep.verdict["shortfall"] == 1
    assert rep.missing == ["m00001"]
    assert "verdict: FAILED (recomputed" in rep.human()
    assert "claims FAILED 2/3 members, shortfall 1" in rep.human()
    assert "missing now (1): m00001" in rep.human()


def test_a_corrupted_member_is_reported_invalid_with_its_error_class(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    finished_run(cli, store_args, "rep-bad")
    key = f"{store_cfg.prefix}/rep-bad/m00002.arrow"
    body = bytearray(store.get(key)[0])
    body[len(body) // 2] ^= 0xFF
    # Rewritten within the same second as the verdict, its metadata copied: the ETag tells.
    store.put(key, bytes(body), metadata=store.head(key).metadata)

    stale = report(store, store_cfg, "rep-bad")
    assert stale.status == "stale"
    assert [m.member for m in stale.members if m.changed] == ["m00002"]
    assert stale.members[2].changed.startswith("rewritten since the verdict (ETag ")

    assert cli("gate", "--run-id", "rep-bad", *store_args).code == 1
    rep = report(store, store_cfg, "rep-bad")

    assert rep.status == "failed" and not rep.stale
    assert list(rep.invalid) == ["m00002"] and rep.invalid["m00002"].startswith("checksum: ")
    (bad,) = [m for m in rep.members if m.member == "m00002"]
    assert bad.present and bad.verdict == "invalid" and bad.error_class == "checksum"
    assert rep.missing == []
    assert "invalid at the gate (1): m00002 (checksum: " in rep.human()


def test_keys_that_belong_to_no_member_are_unexpected(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    finished_run(cli, store_args, "rep-stray")
    base = f"{store_cfg.prefix}/rep-stray/"
    store.put(f"{base}notes.txt", b"left by hand", metadata={})
    store.put(f"{base}m00001.npz", b"other format", metadata={})

    rep = report(store, store_cfg, "rep-stray")

    assert rep.unexpected == [f"{base}m00001.npz", f"{base}notes.txt"]
    assert rep.missing == [] and rep.objects == 10
    assert "unexpected keys (2)" in rep.human()


def test_a_run_without_a_verdict_says_so_and_exits_1(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    finished_run(cli, store_args, "rep-nogate")
    store.delete(f"{store_cfg.prefix}/rep-nogate/_gate.json")

    rep = report(store, store_cfg, "rep-nogate")

    assert rep.status == "no_verdict" and rep.exit_code == 1 and rep.verdict is None
    assert all(m.present and m.verdict == "" and not m.changed for m in rep.members)
    assert "verdict: NONE" in rep.human()


def test_a_run_that_does_not_exist_is_bad_input_naming_run_and_store(
        store: S3Store, store_cfg: StoreConfig) -> None:
    with pytest.raises(InputError) as err:
        report(store, store_cfg, "manual__2026-01-01T00:00:00+00:00")

    assert err.value.exit_code == EXIT_BAD_INPUT
    assert "manual__2026-01-01T00:00:00+00:00" in str(err.value)
    assert store_cfg.url in str(err.value)
    with pytest.raises(InvalidRunId):
        report(store, store_cfg, "a/b")


def test_report_without_heads_skips_the_codec(cli: Cli, store_args: list[str],
                                              store: S3Store, store_cfg: StoreConfig) -> None:
    finished_run(cli, store_args, "rep-nohead")

    rep = report(store, store_cfg, "rep-nohead", head=False)

    assert rep.status == "passed"
    assert [m.codec for m in rep.members] == [None, None, None]
    assert all(m.size for m in rep.members)
