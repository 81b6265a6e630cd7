"""The benchmark end to end on tiny sizes, against the real SeaweedFS server and the session's
Ray cluster: structure of its results (rows, ratios, report, plots) and cleanup of its prefix.
Timings are not asserted: speed is shown by the benchmark's ratios, never by tests.

The e2e phase starts its own processes as the ratio defines them: ``s43-ray run`` on its
embedded store with a fresh local Ray (4 members here), the same by value, a bare ``ray.init``.
Its counts and the rss phase's have no flags (the bench's flags are pinned): the tiny run sets
them on the namespace, as :func:`s43_ray.bench.plan.build_plan` reads them.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import keys_under

from s43_ray.bench import main as bench_main
from s43_ray.bench import methods as bench_ops
from s43_ray.bench import ratios as bench_ratios
from s43_ray.cli.main import build_parser, main
from s43_ray.cli.store_args import open_config, store_target
from s43_ray.config import StoreConfig, env_defaults
from s43_ray.stores.s3 import S3Store

pytestmark = [pytest.mark.s3, pytest.mark.ray]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIZES = ("4KiB", "64KiB")
# The e2e and rss phases' counts for the tiny run (set on the namespace: no flags).
TINY_PLAN = {"e2e_members": 4, "e2e_rows": 10, "e2e_repeats": 1, "rss_members": "2,6"}
NEW_RATIOS = ("cohort_e2e_vs_by_value_2k", "gate_tail_share_2k", "startup_vs_ray_init",
              "persist_vs_obstore_put_4KiB", "driver_rss_per_member_kib_20k")


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["bench", *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _run_plan(argv: list[str], extra: dict[str, Any]) -> tuple[int, str, str]:
    """``s43-ray bench ARGV`` with ``extra`` set on its namespace (a named store only)."""
    env = env_defaults()
    args = build_parser(env).parse_args(["bench", *argv])
    for name, value in extra.items():
        setattr(args, name, value)
    out, err = io.StringIO(), io.StringIO()
    code = bench_main.run(args, lambda: open_config(store_target(args, env), args, env),
                          stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _store_argv(store_cfg: StoreConfig) -> list[str]:
    return ["--store", store_cfg.url, "--endpoint-url", str(store_cfg.endpoint_url),
            "--max-attempts", "2"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, ray_cluster: None, s3_server: Any,
             aws_env: dict[str, str]) -> tuple[int, str, str, Path, StoreConfig]:
    """One tiny run of every phase; the cohort's driver processes join the session's cluster."""
    import ray

    out = tmp_path_factory.mktemp("bench-out")
    store_cfg = StoreConfig(bucket=s3_server.bucket, prefix=f"t/bench-smoke-{uuid.uuid4().hex[:8]}",
                            endpoint_url=s3_server.endpoint_url, region="us-east-1",
                            max_attempts=2)
    code, stdout, stderr = _run_plan([
        *_store_argv(store_cfg), "--sizes", ",".join(SIZES), "--concurrency", "1,4",
        "--repeats", "1", "--cohort-members", "1,2", "--cohort-member-bytes", "16KiB",
        "--gate-members", "4,12", "--ray-address", ray.get_runtime_context().gcs_address,
        "--out", str(out), "--json"], TINY_PLAN)
    return code, stdout, stderr, out, store_cfg


def test_tiny_run_exits_0_and_prints_the_table_and_a_json_summary(
        tiny_run: tuple[int, str, str, Path, StoreConfig]) -> None:
    code, stdout, stderr, _, _ = tiny_run

    assert code == 0, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert set(summary["ratios"]) == set(bench_ratios.RATIO_KEYS)
    assert "# s43_ray transport benchmark" in stdout


def test_every_ratio_is_present_finite_and_labelled_with_what_was_measured(
        tiny_run: tuple[int, str, str, Path, StoreConfig]) -> None:
    results = json.loads((tiny_run[3] / "results.json").read_text())
    ratios = results["ratios"]

    assert set(ratios) == set(bench_ratios.RATIO_KEYS) == set(results["ratio_basis"])
    for key, value in ratios.items():
        assert value is not None and math.isfinite(value), key
        if "rss" not in key:  # an RSS growth may be 0 (or a few KiB below) on tiny members
            assert value > 0, key
    # the tiny sizes stand in for the issue's; the basis says so
    basis = results["ratio_basis"]
    assert "NOT 64MiB" in basis["persist_vs_raw_put_64MiB"]
    assert "NOT 10,000" in basis["gate_10k_speedup_vs_serial"]
    for key in ("cohort_e2e_vs_by_value_2k", "gate_tail_share_2k", "startup_vs_ray_init"):
        assert "4 members x 10 rows (NOT 2,000 x 1,000" in basis[key], key
    assert "NOT 1,000 and 20,000" in basis["driver_rss_per_member_kib_20k"]
    assert "at 4KiB" in basis["persist_vs_obstore_put_4KiB"]
    assert set(NEW_RATIOS) <= set(ratios) and set(NEW_RATIOS) <= set(results["targets"])
    assert set(results["targets"]) == set(bench_ratios.TARGETS)
    assert results["machine"]["cpu_count"] and results["machine"]["packages"]["s43_ray"]


def test_rows_cover_every_method_size_codec_and_writer_count(
        tiny_run: tuple[int, str, str, Path, StoreConfig]) -> None:
    results = json.loads((tiny_run[3] / "results.json").read_text())
    rows = results["rows"]
    got = {(r["method"], r["op"], r["size"], r["codec"], r["concurrency"]) for r in rows}
    missing_peers = {s["what"] for s in results["skipped"]}
    methods = [m for m in bench_ops.METHODS if m.name not in missing_peers]

    for m in methods:
        for size in SIZES:
            for op in ("write", "read"):
                assert (m.name, op, size, "arrow", 1) in got, (m.name, op, size)
                if m.per_codec:
                    assert (m.name, op, size, "npz", 1) in got
                if m.concurrent:
                    assert (m.name, op, size, "arrow", 4) in got
    for r in rows:
        assert r["n"] >= 1 and 0 < r["p50_s"] <= r["p99_s"] and r["mb_per_s"] > 0
    ours_write = next(r for r in rows if r["method"] == "ours" and r["op"] == "write")
    assert set(ours_write["breakdown_ms"]) == {"encode+checksum", "put"}
    assert {c["mode"] for c in results["cohort"]} == {"reference", "value"}
    assert all(c["ok"] for c in results["cohort"])
    assert [g["members"] for g in results["gate"]] == [4, 12]


def test_e2e_processes_and_rss_rows_are_recorded_with_their_marks(
        tiny_run: tuple[int, str, str, Path, StoreConfig]) -> None:
    results = json.loads((tiny_run[3] / "results.json").read_text())

    assert sorted(p["kind"] for p in results["e2e"]) == ["ray_init", "run", "value"]
    run = next(p for p in results["e2e"] if p["kind"] == "run")
    assert run["ok"] and run["members"] == 4 and run["rows"] == 10
    marks = run["marks"]
    assert 0 < marks["run_started"] <= marks["first_persisted"] <= marks["last_persisted"] \
        <= marks["verdict"] <= run["wall_s"]
    assert all(p["ok"] and p["wall_s"] > 0 for p in results["e2e"])
    assert [(r["mode"], r["members"], r["rows"]) for r in results["rss"]] == [
        ("reference", 2, 10), ("reference", 6, 10)]
    assert results["plan"]["e2e_members"] == 4 and results["plan"]["rss_members"] == [2, 6]


def test_report_and_plots_are_written(tiny_run: tuple[int, str, str, Path, StoreConfig]) -> None:
    out = tiny_run[3]
    md = (out / "results.md").read_text()

    for key in bench_ratios.RATIO_KEYS:
        assert f"`{key}`" in md
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in md
        return
    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} == {"latency_by_size.png", "throughput_by_size.png",
                                      "cohort.png", "e2e.png"}
    for p in pngs:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 1000


def test_benchmark_deletes_everything_it_wrote(
        tiny_run: tuple[int, str, str, Path, StoreConfig]) -> None:
    results = json.loads((tiny_run[3] / "results.json").read_text())
    store_cfg = tiny_run[4]

    assert results["cleanup"]["deleted"] > 0 and results["cleanup"]["remaining"] == 0
    assert keys_under(S3Store(store_cfg), store_cfg.prefix + "/") == []


def test_a_missing_peer_is_reported_not_silently_dropped(
        tmp_path: Path, store_cfg: StoreConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "obstore", None)  # import obstore now fails
    monkeypatch.setitem(sys.modules, "obstore.store", None)

    code, _, stderr = _run([*_store_argv(store_cfg), "--sizes", "4KiB", "--concurrency", "1",
                            "--repeats", "1", "--phases", "transport", "--out", str(tmp_path)])

    assert code == 0, stderr
    assert "WARNING: peer obstore is not measured: obstore not installed" in stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"what": "obstore", "reason": "obstore not installed: pip install "
            "'s43_ray[bench]'"} in results["skipped"]
    assert "obstore" not in {r["method"] for r in results["rows"]}
    assert results["ratios"]["roundtrip_vs_best_peer_256MiB"] is not None  # other peers
    assert results["ratios"]["persist_vs_obstore_put_4KiB"] is None  # not invented
    assert "| `persist_vs_obstore_put_4KiB` | n/a | <= 1.1 |  | not measured |" in \
        (tmp_path / "results.md").read_text()
    assert keys_under(S3Store(store_cfg), store_cfg.prefix + "/") == []
