"""The issue's ratios, computed from one run's rows, each with the basis it was measured on.

When a run did not measure the exact size or count a ratio is named after (a quick or tiny
run), the nearest measured one is used and the basis says so in capitals ("NOT 64MiB").
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from .methods import PEERS
from .plan import DEFAULT_CODEC, E2E_MEMBERS, E2E_ROWS, RSS_MEMBERS, RSS_ROWS, KiB, MiB, size_label

# The targets: (comparison, bound) per ratio, on this 2-core machine, same run.
TARGETS: dict[str, tuple[str, float]] = {
    "persist_vs_raw_put_64MiB": ("<=", 1.10),
    "load_vs_raw_get_64MiB": ("<=", 1.15),
    "persist_vs_raw_put_4KiB": ("<=", 1.20),
    "load_vs_raw_get_4KiB": ("<=", 1.20),
    "roundtrip_vs_best_peer_256MiB": (">=", 1.0),
    "driver_rss_growth_mib_8_to_128": ("<=", 64.0),
    "gate_10k_speedup_vs_serial": (">=", 3.0),
    "cohort_e2e_vs_by_value_2k": ("<=", 1.5),
    "gate_tail_share_2k": ("<=", 0.10),
    "startup_vs_ray_init": ("<=", 1.3),
    "persist_vs_obstore_put_4KiB": ("<=", 1.10),
    "driver_rss_per_member_kib_20k": ("<=", 4.0),
}
# Every key results.json's "ratios" holds; pass_by_value_* is context (no target).
RATIO_KEYS = ("persist_vs_raw_put_64MiB", "load_vs_raw_get_64MiB", "persist_vs_raw_put_4KiB",
              "load_vs_raw_get_4KiB", "roundtrip_vs_best_peer_256MiB",
              "driver_rss_growth_mib_8_to_128", "pass_by_value_rss_growth_mib_8_to_128",
              "gate_10k_speedup_vs_serial", "cohort_e2e_vs_by_value_2k", "gate_tail_share_2k",
              "startup_vs_ray_init", "persist_vs_obstore_put_4KiB",
              "driver_rss_per_member_kib_20k")


def _nearest(sizes: Sequence[int], want: int) -> int:
    return min(sizes, key=lambda s: (abs(math.log(s / want)), -s))


def _find(rows: Sequence[dict[str, Any]], method: str, op: str, size: int,
          codec: str = DEFAULT_CODEC, c: int = 1) -> dict[str, Any] | None:
    return next((r for r in rows if r["method"] == method and r["op"] == op
                 and r["size_bytes"] == size and r["codec"] == codec
                 and r["concurrency"] == c), None)


def _paired(ours: dict[str, Any], raw: dict[str, Any]) -> str:
    """The median of per-iteration ratios (both ran in the same iteration, moments apart):
    a second estimate that slow drift on a shared machine cannot move."""
    a, b = ours.get("samples_s"), raw.get("samples_s")
    if not a or not b or len(a) != len(b):
        return ""
    pairs = sorted(x / y for x, y in zip(a, b, strict=True))
    mid = len(pairs) // 2
    med = pairs[mid] if len(pairs) % 2 else (pairs[mid - 1] + pairs[mid]) / 2
    return f"; paired per-iteration median {med:.2f}"


def _count(n: int) -> str:
    return f"{n:,}"


def _repeats(runs: Sequence[dict[str, Any]], others: Sequence[dict[str, Any]],
             value: Callable[[dict[str, Any]], float],
             other: Callable[[dict[str, Any]], float]) -> str:
    """How many fresh processes each median is over and, with more than one, the median of
    per-repeat ratios (the two ran moments apart, in the same repeat)."""
    if len(runs) < 2:
        return "; one process each"
    by_repeat = {o["repeat"]: o for o in others}
    pairs = [value(r) / other(by_repeat[r["repeat"]]) for r in runs if r["repeat"] in by_repeat]
    paired = f", paired per-repeat median {statistics.median(pairs):.2f}" if pairs else ""
    return f"; medians of {len(runs)} and {len(others)} interleaved processes{paired}"


def _e2e_ratios(e2e: Sequence[dict[str, Any]], ratios: dict[str, float | None],
                basis: dict[str, str]) -> None:
    """cohort_e2e_vs_by_value_2k, gate_tail_share_2k and startup_vs_ray_init, from the fresh
    processes of the e2e phase (:mod:`.walls`)."""
    runs = [r for r in e2e if r["kind"] == "run" and r["ok"]]
    values = [r for r in e2e if r["kind"] == "value" and r["ok"]]
    inits = [r for r in e2e if r["kind"] == "ray_init" and r["ok"]]
    if not runs:
        return
    n, rows = runs[0]["members"], runs[0]["rows"]
    size = f"{_count(n)} members x {_count(rows)} rows"
    note = "" if (n, rows) == (E2E_MEMBERS, E2E_ROWS) else \
        f" (NOT {_count(E2E_MEMBERS)} x {_count(E2E_ROWS)}: this run's e2e cohort)"
    run_cmd = (f"`s43-ray run --cohort-size {n} --rows {rows} --num-cpus 2` (no --store: its "
               "embedded SeaweedFS and a local Ray, both started by the run)")

    def wall(r: dict[str, Any]) -> float:
        return float(r["wall_s"])

    if values:
        a, b = statistics.median(map(wall, runs)), statistics.median(map(wall, values))
        ratios["cohort_e2e_vs_by_value_2k"] = a / b
        basis["cohort_e2e_vs_by_value_2k"] = (
            f"process wall, start to exit, start-up included: {run_cmd} {a:.2f} s / by value "
            f"{b:.2f} s (ray.init, a task per member returning its arrays, ray.wait in "
            f"batches, CRC64NVME of every byte received, ray.shutdown); {size}{note}"
            f"{_repeats(runs, values, wall, wall)}")
    tails = [r for r in runs if {"last_persisted", "verdict"} <= set(r["marks"])]
    if tails:
        def share(r: dict[str, Any]) -> float:
            m = r["marks"]
            return (float(m["verdict"]) - float(m["last_persisted"])) / float(r["wall_s"])

        tails.sort(key=share)
        mid = tails[(len(tails) - 1) // 2]  # the median run (the lower one of an even count)
        m = mid["marks"]
        ratios["gate_tail_share_2k"] = share(mid)
        gate_s = mid.get("context", {}).get("gate_seconds")
        steps = [f"ledger written +{m['ledger_persisted'] - m['last_persisted']:.2f} s"
                 if "ledger_persisted" in m else "",
                 f"s43_gate_outcome +{m['gate_outcome'] - m['last_persisted']:.2f} s"
                 + (f" (the gate task itself {gate_s:.2f} s)" if gate_s is not None else "")
                 if "gate_outcome" in m else ""]
        basis["gate_tail_share_2k"] = (
            f"last s43_pred_persisted to s43_gate_persisted (event ts, ms) "
            f"{m['verdict'] - m['last_persisted']:.2f} s / the process wall of `s43-ray run` "
            f"(embedded store, local Ray, 2 CPUs) {mid['wall_s']:.2f} s, {size}{note}; "
            f"after the last member: "
            f"{', '.join(x for x in steps if x)}; after the verdict, to exit "
            f"{mid['wall_s'] - m['verdict']:.2f} s (not in the tail)"
            + (f"; the median of {len(tails)} runs' shares" if len(tails) > 1 else ""))
    starts = [r for r in runs if "run_started" in r["marks"]]
    if starts and inits:
        def started(r: dict[str, Any]) -> float:
            return float(r["marks"]["run_started"])

        def inited(r: dict[str, Any]) -> float:
            return float(r["marks"]["ray_init"])

        a = statistics.median(map(started, starts))
        b = statistics.median(map(inited, inits))
        ratios["startup_vs_ray_init"] = a / b
        basis["startup_vs_ray_init"] = (
            f"process start to s43_run_started {a:.2f} s in `s43-ray run` (it starts its "
            f"embedded store and a local Ray, 2 CPUs; the event comes once Ray is up, the store "
            f"answers and the run and attempt are claimed, the last before the fan-out submits "
            f"the first task: none marks the submission itself) / process start to ray.init "
            f"returned {b:.2f} s (a bare ray.init(num_cpus=2, object_store_memory=128 MiB) in "
            f"a fresh process); {size}{note}{_repeats(starts, inits, started, inited)}")


def compute_ratios(rows: Sequence[dict[str, Any]], cohort: Sequence[dict[str, Any]],
                   gate: Sequence[dict[str, Any]], *, e2e: Sequence[dict[str, Any]] = (),
                   rss: Sequence[dict[str, Any]] = ()) -> tuple[dict[str, float | None],
                                                                dict[str, str]]:
    """The issue's ratios, and for each the sizes, codec and counts it was measured with.
    ``e2e``: the fresh processes of :mod:`.walls`; ``rss``: cohort rows by reference at the
    rss phase's member counts."""
    ratios: dict[str, float | None] = dict.fromkeys(RATIO_KEYS)
    basis: dict[str, str] = {}
    sizes = sorted({r["size_bytes"] for r in rows if r["method"] == "ours"})

    def at(want: int) -> tuple[int, str]:
        got = _nearest(sizes, want)
        note = "" if got == want else f" (NOT {size_label(want)}: not in this run's sizes)"
        return got, note

    for key, want, op, other in (
            ("persist_vs_raw_put_64MiB", 64 * MiB, "write", "raw"),
            ("load_vs_raw_get_64MiB", 64 * MiB, "read", "raw"),
            ("persist_vs_raw_put_4KiB", 4 * KiB, "write", "raw"),
            ("load_vs_raw_get_4KiB", 4 * KiB, "read", "raw"),
            ("persist_vs_obstore_put_4KiB", 4 * KiB, "write", "obstore")):
        if not sizes:
            break
        size, note = at(want)
        ours, raw = _find(rows, "ours", op, size), _find(rows, other, op, size)
        if ours and raw:
            ratios[key] = ours["p50_s"] / raw["p50_s"]
            vs = "" if other == "raw" else \
                f" (ours persist: encode + CRC64NVME + PUT; {other}: {raw['label']})"
            basis[key] = (f"p50 {ours['p50_s'] * 1e3:.2f} ms / {raw['p50_s'] * 1e3:.2f} ms"
                          f"{vs} at {size_label(size)}{note}, {DEFAULT_CODEC}, 1 writer, "
                          f"n={ours['n']}{_paired(ours, raw)}")
    if sizes:
        size, note = at(256 * MiB)
        ours_w, ours_r = _find(rows, "ours", "write", size), _find(rows, "ours", "read", size)
        peers = {}
        for name in PEERS:
            w, r = _find(rows, name, "write", size), _find(rows, name, "read", size)
            if w and r:
                peers[name] = w["p50_s"] + r["p50_s"]
        if ours_w and ours_r and peers:
            best = min(peers, key=lambda k: peers[k])
            ours_rt = ours_w["p50_s"] + ours_r["p50_s"]
            ratios["roundtrip_vs_best_peer_256MiB"] = peers[best] / ours_rt
            basis["roundtrip_vs_best_peer_256MiB"] = (
                f"best peer {best} PUT+GET p50 {peers[best]:.3f} s / ours persist+load "
                f"{ours_rt:.3f} s at {size_label(size)}{note}, {DEFAULT_CODEC}, 1 writer; "
                f"peers measured: {', '.join(f'{k} {v:.3f} s' for k, v in peers.items())}")
    for key, mode in (("driver_rss_growth_mib_8_to_128", "reference"),
                      ("pass_by_value_rss_growth_mib_8_to_128", "value")):
        runs = sorted((r for r in cohort if r["mode"] == mode), key=lambda r: r["members"])
        if len(runs) >= 2:
            lo, hi = runs[0], runs[-1]
            ratios[key] = hi["peak_rss_mib"] - lo["peak_rss_mib"]
            label = "" if (lo["members"], hi["members"]) == (8, 128) else \
                " (NOT 8 and 128: this run's cohort sizes)"
            basis[key] = (f"driver peak RSS during the run ({hi['peak_source']}, a fresh "
                          f"driver process per configuration) "
                          f"{hi['peak_rss_mib']:.0f} MiB at {hi['members']} "
                          f"members - {lo['peak_rss_mib']:.0f} MiB at {lo['members']}{label}; "
                          f"{size_label(hi['member_bytes'])} per member"
                          f" ({hi['member_bytes']} bytes)")
    by_ref = sorted((r for r in rss if r["mode"] == "reference"), key=lambda r: r["members"])
    if len(by_ref) >= 2 and by_ref[-1]["members"] > by_ref[0]["members"]:
        lo, hi = by_ref[0], by_ref[-1]
        span = hi["members"] - lo["members"]
        ratios["driver_rss_per_member_kib_20k"] = (
            (hi["peak_rss_mib"] - lo["peak_rss_mib"]) * 1024 / span)
        rows_per = int(lo["rows"])
        label = "" if (lo["members"], hi["members"], rows_per) == (*RSS_MEMBERS, RSS_ROWS) \
            else (f" (NOT {_count(RSS_MEMBERS[0])} and {_count(RSS_MEMBERS[1])} members of "
                  f"{RSS_ROWS} rows: this run's counts)")
        basis["driver_rss_per_member_kib_20k"] = (
            f"driver peak RSS during the run ({hi['peak_source']}, a fresh driver process per "
            f"configuration, by reference) ({hi['peak_rss_mib']:.1f} MiB at "
            f"{_count(hi['members'])} members - {lo['peak_rss_mib']:.1f} MiB at "
            f"{_count(lo['members'])}) / {_count(span)} members, in KiB; {rows_per} rows "
            f"({hi['member_bytes']} bytes) per member{label}")
    if gate:
        g = max(gate, key=lambda r: r["members"])
        ratios["gate_10k_speedup_vs_serial"] = g["speedup_full"]
        label = "" if g["members"] == 10_000 else " (NOT 10,000: this run's gate size)"
        basis["gate_10k_speedup_vs_serial"] = (
            f"serial HEAD+GET loop {g['serial_s']:.2f} s / gate verify=full "
            f"{g['gate_full_s']:.2f} s over {g['members']} members{label} of "
            f"~{g['member_bytes']} bytes, {g['gate_concurrency']} at a time")
    _e2e_ratios(e2e, ratios, basis)
    return ratios, basis


def evaluate_targets(ratios: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    out = {}
    for key, (op, bound) in TARGETS.items():
        value = ratios.get(key)
        met = None if value is None else (value <= bound if op == "<=" else value >= bound)
        out[key] = {"target": f"{op} {bound:g}", "value": value, "met": met}
    return out
