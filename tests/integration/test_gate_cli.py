"""``s43-ray gate``: re-checking a finished run from the store alone (real SeaweedFS, real Ray)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from helpers import CliResult, control_keys_under, keys_under

from s43_ray.config import StoreConfig
from s43_ray.stores.s3 import S3Store

Cli = Callable[..., CliResult]


def finished_run(cli: Cli, store_args: list[str], run_id: str, size: int = 3,
                 fmt: str = "arrow") -> CliResult:
    r = cli("run", "--run-id", run_id, "--cohort-size", str(size), "--rows", "100",
            "--format", fmt, "--json", *store_args)
    assert r.code == 0, r.stderr
    return r


def gate_record(store: S3Store, cfg: StoreConfig, run_id: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(bytes(store.get(f"{cfg.prefix}/{run_id}/_gate.json")[0]))
    return record


def test_gate_rechecks_a_finished_run_from_the_store(cli: Cli, store_args: list[str]) -> None:
    finished_run(cli, store_args, "g-ok")

    r = cli("gate", "--run-id", "g-ok", "--json", *store_args)

    assert r.code == 0, r.stderr
    assert r.summary["status"] == "passed"
    assert r.summary["cohort_count"] == r.summary["expected"] == 3
    assert r.summary["command"] == "gate"
    assert r.summary["read_latency_s"]["n"] == 3


def test_gate_fails_when_one_member_missing(cli: Cli, store_args: list[str], store: S3Store,
                                           store_cfg: StoreConfig) -> None:
    finished_run(cli, store_args, "g-missing")
    store.delete(f"{store_cfg.prefix}/g-missing/m00001.arrow")

    r = cli("gate", "--run-id", "g-missing", "--json", *store_args)

    assert r.code == 1, r.stderr
    s = r.summary
    assert s["missing"] == ["m00001"]
    assert s["status"] == "failed"
    assert s["cohort_count"] == 2 and s["expected"] == 3
    (outcome,) = r.named("s43_gate_outcome")
    assert outcome["severity"] == "error"
    assert outcome["status"] == "failed"
    assert outcome["shortfall"] == 1
    assert outcome["cohort_count"] == 2 and outcome["expected"] == 3
    assert outcome["missing"] == ["m00001"]
    (acquire,) = r.named("s43_acquire_outcome")
    assert acquire["keys"] == 2
    record = gate_record(store, store_cfg, "g-missing")
    assert record["status"] == "failed"
    assert record["missing"] == ["m00001"]
    assert record["shortfall"] == 1


def test_gate_expected_count_must_agree_with_the_run_record(cli: Cli, store_args: list[str],
                                                            store: S3Store,
                                                            store_cfg: StoreConfig) -> None:
    finished_run(cli, store_args, "g-expected")
    verdict_before = bytes(store.get(f"{store_cfg.prefix}/g-expected/_gate.json")[0])

    ok = cli("gate", "--run-id", "g-expected", "--expected", "3", "--json", *store_args)
    verdict_ok = bytes(store.get(f"{store_cfg.prefix}/g-expected/_gate.json")[0])
    short = cli("gate", "--run-id", "g-expected", "--expected", "4", "--json", *store_args)

    assert ok.code == 0, ok.stderr
    assert ok.summary["expected"] == 3 and ok.summary["status"] == "passed"
    assert verdict_ok != verdict_before  # the agreeing gate's verdict is the latest
    assert short.code == 2, short.stderr
    assert "--expected 4 differs from the 3 members" in short.stderr
    assert short.named("s43_gate_outcome") == []
    assert bytes(store.get(f"{store_cfg.prefix}/g-expected/_gate.json")[0]) == verdict_ok


def test_gate_of_a_run_that_lost_its_manifest_uses_its_ledgers_cohort(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    finished_run(cli, store_args, "g-nomanifest", size=2)
    store.delete(f"{store_cfg.prefix}/g-nomanifest/_run.json")

    without = cli("gate", "--run-id", "g-nomanifest", "--json", *store_args)
    with_count = cli("gate", "--run-id", "g-nomanifest", "--expected", "2", "--json",
                     *store_args)

    assert without.code == 0, without.stderr
    assert without.summary["cohort_count"] == 2 and without.summary["basis"] == "ledger"
    assert with_count.code == 0, with_count.stderr


def test_gate_of_objects_with_no_s43_history_needs_the_expected_count(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    finished_run(cli, store_args, "g-bare", size=2)
    for control in keys_under(store, f"{store_cfg.prefix}/g-bare/_") + control_keys_under(
            store, f"{store_cfg.prefix}/g-bare/"):
        store.delete(control)

    without = cli("gate", "--run-id", "g-bare", "--json", *store_args)
    with_count = cli("gate", "--run-id", "g-bare", "--expected", "2", "--json", *store_args)

    assert without.code == 2
    assert "--expected" in without.stderr and "g-bare" in without.stderr
    assert with_count.code == 0, with_count.stderr
    assert with_count.summary["cohort_count"] == 2
    assert with_count.summary["basis"] == "metadata"


def test_gate_on_unknown_run_fails_with_every_member_missing(cli: Cli,
                                                             store_args: list[str]) -> None:
    r = cli("gate", "--run-id", "never-ran", "--expected", "2", "--json", *store_args)

    assert r.code == 1, r.stderr
    assert r.summary["missing"] == ["m00000", "m00001"]
    assert r.summary["cohort_count"] == 0


def test_foreign_key_is_unexpected_and_not_counted(cli: Cli, store_args: list[str],
                                                  store: S3Store,
                                                  store_cfg: StoreConfig) -> None:
    finished_run(cli, store_args, "g-stray")
    stray = f"{store_cfg.prefix}/g-stray/stray.txt"
    store.put(stray, b"not a member", metadata={})

    r = cli("gate", "--run-id", "g-stray", "--json", *store_args)

    assert r.code == 0, r.stderr
    assert r.summary["unexpected"] == [stray]
    assert r.summary["cohort_count"] == 3 and r.summary["status"] == "passed"
    (outcome,) = r.named("s43_gate_outcome")
    assert outcome["unexpected"] == 1


def test_member_of_another_format_is_not_counted(cli: Cli, store_args: list[str],
                                                store: S3Store,
                                                store_cfg: StoreConfig) -> None:
    finished_run(cli, store_args, "g-otherfmt", size=2, fmt="npz")
    base = f"{store_cfg.prefix}/g-otherfmt/"
    body, info = store.get(f"{base}m00001.npz")
    store.put(f"{base}m00001.arrow", body, metadata=dict(info.metadata))
    store.delete(f"{base}m00001.npz")

    r = cli("gate", "--run-id", "g-otherfmt", "--json", *store_args)

    assert r.code == 1
    assert r.summary["cohort_count"] == 1
    assert "m00001" in r.summary["invalid"] or r.summary["missing"] == ["m00001"]


@pytest.mark.parametrize("verify", [
    "full", "head"])
def test_gate_fails_on_corrupted_member(cli: Cli, store_args: list[str], store: S3Store,
                                        store_cfg: StoreConfig, verify: str) -> None:
    run_id = f"g-corrupt-{verify}"
    finished_run(cli, store_args, run_id)
    key = f"{store_cfg.prefix}/{run_id}/m00002.arrow"
    body, info = store.get(key)
    altered = bytearray(body)
    altered[len(altered) // 2] ^= 0xFF
    store.put(key, bytes(altered), metadata=dict(info.metadata))
    assert store.head(key).metadata == info.metadata

    r = cli("gate", "--run-id", run_id, "--verify", verify, "--json", *store_args)

    assert r.code == 1, r.stderr
    assert list(r.summary["invalid"]) == ["m00002"]
    assert r.summary["invalid"]["m00002"].startswith("checksum")
    assert r.summary["cohort_count"] == 2 and r.summary["status"] == "failed"
    failed = r.named("s43_pred_load_failed")
    assert len(failed) == 1
    assert failed[0]["member"] == "m00002" and failed[0]["key"] == key
    assert failed[0]["severity"] == "error" and failed[0]["error_class"] == "checksum"
    assert gate_record(store, store_cfg, run_id)["status"] == "failed"


@pytest.mark.parametrize("verify", ["full", "head"])
def test_gate_fails_on_truncated_member(cli: Cli, store_args: list[str], store: S3Store,
                                        store_cfg: StoreConfig, verify: str) -> None:
    run_id = f"g-trunc-{verify}"
    finished_run(cli, store_args, run_id, size=2)
    key = f"{store_cfg.prefix}/{run_id}/m00000.arrow"
    body, info = store.get(key)
    store.put(key, bytes(body[: len(body) // 2]), metadata=dict(info.metadata))

    r = cli("gate", "--run-id", run_id, "--verify", verify, "--json", *store_args)

    assert r.code == 1
    assert list(r.summary["invalid"]) == ["m00000"]
    (failed,) = r.named("s43_pred_load_failed")
    assert failed["error_class"] == "truncated" and failed["severity"] == "error"


def test_gate_refuses_a_format_other_than_the_runs(cli: Cli, store_args: list[str]) -> None:
    finished_run(cli, store_args, "g-fmt", size=2, fmt="arrow")

    r = cli("gate", "--run-id", "g-fmt", "--format", "npz", "--json", *store_args)

    assert r.code == 2
    assert r.summary["status"] == "error" and r.summary["exit_code"] == 2
    assert "npz" in r.summary["message"] and "arrow" in r.summary["message"]


def test_gate_with_corrupt_manifest_fails_without_traceback(cli: Cli, store_args: list[str],
                                                            store: S3Store,
                                                            store_cfg: StoreConfig) -> None:
    finished_run(cli, store_args, "g-badmanifest", size=2)
    store.put(f"{store_cfg.prefix}/g-badmanifest/_run.json", b"{not json", metadata={})

    r = cli("gate", "--run-id", "g-badmanifest", "--json", *store_args)

    assert r.code == 1
    assert "manifest" in r.summary["message"]
    assert "Traceback" not in r.stderr
