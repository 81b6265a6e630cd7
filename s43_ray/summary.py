"""The run summary: the human lines, and the JSON object that is the last line of ``--json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import EXIT_GATE_FAILED, EXIT_PASSED, EXIT_UNREACHABLE
from .version import __version__

PERCENTILES = (50, 95, 99)


# Members named with why they failed, one line each, in the human summary (--json has all).
HUMAN_WHY = 10


def latency_stats(samples: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p95/p99/max in seconds and the sample count (None when there are no samples)."""
    if not samples:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    arr = np.asarray(samples, dtype=np.float64)
    out: dict[str, float | int | None] = {"n": int(arr.size)}
    for p in PERCENTILES:
        out[f"p{p}"] = round(float(np.percentile(arr, p)), 6)
    out["max"] = round(float(arr.max()), 6)
    return out


@dataclass
class Summary:
    run_id: str
    status: str  # passed | failed
    expected: int
    cohort_count: int
    missing: list[str]
    invalid: dict[str, str]
    unexpected: list[str]
    persist_failed: dict[str, str] = field(default_factory=dict)  # member -> error class: message
    reason: str = ""
    command: str = "run"
    codec: str = ""
    store: str = ""
    endpoint: str | None = None
    bytes_written: int = 0
    bytes_read: int = 0
    write_latency_s: dict[str, float | int | None] = field(default_factory=dict)
    read_latency_s: dict[str, float | int | None] = field(default_factory=dict)
    wall_seconds: float = 0.0
    writer_nodes: int = 0
    gate_node: str = ""
    gate_key: str = ""
    gate_persisted: bool = False
    infra_errors: int = 0  # members that failed for a store or cluster reason (see errors.py)
    s3_retries: int = 0
    task_retries: int = 0  # persist tasks Ray re-ran after their worker or node died
    reused: int = 0  # --resume: members whose object was already in the store and verified
    computed: int = 0  # members computed and written by this command
    attempt: int | None = None  # the run's attempt this command made (run) or verified (gate)
    basis: str = "ledger"  # what the gate verified against: ledger | no_ledger | metadata
    verdict_key: str = ""  # where this verdict is kept for good (_gates/...)
    verdict_latest: bool = False  # whether _gate.json holds this verdict (else a newer attempt's,
    # or a failing one another gate of the same attempt wrote meanwhile)
    version: str = __version__

    @property
    def passed(self) -> bool:
        """The gate passed and its verdict was kept: what exit code 0 means."""
        return self.exit_code == EXIT_PASSED

    @property
    def shortfall(self) -> int:
        return self.expected - self.cohort_count

    @property
    def exit_code(self) -> int:
        if self.status != "passed":
            return EXIT_UNREACHABLE if self.infra_errors else EXIT_GATE_FAILED
        return EXIT_PASSED if self.gate_persisted else EXIT_UNREACHABLE

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["shortfall"] = self.shortfall
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    def human(self) -> str:
        def ms(stats: dict[str, float | int | None]) -> str:
            if not stats.get("n"):
                return "n/a"
            return " ".join(f"p{p} {1000 * float(stats[f'p{p}'] or 0):.1f}ms" for p in PERCENTILES)

        verdict = "PASSED" if self.status == "passed" else "FAILED"
        lines = [
            f"run {self.run_id}: gate {verdict} {self.cohort_count}/{self.expected} members "
            f"({self.codec}, {self.store})",
            *([f"  {self.reason}"] if self.status != "passed" and self.reason else []),
            f"  bytes written {human_size(self.bytes_written)}, "
            f"read {human_size(self.bytes_read)}; "
            f"wall {self.wall_seconds:.1f}s; s3 retries {self.s3_retries}, task retries "
            f"{self.task_retries}",
            *([f"  resumed: {self.reused} members reused, {self.computed} computed"]
              if self.reused else []),
            f"  write latency {ms(self.write_latency_s)}",
            f"  read latency  {ms(self.read_latency_s)}",
        ]
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                shown = ", ".join(items[:10]) + (f" (+{len(items) - 10} more)"
                                                 if len(items) > 10 else "")
                lines.append(f"  {label} ({len(items)}): {shown}")
        for label, why in (("invalid", self.invalid), ("persist failed", self.persist_failed)):
            if why:  # one line per member, saying why
                lines.append(f"  {label} ({len(why)}):")
                names = sorted(why)
                width = max(len(m) for m in names[:HUMAN_WHY])
                lines += [f"    {m:<{width}}  {_clip(why[m])}" for m in names[:HUMAN_WHY]]
                if len(names) > HUMAN_WHY:
                    lines.append(f"    (+{len(names) - HUMAN_WHY} more: --json lists all)")
        gate_url = object_url(self.store, self.gate_key)
        if not self.gate_persisted:
            lines.append(f"  verdict NOT persisted to {gate_url}")
        elif self.verdict_key and not self.verdict_latest:
            lines.append(f"  verdict: {object_url(self.store, self.verdict_key)} (kept; "
                         f"{gate_url} holds a newer attempt's verdict, or a failing one "
                         "written meanwhile: s43-ray report tells)")
        else:
            lines.append(f"  verdict: {gate_url}")
        return "\n".join(lines)


def _clip(text: str, width: int = 110) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def object_url(store_url: str, key: str) -> str:
    """A key as a URL to paste: ``s3://bucket/prefix/run/_gate.json`` (``key`` is the full
    key in the bucket), or ``file:///dir/prefix/run/_gate.json`` for a file store."""
    if not key or not store_url:
        return key
    if store_url.startswith("s3://"):
        bucket = store_url[len("s3://"):].split("/", 1)[0]
        return f"s3://{bucket}/{key}"
    return f"{store_url.rstrip('/')}/{key}"


def human_size(n: int) -> str:
    """``12 B``, ``1.5 KiB``, ``83.4 MiB``: sizes as every summary and report prints them."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"
