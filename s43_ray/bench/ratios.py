"""The issue's ratios, computed from one run's rows, each with the basis it was measured on.

When a run did not measure the exact size or count a ratio is named after (a quick or tiny
run), the nearest measured one is used and the basis says so in capitals ("NOT 64MiB").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .methods import PEERS
from .plan import DEFAULT_CODEC, KiB, MiB, size_label

# The targets: (comparison, bound) per ratio, on this 2-core machine, same run.
TARGETS: dict[str, tuple[str, float]] = {
    "persist_vs_raw_put_64MiB": ("<=", 1.10),
    "load_vs_raw_get_64MiB": ("<=", 1.15),
    "persist_vs_raw_put_4KiB": ("<=", 1.20),
    "load_vs_raw_get_4KiB": ("<=", 1.20),
    "roundtrip_vs_best_peer_256MiB": (">=", 1.0),
    "driver_rss_growth_mib_8_to_128": ("<=", 64.0),
    "gate_10k_speedup_vs_serial": (">=", 3.0),
}
# Every key results.json's "ratios" holds; pass_by_value_* is context (no target).
RATIO_KEYS = ("persist_vs_raw_put_64MiB", "load_vs_raw_get_64MiB", "persist_vs_raw_put_4KiB",
              "load_vs_raw_get_4KiB", "roundtrip_vs_best_peer_256MiB",
              "driver_rss_growth_mib_8_to_128", "pass_by_value_rss_growth_mib_8_to_128",
              "gate_10k_speedup_vs_serial")


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


def compute_ratios(rows: Sequence[dict[str, Any]], cohort: Sequence[dict[str, Any]],
                   gate: Sequence[dict[str, Any]]) -> tuple[dict[str, float | None],
                                                            dict[str, str]]:
    """The issue's ratios, and for each the sizes, codec and counts it was measured with."""
    ratios: dict[str, float | None] = dict.fromkeys(RATIO_KEYS)
    basis: dict[str, str] = {}
    sizes = sorted({r["size_bytes"] for r in rows if r["method"] == "ours"})

    def at(want: int) -> tuple[int, str]:
        got = _nearest(sizes, want)
        note = "" if got == want else f" (NOT {size_label(want)}: not in this run's sizes)"
        return got, note

    for key, want, ours_op, raw_op in (
            ("persist_vs_raw_put_64MiB", 64 * MiB, "write", "write"),
            ("load_vs_raw_get_64MiB", 64 * MiB, "read", "read"),
            ("persist_vs_raw_put_4KiB", 4 * KiB, "write", "write"),
            ("load_vs_raw_get_4KiB", 4 * KiB, "read", "read")):
        if not sizes:
            break
        size, note = at(want)
        ours, raw = _find(rows, "ours", ours_op, size), _find(rows, "raw", raw_op, size)
        if ours and raw:
            ratios[key] = ours["p50_s"] / raw["p50_s"]
            basis[key] = (f"p50 {ours['p50_s'] * 1e3:.2f} ms / {raw['p50_s'] * 1e3:.2f} ms at "
                          f"{size_label(size)}{note}, {DEFAULT_CODEC}, 1 writer, n={ours['n']}"
                          f"{_paired(ours, raw)}")
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
    if gate:
        g = max(gate, key=lambda r: r["members"])
        ratios["gate_10k_speedup_vs_serial"] = g["speedup_full"]
        label = "" if g["members"] == 10_000 else " (NOT 10,000: this run's gate size)"
        basis["gate_10k_speedup_vs_serial"] = (
            f"serial HEAD+GET loop {g['serial_s']:.2f} s / gate verify=full "
            f"{g['gate_full_s']:.2f} s over {g['members']} members{label} of "
            f"~{g['member_bytes']} bytes, {g['gate_concurrency']} at a time")
    return ratios, basis


def evaluate_targets(ratios: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    out = {}
    for key, (op, bound) in TARGETS.items():
        value = ratios.get(key)
        met = None if value is None else (value <= bound if op == "<=" else value >= bound)
        out[key] = {"target": f"{op} {bound:g}", "value": value, "met": met}
    return out
