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
from s43_ray.bench import walls as bench_walls
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


def test_quick_plan_runs_smaller_e2e_and_rss_cohorts_than_the_issue_counts() -> None:
    quick, full = bench_plan.build_plan(_args("--quick")), bench_plan.build_plan(_args())

    assert (full.e2e_members, full.e2e_rows, full.rss_members, full.rss_rows) == (
        2_000, 1_000, (1_000, 20_000), 10)
    assert quick.e2e_members == 200 and quick.e2e_rows == 1_000
    assert quick.e2e_repeats < full.e2e_repeats
    assert max(quick.rss_members) < 20_000 and len(quick.rss_members) == 2
    assert {"e2e", "rss"} <= set(full.phases) and {"e2e", "rss"} <= set(quick.phases)


def test_plan_takes_e2e_and_rss_counts_from_the_namespace() -> None:
    args = _args("--quick")
    args.e2e_members, args.e2e_rows, args.e2e_repeats = 4, 10, 2
    args.rss_members, args.rss_rows = "6,2,6", 5

    plan = bench_plan.build_plan(args)

    assert (plan.e2e_members, plan.e2e_rows, plan.e2e_repeats) == (4, 10, 2)
    assert (plan.rss_members, plan.rss_rows) == ((2, 6), 5)


@pytest.mark.parametrize(("name", "value"), [("e2e_members", 0), ("e2e_rows", -1),
                                             ("e2e_repeats", "3"), ("rss_rows", True),
                                             ("rss_members", "2,x")])
def test_plan_refuses_bad_e2e_and_rss_counts_naming_them(name: str, value: object) -> None:
    args = _args()
    setattr(args, name, value)

    with pytest.raises(InputError, match=name.replace("_", " ")):
        bench_plan.build_plan(args)


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


def _process(kind: str, repeat: int, wall: float, members: int = 2_000, rows: int = 1_000,
             **marks: float) -> dict[str, Any]:
    return {"kind": kind, "repeat": repeat, "members": 0 if kind == "ray_init" else members,
            "rows": 0 if kind == "ray_init" else rows, "ok": True, "wall_s": wall,
            "marks": marks, "member_bytes": 15_450, "detail": "",
            "context": {"gate_seconds": 0.5} if kind == "run" else {}}


def _e2e(members: int = 2_000) -> list[dict[str, Any]]:
    """Three interleaved repeats: runs 30/33/27 s, by value 24/20/15 s, bare ray.init 4/5/3 s
    to its return; the runs' tails (last member to verdict) 1.5, 3.3 and 2.7 s."""
    out = []
    for r, (run, value, started, inited, tail) in enumerate(
            ((30.0, 24.0, 6.0, 4.0, 1.5), (33.0, 20.0, 7.0, 5.0, 3.3),
             (27.0, 15.0, 5.0, 3.0, 2.7))):
        last = run - 4.0 - tail
        out += [_process("run", r, run, members, run_started=started, first_persisted=started + 1,
                         last_persisted=last, ledger_persisted=last + 0.1,
                         gate_outcome=last + tail - 0.1, verdict=last + tail),
                _process("value", r, value, members, ray_init=inited + 0.5,
                         first_submitted=inited + 0.6, last_received=value - 1.0),
                _process("ray_init", r, inited + 1.5, ray_init=inited)]
    return out


def _rss(lo: int = 1_000, hi: int = 20_000, rows: int = 10) -> list[dict[str, Any]]:
    """By reference: 250 MiB at ``lo`` members, 2 KiB more per member at ``hi``."""
    return [{**_cohort("reference", n, 250.0 + (n - lo) * 2 / 1024), "rows": rows,
             "member_bytes": 2_586} for n in (lo, hi)]


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

    ratios, basis = bench_ratios.compute_ratios(rows, cohort, gate, e2e=_e2e(), rss=_rss())

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


def test_persist_vs_obstore_is_ours_write_over_obstore_write_at_4KiB_paired() -> None:
    rows, cohort, gate = _synthetic()

    ratios, basis = bench_ratios.compute_ratios(rows, cohort, gate)

    assert ratios["persist_vs_obstore_put_4KiB"] == pytest.approx(1.05 / 1.3)
    text = basis["persist_vs_obstore_put_4KiB"]
    assert "at 4KiB, arrow, 1 writer, n=3" in text and "obstore: obstore write" in text
    assert f"paired per-iteration median {1.05 / 1.3:.2f}" in text


def test_e2e_ratio_is_the_runs_process_wall_over_the_by_value_process_wall() -> None:
    ratios, basis = bench_ratios.compute_ratios([], [], [], e2e=_e2e())

    assert ratios["cohort_e2e_vs_by_value_2k"] == pytest.approx(30 / 20)  # medians
    text = basis["cohort_e2e_vs_by_value_2k"]
    assert "s43-ray run --cohort-size 2000 --rows 1000 --num-cpus 2" in text
    assert "no --store" in text and "start-up included" in text
    assert "30.00 s / by value 20.00 s" in text and "2,000 members x 1,000 rows" in text
    assert "medians of 3 and 3 interleaved processes, paired per-repeat median 1.65" in text


def test_gate_tail_share_is_last_member_to_verdict_over_the_runs_wall() -> None:
    ratios, basis = bench_ratios.compute_ratios([], [], [], e2e=_e2e())

    # shares 1.5/30 = 0.05, 3.3/33 = 0.1, 2.7/27 = 0.1: the median run's is 0.1
    assert ratios["gate_tail_share_2k"] == pytest.approx(0.1)
    text = basis["gate_tail_share_2k"]
    assert "last s43_pred_persisted to s43_gate_persisted" in text
    assert "the gate task itself 0.50 s" in text and "to exit 4.00 s (not in the tail)" in text


def test_startup_is_process_start_to_run_started_over_a_bare_ray_init() -> None:
    ratios, basis = bench_ratios.compute_ratios([], [], [], e2e=_e2e())

    assert ratios["startup_vs_ray_init"] == pytest.approx(6 / 4)
    text = basis["startup_vs_ray_init"]
    assert "process start to s43_run_started 6.00 s" in text
    assert "process start to ray.init returned 4.00 s" in text
    assert "none marks the submission itself" in text


def test_driver_rss_per_member_is_the_peak_difference_per_member_in_KiB() -> None:
    ratios, basis = bench_ratios.compute_ratios([], [], [], rss=_rss())

    assert ratios["driver_rss_per_member_kib_20k"] == pytest.approx(2.0)
    text = basis["driver_rss_per_member_kib_20k"]
    assert "at 20,000 members" in text and "at 1,000)" in text and "/ 19,000 members" in text
    assert "VmHWM" in text and "NOT" not in text


def test_e2e_and_rss_ratios_are_missing_not_invented_without_their_phases() -> None:
    rows, cohort, gate = _synthetic()
    one_rss = _rss()[:1]

    ratios, basis = bench_ratios.compute_ratios(rows, cohort, gate, rss=one_rss)

    for key in ("cohort_e2e_vs_by_value_2k", "gate_tail_share_2k", "startup_vs_ray_init",
                "driver_rss_per_member_kib_20k"):
        assert ratios[key] is None and key not in basis


def test_ratios_label_substituted_sizes_honestly() -> None:
    rows, cohort, gate = _synthetic()
    small = [r for r in rows if r["size_bytes"] < 1024**2]
    cohort = [{**c, "members": {8: 2, 128: 4}[c["members"]]} for c in cohort]
    gate = [{**gate[0], "members": 50}]

    ratios, basis = bench_ratios.compute_ratios(small, cohort, gate, e2e=_e2e(200),
                                                rss=_rss(200, 2_000))

    assert all(v is not None for v in ratios.values())
    assert "NOT 64MiB" in basis["persist_vs_raw_put_64MiB"]
    assert "NOT 256MiB" in basis["roundtrip_vs_best_peer_256MiB"]
    assert "NOT 8 and 128" in basis["driver_rss_growth_mib_8_to_128"]
    assert "NOT 10,000" in basis["gate_10k_speedup_vs_serial"]
    assert "NOT 4KiB" not in basis["persist_vs_obstore_put_4KiB"]  # 4 KiB was measured
    for key in ("cohort_e2e_vs_by_value_2k", "gate_tail_share_2k", "startup_vs_ray_init"):
        assert "200 members x 1,000 rows (NOT 2,000 x 1,000: this run's e2e cohort)" \
            in basis[key], key
    assert "(NOT 1,000 and 20,000 members of 10 rows: this run's counts)" in \
        basis["driver_rss_per_member_kib_20k"]
    assert ratios["driver_rss_per_member_kib_20k"] == pytest.approx(2.0)


def test_persist_vs_obstore_says_when_4KiB_was_not_measured() -> None:
    rows, cohort, gate = _synthetic()
    big = [r for r in rows if r["size_bytes"] >= 1024**2]

    ratios, basis = bench_ratios.compute_ratios(big, cohort, gate)

    assert ratios["persist_vs_obstore_put_4KiB"] == pytest.approx(1.05 / 1.3)  # at 64 MiB
    assert "at 64MiB (NOT 4KiB: not in this run's sizes)" in basis["persist_vs_obstore_put_4KiB"]


def test_e2e_process_marks_come_from_the_runs_events() -> None:
    spawned = 1_764_614_400.0  # 2025-12-01T18:40:00Z
    events = [{"ts": "2025-12-01T18:40:06.000Z", "event": "s43_run_started"},
              *({"ts": f"2025-12-01T18:40:{s:02d}.250Z", "event": "s43_pred_persisted"}
                for s in (9, 8, 12)),
              {"ts": "2025-12-01T18:40:12.300Z", "event": "s43_ledger_persisted"},
              {"ts": "2025-12-01T18:40:13.500Z", "event": "s43_gate_outcome",
               "gate_seconds": 0.4},
              {"ts": "2025-12-01T18:40:13.520Z", "event": "s43_gate_persisted"}]

    marks, context, persisted = bench_walls.run_marks(events, spawned)

    assert persisted == 3
    assert marks == {"run_started": 6.0, "first_persisted": 8.25, "last_persisted": 12.25,
                     "ledger_persisted": 12.3, "gate_outcome": 13.5, "verdict": 13.52}
    assert context == {"gate_seconds": 0.4}


def test_e2e_processes_rotate_and_the_run_gets_the_embedded_default() -> None:
    assert [bench_walls.order(r) for r in range(3)] == [
        ("run", "value", "ray_init"), ("value", "ray_init", "run"),
        ("ray_init", "run", "value")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("S43_STORE", "s3://elsewhere/p")
        mp.setenv("S43_LOCAL_S3_DIR", "/somewhere")
        mp.setenv("RAY_ADDRESS", "10.0.0.1:6379")
        mp.setenv("PATH", "/usr/bin")
        env = bench_walls.run_env()
    assert not [k for k in env if k.startswith("S43_")] and "RAY_ADDRESS" not in env
    assert env["PATH"] == "/usr/bin"


def test_targets_are_judged_in_the_right_direction() -> None:
    targets = bench_ratios.evaluate_targets({"persist_vs_raw_put_64MiB": 1.2,
                                      "gate_10k_speedup_vs_serial": 3.5,
                                      "driver_rss_growth_mib_8_to_128": None,
                                      "cohort_e2e_vs_by_value_2k": 1.5,
                                      "gate_tail_share_2k": 0.11,
                                      "startup_vs_ray_init": 1.29,
                                      "persist_vs_obstore_put_4KiB": 1.2,
                                      "driver_rss_per_member_kib_20k": 3.9})

    assert targets["persist_vs_raw_put_64MiB"]["met"] is False
    assert targets["gate_10k_speedup_vs_serial"]["met"] is True
    assert targets["driver_rss_growth_mib_8_to_128"]["met"] is None
    assert "pass_by_value_rss_growth_mib_8_to_128" not in targets  # context, no target
    assert {k: (t["target"], t["met"]) for k, t in targets.items() if k in (
        "cohort_e2e_vs_by_value_2k", "gate_tail_share_2k", "startup_vs_ray_init",
        "persist_vs_obstore_put_4KiB", "driver_rss_per_member_kib_20k")} == {
        "cohort_e2e_vs_by_value_2k": ("<= 1.5", True), "gate_tail_share_2k": ("<= 0.1", False),
        "startup_vs_ray_init": ("<= 1.3", True), "persist_vs_obstore_put_4KiB": ("<= 1.1", False),
        "driver_rss_per_member_kib_20k": ("<= 4", True)}
    assert set(bench_ratios.TARGETS) <= set(bench_ratios.RATIO_KEYS)


def test_report_writes_markdown_and_valid_pngs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows, cohort, gate = _synthetic()
    e2e, rss = _e2e(), _rss()
    ratios, basis = bench_ratios.compute_ratios(rows, cohort, gate, e2e=e2e, rss=rss)
    results = {"machine": bench_report.machine_info(), "quick": True, "wall_s": 1.0,
               "store": {"server": "embedded SeaweedFS test"},
               "plan": {"default_codec": "arrow"}, "rows": rows, "cohort": cohort,
               "gate": gate, "e2e": e2e, "rss": rss, "ratios": ratios, "ratio_basis": basis,
               "targets": bench_ratios.evaluate_targets(ratios), "notes": bench_report.NOTES,
               "skipped": [{"what": "s5cmd", "reason": "not installed"}]}
    warnings: list[str] = []

    plots = bench_report.write_all(results, tmp_path, warn=warnings.append)

    md = (tmp_path / "results.md").read_text()
    assert "| `persist_vs_raw_put_64MiB` | 1.05 | <= 1.1 | yes |" in md
    assert "| `cohort_e2e_vs_by_value_2k` | 1.50 | <= 1.5 | yes |" in md
    assert "| `driver_rss_per_member_kib_20k` | 2.00 | <= 4 | yes |" in md
    assert "cpus_usable" not in md and "CPUs" in md and "s5cmd: not installed" in md
    assert "| s43-ray run | 0 | 2000 x 1000 | 30.00 | start-up 6.00; work 18.50; " \
           "tail 1.50; exit 4.00 |" in md
    assert "| 20000 | 10 | 2586 |" in md
    assert {p.name for p in plots} == {"latency_by_size.png", "throughput_by_size.png",
                                       "cohort.png", "e2e.png"}
    for p in plots:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 1000
    assert not warnings


def test_machine_info_names_cpu_python_and_packages() -> None:
    info = bench_report.machine_info()

    assert info["cpu_count"] and info["python"] and info["date"]
    assert info["packages"]["s43_ray"] and info["packages"]["numpy"]
