"""The benchmark's pure parts: sizes, the plan, the interleaved timer, ratios, report and plots.

No S3 and no Ray here; ``tests/integration/test_bench_smoke.py`` runs the whole benchmark on tiny
sizes against the real server.
"""

from __future__ import annotations

import argparse
import io
import math
import threading
from pathlib import Path
from typing import Any

import pytest

from s43_ray.bench import plan as bench_plan
from s43_ray.bench import ratios as bench_ratios
from s43_ray.bench import report as bench_report
from s43_ray.bench import timing as bench_timing
from s43_ray.cli.main import build_parser, main
from s43_ray.config import EnvDefaults
from s43_ray.errors import InputError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _args(*argv: str) -> argparse.Namespace:
    return build_parser(EnvDefaults()).parse_args(["bench", *argv])


def test_sizes_parse_and_label_round_trip() -> None:
    for text, value in (("4KiB", 4096), ("64MiB", 64 * 1024**2), ("1GiB", 1024**3),
                        ("4096", 4096), ("3000B", 3000)):
        assert bench_plan.parse_size(text) == value
    labels = [bench_plan.size_label(bench_plan.parse_size(t)) for t in ("4KiB", "256MiB", "3000")]
    assert labels == ["4KiB", "256MiB", "3000B"]


@pytest.mark.parametrize("bad", ["", "4XB", "-1KiB", "0", "MiB"])
def test_bad_size_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(InputError, match="size"):
        bench_plan.parse_size(bad)


def test_quick_plan_is_smaller_than_full_and_keeps_ratio_sizes() -> None:
    quick, full = bench_plan.build_plan(_args("--quick")), bench_plan.build_plan(_args())

    assert set(quick.sizes) < set(full.sizes)
    assert {4 * 1024, 64 * 1024**2, 256 * 1024**2} <= set(quick.sizes)
    assert quick.repeats_for(64 * 1024**2) < full.repeats_for(64 * 1024**2)
    assert quick.cohort_members == (8, 32, 128) and quick.gate_members == (1_000, 10_000)


def test_concurrency_is_capped_by_bytes_in_flight() -> None:
    plan = bench_plan.build_plan(_args("--quick"))

    assert plan.concurrency_for(4096) == (1, 4, 16)
    assert plan.concurrency_for(1024**2) == (1, 4, 16)
    assert plan.concurrency_for(64 * 1024**2) == (1,)
    full = bench_plan.build_plan(_args())
    assert full.concurrency_for(64 * 1024**2) == (1, 4, 16)
    assert full.concurrency_for(256 * 1024**2) == (1, 4)


def test_plan_refuses_codec_list_without_the_default() -> None:
    with pytest.raises(InputError, match="default"):
        bench_plan.build_plan(_args("--codecs", "npz"))


def test_bad_input_exits_2_before_touching_any_store() -> None:
    err = io.StringIO()

    code = main(["bench", "--sizes", "4XB", "--store", "s3://no-such-bucket/p",
                 "--endpoint-url", "http://127.0.0.1:9"], stdout=io.StringIO(), stderr=err)

    assert code == 2
    assert "size '4XB' is not valid" in err.getvalue()


def test_bench_help_names_every_phase() -> None:
    help_text = " ".join(_subparser("bench").format_help().split())

    assert all(phase in help_text for phase in bench_plan.PHASES)


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser(EnvDefaults())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_measure_interleaves_methods_and_counts_every_operation() -> None:
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def op(name: str) -> bench_timing.Op:
        def run(slot: str) -> None:
            with lock:
                seen.append((name, slot))
        return run

    timings, wall = bench_timing.measure({"a": op("a"), "b": op("b")}, concurrency=3,
                                      per_worker=2, slot="s")

    assert {n: len(t.latencies) for n, t in timings.items()} == {"a": 6, "b": 6}
    assert {slot for _, slot in seen} == {"s-w0", "s-w1", "s-w2"}
    assert len(seen) == 3 * 2 + 3 * 2 * 2  # one untimed warm-up per op and worker
    assert wall >= 0


def test_measure_raises_what_an_operation_raised() -> None:
    def boom(slot: str) -> None:
        raise RuntimeError(f"broken {slot}")

    with pytest.raises(RuntimeError, match="broken s-w"):
        bench_timing.measure({"x": boom}, concurrency=2, per_worker=1, slot="s")


def _row(method: str, op: str, size: int, p50: float, codec: str = "arrow",
         c: int = 1) -> dict[str, Any]:
    return {"section": "transport", "method": method, "kind": "x", "op": op,
            "label": f"{method} {op}", "codec": codec, "size": bench_plan.size_label(size),
            "size_bytes": size, "payload_bytes": size, "concurrency": c, "n": 3, "p50_s": p50,
            "p95_s": p50 * 1.1, "p99_s": p50 * 1.2, "mean_s": p50, "min_s": p50,
            "max_s": p50 * 1.2, "mb_per_s": size / p50 / 1e6, "client_cpu_s_per_op": None,
            "server_cpu_s_per_op": None, "samples_s": [p50 * 0.9, p50, p50 * 1.3]}


def _cohort(mode: str, members: int, peak: float) -> dict[str, Any]:
    return {"mode": mode, "members": members, "member_bytes": 16 * 1024**2, "ok": True,
            "wall_s": 1.0, "peak_rss_mib": peak, "rss_before_mib": 200.0,
            "rss_growth_mib": peak - 200, "peak_source": "VmHWM",
            "object_store_mib": 128.0, "spilled_mib": None}


def _synthetic() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    rows = []
    for size in (4096, 64 * 1024**2, 256 * 1024**2):
        base = size / 200e6 + 0.002
        for method, factor in (("ours", 1.05), ("raw", 1.0), ("obstore", 1.3),
                               ("s5cmd", 1.6), ("managed", 1.4)):
            rows += [_row(method, "write", size, base * factor),
                     _row(method, "read", size, base * factor / 2)]
    cohort = [_cohort("reference", 8, 250), _cohort("reference", 128, 262),
              _cohort("value", 8, 380), _cohort("value", 128, 2300)]
    gate = [{"members": 10_000, "member_bytes": 1200, "write_s": 9.0, "gate_full_s": 4.0,
             "gate_head_s": 2.0, "serial_s": 20.0, "speedup_full": 5.0, "speedup_head": 10.0,
             "gate_concurrency": 16}]
    return rows, cohort, gate


def test_ratios_have_every_key_and_say_what_they_were_measured_on() -> None:
    rows, cohort, gate = _synthetic()

    ratios, basis = bench_ratios.compute_ratios(rows, cohort, gate)

    assert set(ratios) == set(bench_ratios.RATIO_KEYS) == set(basis)
    assert all(v is not None and math.isfinite(v) for v in ratios.values())
    assert ratios["persist_vs_raw_put_64MiB"] == pytest.approx(1.05)
    assert ratios["roundtrip_vs_best_peer_256MiB"] == pytest.approx(1.3 / 1.05)
    assert ratios["driver_rss_growth_mib_8_to_128"] == pytest.approx(12)
    assert ratios["pass_by_value_rss_growth_mib_8_to_128"] == pytest.approx(1920)
    assert ratios["gate_10k_speedup_vs_serial"] == 5.0
    assert "best peer obstore" in basis["roundtrip_vs_best_peer_256MiB"]
    assert "paired per-iteration median 1.05" in basis["persist_vs_raw_put_64MiB"]
    assert "NOT" not in " ".join(basis.values())


def test_ratios_label_substituted_sizes_honestly() -> None:
    rows, cohort, gate = _synthetic()
    small = [r for r in rows if r["size_bytes"] < 1024**2]
    cohort = [{**c, "members": {8: 2, 128: 4}[c["members"]]} for c in cohort]
    gate = [{**gate[0], "members": 50}]

    ratios, basis = bench_ratios.compute_ratios(small, cohort, gate)

    assert all(v is not None for v in ratios.values())
    assert "NOT 64MiB" in basis["persist_vs_raw_put_64MiB"]
    assert "NOT 256MiB" in basis["roundtrip_vs_best_peer_256MiB"]
    assert "NOT 8 and 128" in basis["driver_rss_growth_mib_8_to_128"]
    assert "NOT 10,000" in basis["gate_10k_speedup_vs_serial"]


def test_targets_are_judged_in_the_right_direction() -> None:
    targets = bench_ratios.evaluate_targets({"persist_vs_raw_put_64MiB": 1.2,
                                      "gate_10k_speedup_vs_serial": 3.5,
                                      "driver_rss_growth_mib_8_to_128": None})

    assert targets["persist_vs_raw_put_64MiB"]["met"] is False
    assert targets["gate_10k_speedup_vs_serial"]["met"] is True
    assert targets["driver_rss_growth_mib_8_to_128"]["met"] is None
    assert "pass_by_value_rss_growth_mib_8_to_128" not in targets  # context, no target


def test_report_writes_markdown_and_valid_pngs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows, cohort, gate = _synthetic()
    ratios, basis = bench_ratios.compute_ratios(rows, cohort, gate)
    results = {"machine": bench_report.machine_info(), "quick": True, "wall_s": 1.0,
               "store": {"server": "embedded SeaweedFS test"},
               "plan": {"default_codec": "arrow"}, "rows": rows, "cohort": cohort,
               "gate": gate, "ratios": ratios, "ratio_basis": basis,
               "targets": bench_ratios.evaluate_targets(ratios), "notes": bench_report.NOTES,
               "skipped": [{"what": "s5cmd", "reason": "not installed"}]}
    warnings: list[str] = []

    plots = bench_report.write_all(results, tmp_path, warn=warnings.append)

    md = (tmp_path / "results.md").read_text()
    assert "| `persist_vs_raw_put_64MiB` | 1.05 | <= 1.1 | yes |" in md
    assert "cpus_usable" not in md and "CPUs" in md and "s5cmd: not installed" in md
    assert {p.name for p in plots} == {"latency_by_size.png", "throughput_by_size.png",
                                       "cohort.png"}
    for p in plots:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 1000
    assert not warnings


def test_machine_info_names_cpu_python_and_packages() -> None:
    info = bench_report.machine_info()

    assert info["cpu_count"] and info["python"] and info["date"]
    assert info["packages"]["s43_ray"] and info["packages"]["numpy"]
