"""The end-to-end parts of the benchmark's outputs (:mod:`.report` calls them): the fresh
processes of the e2e phase cut at their marks, the rss phase's rows, and their plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

E2E_PNG = "e2e.png"
# The stretches of each fresh process in the e2e plot and table: (role, what it holds, from
# mark, to mark); "start" is the spawn, "exit" the process reaped. Roles share a colour.
E2E_SEGMENTS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "run": (("start-up", "Python, embedded S3 and Ray started, run claimed", "start",
             "run_started"),
            ("work", "fan-out: submitted to the last member persisted", "run_started",
             "last_persisted"),
            ("tail", "ledger, early checks' wait, gate task, ray.shutdown, verdict kept",
             "last_persisted", "verdict"),
            ("exit", "newer-attempt check, embedded server stopped, summary, interpreter exit",
             "verdict", "exit")),
    "value": (("start-up", "Python, ray.init", "start", "ray_init"),
              ("work", "tasks, ray.wait, CRC of every byte", "ray_init", "last_received"),
              ("exit", "ray.shutdown, interpreter exit", "last_received", "exit")),
    "ray_init": (("start-up", "Python, ray.init", "start", "ray_init"),
                 ("exit", "ray.shutdown, interpreter exit", "ray_init", "exit")),
}
E2E_ROLE_COLOURS = {"start-up": "tab:gray", "work": "tab:blue", "tail": "tab:orange",
                    "exit": "tab:green"}
E2E_TITLES = {"run": "s43-ray run", "value": "by value", "ray_init": "bare ray.init"}


def e2e_stretches(row: dict[str, Any]) -> list[tuple[str, float]]:
    """A fresh process's wall cut at its marks: (role, seconds) per stretch (those whose marks
    it has), in order."""
    at = {**row["marks"], "start": 0.0, "exit": row["wall_s"]}
    return [(role, max(0.0, at[b] - at[a])) for role, _, a, b in E2E_SEGMENTS[row["kind"]]
            if a in at and b in at]


def e2e_lines(e2e: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["", "## End to end: `s43-ray run` versus by value and a bare ray.init "
                 "(fresh processes)", "",
             "| process | repeat | members x rows | wall s | stretches s |",
             "|---|---:|---|---:|---|"]
    legend = ["", "Stretches, spawn to exit:", ""] + [
        f"- {E2E_TITLES[kind]}: " + "; ".join(f"{role} ({what})" for role, what, _, _ in segs)
        for kind, segs in E2E_SEGMENTS.items()]
    for r in e2e:
        size = f"{r['members']} x {r['rows']}" if r["members"] else ""
        parts = "; ".join(f"{role} {sec:.2f}" for role, sec in e2e_stretches(r))
        lines.append(f"| {E2E_TITLES[r['kind']]} | {r['repeat']} | {size} | {r['wall_s']:.2f} | "
                     f"{parts} |")
    return lines + legend


def rss_lines(rss: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["", "## Driver peak RSS per member, by reference", "",
             "| members | rows/member | bytes/member | wall s | driver peak RSS MiB | "
             "RSS growth during run MiB |", "|---:|---:|---:|---:|---:|---:|"]
    for c in rss:
        lines.append(f"| {c['members']} | {c.get('rows', '')} | {c['member_bytes']} | "
                     f"{c['wall_s']:.1f} | {c['peak_rss_mib']:.1f} | "
                     f"{c['rss_growth_mib']:.1f} |")
    return lines


def plot(plt: Any, e2e: Sequence[dict[str, Any]], rss: Sequence[dict[str, Any]],
              path: Path) -> None:
    """Left: each kind's median-wall process, its wall cut into stretches; right: the driver's
    peak RSS by reference against members (the rss phase)."""
    panels = (1 if e2e else 0) + (1 if rss else 0)
    fig, axes = plt.subplots(1, panels, figsize=(7.5 * panels, 4.5), squeeze=False)
    col = 0
    if e2e:
        ax = axes[0][col]
        col += 1
        kinds = [k for k in E2E_SEGMENTS if any(r["kind"] == k for r in e2e)]
        medians = {}
        for kind in kinds:
            runs = sorted((r for r in e2e if r["kind"] == kind), key=lambda r: r["wall_s"])
            medians[kind] = runs[(len(runs) - 1) // 2]
        longest = max(r["wall_s"] for r in medians.values())
        for y, kind in enumerate(kinds):
            row, left = medians[kind], 0.0
            for role, sec in e2e_stretches(row):
                ax.barh(y, sec, left=left, color=E2E_ROLE_COLOURS[role], edgecolor="white",
                        label=role if role not in ax.get_legend_handles_labels()[1] else None)
                if sec > 0.08 * longest:
                    ax.text(left + sec / 2, y, f"{sec:.1f}", ha="center", va="center",
                            fontsize=8, color="white")
                left += sec
            ax.text(left, y, f" {row['wall_s']:.1f} s", va="center", fontsize=8)
        ax.legend(fontsize=8, loc="lower right")
        ax.set_yticks(range(len(kinds)), [E2E_TITLES[k] for k in kinds])
        ax.invert_yaxis()
        size = next((f"{r['members']} members x {r['rows']} rows" for r in e2e
                     if r["members"]), "")
        ax.set_title(f"fresh process, spawn to exit ({size}; median wall)")
        ax.set_xlabel("seconds")
        ax.grid(True, axis="x", alpha=0.3)
    if rss:
        ax = axes[0][col]
        pts = sorted((r["members"], r["peak_rss_mib"]) for r in rss)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label="by reference")
        if len(pts) >= 2 and pts[-1][0] > pts[0][0]:
            kib = (pts[-1][1] - pts[0][1]) * 1024 / (pts[-1][0] - pts[0][0])
            ax.set_title(f"driver peak RSS: {kib:.2f} KiB per member")
        ax.set_xscale("log")
        ax.set_xticks([p[0] for p in pts], [str(p[0]) for p in pts])
        ax.minorticks_off()
        ax.set_xlabel(f"members of {rss[0].get('rows', '?')} rows")
        ax.set_ylabel("MiB")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
