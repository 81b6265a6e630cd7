"""``s43-ray run`` end to end on the session's real SeaweedFS server and local Ray cluster.

Each test asserts what a user sees: the exit code, the events on stderr, the ``--json`` summary
and the objects in the bucket.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pytest
from helpers import CliResult, keys_under

from s43_ray import codec as codecs
from s43_ray.config import StoreConfig
from s43_ray.predict import default_predictor
from s43_ray.stores.s3 import S3Store

Cli = Callable[..., CliResult]
ROWS = 200
AIRFLOW_RUN_ID = "manual__2026-11-28T10:00:00+00:00"
EXTENSION = {"npz": "npz", "arrow": "arrow"}
SUMMARY_FIELDS = ("run_id", "expected", "cohort_count", "status", "missing", "invalid",
                  "unexpected", "write_latency_s", "read_latency_s", "bytes_written",
                  "wall_seconds")


def members(n: int) -> list[str]:
    return [f"m{i:05d}" for i in range(n)]


def run_prefix(cfg: StoreConfig, run_id: str) -> str:
    return f"{cfg.prefix}/{run_id}/"


def open_stock(body: memoryview, fmt: str) -> dict[str, np.ndarray]:
    """Open an object the way a user without s43_ray would: stock numpy / pyarrow only."""
    if fmt == "npz":
        with np.load(io.BytesIO(bytes(body)), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    reader = pyarrow.ipc.open_file(pa.py_buffer(body))
    table = reader.read_all()
    assert table.num_rows == 1
    return {name: table.column(name)[0].values.to_numpy(zero_copy_only=False)
            for name in table.column_names}


@pytest.mark.parametrize("fmt", ["npz", "arrow"])
def test_full_run_passes_and_objects_open_with_stock_readers(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig,
        fmt: str) -> None:
    run_id = f"full-{fmt}"
    r = cli("run", "--run-id", run_id, "--cohort-size", "3", "--rows", str(ROWS),
            "--format", fmt, "--json", *store_args)

    assert r.code == 0, r.stderr
    s = r.summary
    assert s["status"] == "passed"
    assert s["cohort_count"] == s["expected"] == 3
    assert s["run_id"] == run_id
    assert s["missing"] == [] and s["invalid"] == {} and s["unexpected"] == []
    base = run_prefix(store_cfg, run_id)
    expected_keys = {f"{base}{m}.{EXTENSION[fmt]}" for m in members(3)}
    listed = set(keys_under(store, base))
    assert listed == expected_keys | {f"{base}_gate.json", f"{base}_run.json"}

    gate = json.loads(bytes(store.get(f"{base}_gate.json")[0]))
    assert gate["status"] == "passed"
    assert gate["cohort_count"] == gate["expected"] == 3
    assert gate["shortfall"] == 0
    manifest = json.loads(bytes(store.get(f"{base}_run.json")[0]))
    assert manifest["members"] == members(3) and manifest["codec"] == fmt

    for m in members(3):
        key = f"{base}{m}.{EXTENSION[fmt]}"
        body, _ = store.get(key)
        meta = store.head(key).metadata
        assert meta["s43-codec"] == fmt
        assert meta["s43-format-version"] == codecs.FORMAT_VERSION
        assert meta["s43-checksum"] == codecs.checksum(body)
        arrays = open_stock(body, fmt)
        want = default_predictor(run_id, m, ROWS)
        assert set(arrays) == set(want)
        np.testing.assert_array_equal(arrays["predictions"], want["predictions"].ravel())
        np.testing.assert_array_equal(arrays["index"], want["index"])
        assert arrays["predictions"].dtype == np.float32
        assert arrays["predictions"].size == ROWS


def test_airflow_run_id_round_trips(cli: Cli, store_args: list[str], store: S3Store,
                                    store_cfg: StoreConfig) -> None:
    r = cli("run", "--run-id", AIRFLOW_RUN_ID, "--cohort-size", "2", "--rows", "100",
            "--json", *store_args)

    assert r.code == 0, r.stderr
    assert r.summary["run_id"] == AIRFLOW_RUN_ID
    keys = keys_under(store, store_cfg.prefix + "/")
    assert keys, "nothing was written"
    assert all(k.startswith(f"{store_cfg.prefix}/{AIRFLOW_RUN_ID}/") for k in keys), keys
    assert f"{store_cfg.prefix}/{AIRFLOW_RUN_ID}/m00000.arrow" in keys
    assert all(e["run_id"] == AIRFLOW_RUN_ID for e in r.events)
    # the gate subcommand finds the same run by that id
    g = cli("gate", "--run-id", AIRFLOW_RUN_ID, "--json", *store_args)
    assert g.code == 0, g.stderr
    assert g.summary["run_id"] == AIRFLOW_RUN_ID


def test_events_are_json_lines_with_the_contract_fields(
        cli: Cli, store_args: list[str], aws_env: dict[str, str]) -> None:
    r = cli("run", "--run-id", "events-1", "--cohort-size", "3", "--rows", "100", "--json",
            *store_args)

    assert r.code == 0, r.stderr
    json_lines = [line for line in r.stderr.splitlines() if line.startswith("{")]
    assert len(json_lines) == len(r.events) > 0
    for line in json_lines:
        record = json.loads(line)
        for name in ("ts", "severity", "event", "run_id"):
            assert name in record, (name, record)
        assert record["run_id"] == "events-1"
        assert record["severity"] in {"debug", "info", "warning", "error"}
        assert record["ts"].endswith("Z")
        ts = datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))
        assert ts.tzinfo is not None and ts.utcoffset() == timezone.utc.utcoffset(None)

    acquire = r.named("s43_acquire_outcome")
    assert len(acquire) == 1 and acquire[0]["keys"] == 3
    gate = r.named("s43_gate_outcome")
    assert len(gate) == 1
    assert gate[0]["cohort_count"] == 3 and gate[0]["expected"] == 3
    assert gate[0]["shortfall"] == 0 and gate[0]["status"] == "passed"
    persisted = r.named("s43_pred_persisted")
    assert sorted(e["member"] for e in persisted) == members(3)
    assert not r.named("s43_pred_persist_failed") and not r.named("s43_pred_load_failed")
    assert not [e for e in r.events if e["severity"] == "error"]
    # no secret in any output
    secret = aws_env["AWS_SECRET_ACCESS_KEY"]
    assert secret not in r.stdout and secret not in r.stderr


def test_json_summary_is_the_last_stdout_line(cli: Cli, store_args: list[str]) -> None:
    r = cli("run", "--run-id", "json-1", "--cohort-size", "2", "--rows", "100", "--json",
            *store_args)

    assert r.code == 0, r.stderr
    s = r.summary
    assert isinstance(s, dict)
    for name in SUMMARY_FIELDS:
        assert name in s, name
    for name in ("write_latency_s", "read_latency_s"):
        stats = s[name]
        assert stats["n"] == 2, (name, stats)
        for p in ("p50", "p95", "p99"):
            assert isinstance(stats[p], float) and stats[p] >= 0, (name, p, stats)
        assert stats["p50"] <= stats["p95"] <= stats["p99"]
    assert s["bytes_written"] > 0
    assert s["wall_seconds"] > 0
    assert s["missing"] == [] and s["invalid"] == {} and s["unexpected"] == []


def test_json_error_exit_prints_a_json_error_object(cli: Cli, store_args: list[str],
                                                    store: S3Store,
                                                    store_cfg: StoreConfig) -> None:
    r = cli("run", "--run-id", "a/b", "--cohort-size", "2", "--json", *store_args)

    assert r.code == 2
    s = r.summary
    assert s["status"] == "error" and s["exit_code"] == 2
    assert "a/b" in s["message"]
    assert keys_under(store, store_cfg.prefix + "/") == []


def test_retriggered_run_with_same_cohort_passes_again(cli: Cli, store_args: list[str],
                                                       store: S3Store,
                                                       store_cfg: StoreConfig) -> None:
    argv = ("run", "--run-id", "again-1", "--cohort-size", "2", "--rows", "100", "--json",
            *store_args)
    first = cli(*argv)
    assert first.code == 0, first.stderr
    keys_before = keys_under(store, store_cfg.prefix + "/")

    second = cli(*argv)

    assert second.code == 0, second.stderr
    assert second.summary["status"] == "passed"
    assert second.summary["cohort_count"] == 2
    assert keys_under(store, store_cfg.prefix + "/") == keys_before


def test_reused_run_id_with_other_cohort_size_is_refused(cli: Cli, store_args: list[str],
                                                         store: S3Store,
                                                         store_cfg: StoreConfig) -> None:
    first = cli("run", "--run-id", "reuse-1", "--cohort-size", "2", "--rows", "100",
                *store_args)
    assert first.code == 0, first.stderr
    before = [(o.key, o.size, o.last_modified) for o in store.list(store_cfg.prefix + "/")]
    manifest_before = bytes(store.get(f"{store_cfg.prefix}/reuse-1/_run.json")[0])

    r = cli("run", "--run-id", "reuse-1", "--cohort-size", "3", "--rows", "100", "--json",
            *store_args)

    assert r.code == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("s43-ray: error:")]
    assert len(errors) == 1
    assert "reuse-1" in errors[0] and "members" in errors[0] and "2 -> 3" in errors[0]
    assert "Traceback" not in r.stderr
    assert r.summary["status"] == "error" and r.summary["exit_code"] == 2
    after = [(o.key, o.size, o.last_modified) for o in store.list(store_cfg.prefix + "/")]
    assert after == before
    assert bytes(store.get(f"{store_cfg.prefix}/reuse-1/_run.json")[0]) == manifest_before
    assert not r.named("s43_pred_persisted")


def test_reused_run_id_with_other_format_is_refused(cli: Cli, store_args: list[str],
                                                    store: S3Store,
                                                    store_cfg: StoreConfig) -> None:
    first = cli("run", "--run-id", "reuse-fmt", "--cohort-size", "2", "--rows", "100",
                "--format", "npz", *store_args)
    assert first.code == 0, first.stderr
    before = keys_under(store, store_cfg.prefix + "/")

    r = cli("run", "--run-id", "reuse-fmt", "--cohort-size", "2", "--rows", "100",
            "--format", "arrow", *store_args)

    assert r.code == 2
    assert "codec" in r.stderr and "'npz' -> 'arrow'" in r.stderr
    assert keys_under(store, store_cfg.prefix + "/") == before


def test_bytes_written_matches_the_objects_in_the_bucket(cli: Cli, store_args: list[str],
                                                         store: S3Store,
                                                         store_cfg: StoreConfig) -> None:
    r = cli("run", "--run-id", "bytes-1", "--cohort-size", "2", "--rows", "300", "--json",
            *store_args)

    assert r.code == 0, r.stderr
    sizes = [o.size for o in store.list(f"{store_cfg.prefix}/bytes-1/m")]
    assert len(sizes) == 2
    assert r.summary["bytes_written"] == sum(sizes)
    assert r.summary["bytes_read"] == sum(sizes)


def test_explicit_members_become_keys(cli: Cli, store_args: list[str], store: S3Store,
                                      store_cfg: StoreConfig) -> None:
    r = cli("run", "--run-id", "named-1", "--members", "asset-a,fold.2,Model_3", "--rows",
            "100", "--format", "npz", "--json", *store_args)

    assert r.code == 0, r.stderr
    assert r.summary["cohort_count"] == 3
    base = f"{store_cfg.prefix}/named-1/"
    assert keys_under(store, base) == [f"{base}Model_3.npz", f"{base}_gate.json",
                                       f"{base}_run.json", f"{base}asset-a.npz",
                                       f"{base}fold.2.npz"]


def test_longest_allowed_run_id_round_trips(cli: Cli, store_args: list[str], store: S3Store,
                                            store_cfg: StoreConfig) -> None:
    run_id = "r" * 200
    r = cli("run", "--run-id", run_id, "--cohort-size", "1", "--rows", "100", "--json",
            *store_args)

    assert r.code == 0, r.stderr
    assert r.summary["run_id"] == run_id
    assert f"{store_cfg.prefix}/{run_id}/m00000.arrow" in keys_under(store, store_cfg.prefix + "/")


def test_run_with_head_verification_passes(cli: Cli, store_args: list[str]) -> None:
    r = cli("run", "--run-id", "head-1", "--cohort-size", "2", "--rows", "100",
            "--verify", "head", "--json", *store_args)

    assert r.code == 0, r.stderr
    assert r.summary["status"] == "passed" and r.summary["cohort_count"] == 2


def test_retriggered_run_restores_a_deleted_member(cli: Cli, store_args: list[str],
                                                   store: S3Store,
                                                   store_cfg: StoreConfig) -> None:
    argv = ("run", "--run-id", "resume-1", "--cohort-size", "3", "--rows", "100", "--json",
            *store_args)
    assert cli(*argv).code == 0
    key = f"{store_cfg.prefix}/resume-1/m00001.arrow"
    original = bytes(store.get(key)[0])
    store.delete(key)
    assert cli("gate", "--run-id", "resume-1", *store_args).code == 1

    r = cli(*argv)

    assert r.code == 0, r.stderr
    assert bytes(store.get(key)[0]) == original  # deterministic keys and content
    gate = json.loads(bytes(store.get(f"{store_cfg.prefix}/resume-1/_gate.json")[0]))
    assert gate["status"] == "passed"


def test_failing_predictor_fails_the_gate_with_error_events(cli: Cli, store_args: list[str],
                                                            store: S3Store,
                                                            store_cfg: StoreConfig) -> None:
    # math:hypot imports fine but raises TypeError on (run_id, member, rows) in every task
    r = cli("run", "--run-id", "pred-fail", "--cohort-size", "2", "--rows", "100",
            "--predictor", "math:hypot", "--json", *store_args)

    assert r.code == 1, r.stderr
    s = r.summary
    assert s["status"] == "failed" and s["cohort_count"] == 0
    assert s["missing"] == members(2)
    assert sorted(s["persist_failed"]) == members(2)
    failed = r.named("s43_pred_persist_failed")
    assert sorted(e["member"] for e in failed) == members(2)
    assert all(e["severity"] == "error" and e["error_class"] == "predictor" for e in failed)
    (outcome,) = r.named("s43_gate_outcome")
    assert outcome["shortfall"] == 2 and outcome["status"] == "failed"
    assert outcome["severity"] == "error"
    base = f"{store_cfg.prefix}/pred-fail/"
    assert keys_under(store, base) == [f"{base}_gate.json", f"{base}_run.json"]


def test_stalled_members_are_cancelled_and_reported_exit_3(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    r = cli("run", "--run-id", "stalled", "--cohort-size", "2", "--rows", "10",
            "--predictor", "tests.predictors:hang", "--stall-timeout", "3", "--json",
            *store_args)

    assert r.code == 3, r.stderr
    s = r.summary
    assert s["status"] == "failed" and s["cohort_count"] == 0
    assert s["missing"] == members(2)
    assert s["infra_errors"] == 2
    failed = r.named("s43_pred_persist_failed")
    assert sorted(e["member"] for e in failed) == members(2)
    assert {e["error_class"] for e in failed} == {"stalled"}
    assert all(e["severity"] == "error" for e in failed)
    assert "no member finished for 3s" in failed[0]["message"]
    assert keys_under(store, run_prefix(store_cfg, "stalled")) == [
        f"{run_prefix(store_cfg, 'stalled')}_gate.json",
        f"{run_prefix(store_cfg, 'stalled')}_run.json"]


def test_unsupported_dtype_in_arrow_is_a_persist_failure_not_a_predictor_bug(
        cli: Cli, store_args: list[str]) -> None:
    r = cli("run", "--run-id", "f128", "--cohort-size", "1", "--rows", "10", "--format",
            "arrow", "--predictor", "tests.predictors:extended_precision", "--json",
            *store_args)

    assert r.code == 1
    (failed,) = r.named("s43_pred_persist_failed")
    assert failed["error_class"] == "unsafe_payload"
    assert "float128" in failed["message"] and "npz" in failed["message"]
    assert r.summary["missing"] == ["m00000"]


def test_gate_runs_as_its_own_ray_task_and_writers_are_ray_nodes(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    r = cli("run", "--run-id", "placement", "--cohort-size", "4", "--rows", "100", "--json",
            *store_args)

    assert r.code == 0, r.stderr
    s = r.summary
    assert len(s["gate_node"]) == 56 and int(s["gate_node"], 16) >= 0  # a Ray node id
    assert s["writer_nodes"] == 1  # one local node in this tier; the smoke spreads them
    node_ids = {e["node_id"] for e in r.named("s43_pred_persisted")}
    assert node_ids == {s["gate_node"]}
    gate = json.loads(bytes(store.get(f"{run_prefix(store_cfg, 'placement')}_gate.json")[0]))
    assert gate["node_id"] == s["gate_node"]
