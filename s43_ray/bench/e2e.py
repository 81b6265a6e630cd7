"""End-to-end parts of the benchmark: a Ray cohort by reference versus by value, and the gate.

Cohort: each configuration (mode, member count) runs in a fresh Python process (``python -m
s43_ray.bench.e2e``, its spec on stdin), so the driver's peak RSS is that configuration's alone.
The peak is the kernel's high-water mark (``VmHWM``), reset once imports, ``ray.init`` and the
workers' warm-up are done. Not ``ru_maxrss``: after fork + exec, Linux reports the parent's RSS
at fork time there (measured: 2.9 GiB in every child of a benchmark that held 256 MiB payloads).

By reference runs the product's own :func:`s43_ray.driver.run_cohort`
(persist tasks, gate task). By value has tasks return the arrays and the driver ``ray.get`` them
and read every byte (CRC64NVME), as a gate checking what it received must.

Gate: members are written once through :func:`s43_ray.task.persist_member`, then the same keys
are checked by :func:`s43_ray.gate.run_gate` (LIST + concurrent GET + verify + decode) and by a
serial HEAD+GET loop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from ..cluster import quiet_token_auth_notice
from ..codec import Codec
from ..config import Secret, StoreConfig
from ..gate import GATE_CONCURRENCY, run_gate
from ..keys import member_names
from ..predict import DEFAULT_PREDICTOR
from ..stores.s3 import S3Store, client_for
from ..task import PredictionRef, TaskSpec, persist_member
from ..verify import Expectation, VerifyMode

# Local Ray for the cohort: the benchmark machine's cores (2 here), set explicitly.
COHORT_NUM_CPUS = 2
# By reference, the object store only ever holds references: Ray's minimum is 75 MiB.
REF_OBJECT_STORE_BYTES = 128 * 1024**2
# By value, 128 x 16 MiB must pass through the object store; 2 GiB of it, and Ray spills the
# rest to local disk (part of the honest cost of passing by value).
VALUE_OBJECT_STORE_BYTES = 2 * 1024**3
# How often the driver's RSS is sampled (a second opinion next to VmHWM).
RSS_SAMPLE_S = 0.01
# One configuration must finish within this long (Ray start included).
CHILD_TIMEOUT_S = 1800.0
# Rows per gate member: a tiny object (~1 KiB); the gate's cost is per member, not per byte.
GATE_ROWS = 16
# Threads writing the gate's members (setup, not measured against anything).
GATE_WRITE_THREADS = 16


@dataclass(frozen=True)
class CohortResult:
    mode: str  # reference | value
    members: int
    member_bytes: int  # payload bytes per member (encoded, by reference; raw arrays, by value)
    ok: bool
    wall_s: float
    peak_rss_mib: float  # the driver's peak RSS during the run (see peak_source)
    rss_before_mib: float  # after imports, ray.init and worker warm-up, before the run
    rss_growth_mib: float  # peak_rss_mib - rss_before_mib
    peak_source: str  # "VmHWM" (kernel high-water mark, reset at the start) or "sampled"
    object_store_mib: float | None  # None: a running cluster's own store
    spilled_mib: float | None
    detail: str = ""


def _store_to_json(cfg: StoreConfig) -> dict[str, Any]:
    out = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    for name in ("access_key_id", "secret_access_key"):
        out[name] = out[name].value if out[name] is not None else None
    return out


def _store_from_json(data: dict[str, Any]) -> StoreConfig:
    for name in ("access_key_id", "secret_access_key"):
        if data.get(name) is not None:
            data[name] = Secret(data[name])
    return StoreConfig(**data)


def run_cohort_config(cfg: StoreConfig, *, mode: str, members: int, rows: int, codec: Codec,
                      run_id: str, address: str | None) -> CohortResult:
    """Run one configuration in a fresh process; its spec (and any secret) goes over stdin."""
    spec = {"mode": mode, "members": members, "rows": rows, "codec": codec, "run_id": run_id,
            "address": address, "store": _store_to_json(cfg)}
    proc = subprocess.run([sys.executable, "-m", __name__], input=json.dumps(spec),
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"cohort {mode} x{members} exited {proc.returncode}: {tail[:300]}")
    return CohortResult(**json.loads(lines[-1]))


# --- the child process --------------------------------------------------------------------------

def _status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _rss_mib() -> float:
    return _status_mib("VmRSS")


def _reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


class _RssSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = _rss_mib()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(RSS_SAMPLE_S):
            self.peak = max(self.peak, _rss_mib())

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return max(self.peak, _rss_mib())


def _spilled_mib() -> float | None:
    """What Ray spilled to disk, from its own memory summary (None if it cannot be read)."""
    import ray
    from ray._private.internal_api import memory_summary

    try:
        text = str(memory_summary(address=ray.get_runtime_context().gcs_address,  # type: ignore[no-untyped-call]
                                  stats_only=True))
    except Exception as exc:  # diagnostics only: say why it is missing
        print(f"bench: spill figures unavailable: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return None
    for line in text.splitlines():
        if line.strip().startswith("Spilled"):
            return float(line.split()[1])
    return 0.0


def _by_reference(spec: dict[str, Any], cfg: StoreConfig) -> tuple[bool, int, str]:
    import io

    from ..driver import RunConfig, run_cohort
    from ..events import EventLog

    run = RunConfig(run_id=spec["run_id"], members=tuple(member_names(spec["members"])),
                    rows=spec["rows"], codec=spec["codec"])
    # keep=False, as the CLI's log: a kept record per member would be counted as the driver's
    # own memory per member (the rss phase measures exactly that).
    summary = run_cohort(run, cfg, EventLog(io.StringIO(), min_severity="error", keep=False))
    per_member = summary.bytes_written // max(1, summary.cohort_count)
    return summary.status == "passed", per_member, summary.reason


def _by_value(spec: dict[str, Any]) -> tuple[bool, int, str]:
    import ray
    from awscrt import checksums

    from ..driver import WAIT_BATCH
    from ..predict import load_predictor
    from ..task import TASK_MAX_RETRIES

    @ray.remote(max_retries=TASK_MAX_RETRIES)
    def predict_value(run_id: str, member: str, rows: int) -> Any:
        return load_predictor(DEFAULT_PREDICTOR)(run_id, member, rows)

    members = member_names(spec["members"])
    pending = [predict_value.remote(spec["run_id"], m, spec["rows"]) for m in members]
    kept: list[Any] = []  # the driver holds the cohort, as a gate combining it must
    nbytes = 0
    while pending:
        done, pending = ray.wait(pending, num_returns=min(len(pending), WAIT_BATCH),
                                 timeout=0.5)
        for obj in done:
            arrays = ray.get(obj)
            for arr in arrays.values():
                flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
                checksums.crc64nvme(flat)  # reads every byte the driver received
                nbytes += flat.nbytes
            kept.append(arrays)
    ok = len(kept) == len(members)
    return ok, nbytes // max(1, len(kept)), f"{len(kept)} of {len(members)} members received"


def _child() -> int:
    import logging

    import ray

    spec = json.loads(sys.stdin.read())
    cfg = _store_from_json(spec["store"])
    by_value = spec["mode"] == "value"
    store_bytes = VALUE_OBJECT_STORE_BYTES if by_value else REF_OBJECT_STORE_BYTES
    with quiet_token_auth_notice():
        if spec["address"]:
            ray.init(address=spec["address"], logging_level=logging.WARNING,
                     log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=COHORT_NUM_CPUS, object_store_memory=store_bytes,
                     include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False)

    @ray.remote
    def warm() -> int:
        return os.getpid()

    # Start the workers before the clock: both modes then measure the cohort, not Ray's start.
    ray.get([warm.remote() for _ in range(COHORT_NUM_CPUS)])
    before, sampler = _rss_mib(), _RssSampler()
    reset = _reset_peak()
    sampler.start()
    t0 = time.perf_counter()
    try:
        ok, member_bytes, detail = _by_value(spec) if by_value else _by_reference(spec, cfg)
    finally:
        wall = time.perf_counter() - t0
        peak = sampler.stop()
    if reset:
        peak = max(peak, _status_mib("VmHWM"))
    # On a running cluster the spill figure is the whole cluster's, not this run's: left out.
    spilled = _spilled_mib() if by_value and not spec["address"] else None
    result = CohortResult(
        mode=spec["mode"], members=spec["members"], member_bytes=member_bytes, ok=ok,
        wall_s=round(wall, 3), peak_rss_mib=round(peak, 1), rss_before_mib=round(before, 1),
        rss_growth_mib=round(peak - before, 1),
        peak_source="VmHWM" if reset else "sampled",
        object_store_mib=None if spec["address"] else store_bytes / 1024**2,
        spilled_mib=spilled, detail=detail)
    print(json.dumps(asdict(result)), flush=True)
    ray.shutdown()
    return 0


# --- the gate -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class GateResult:
    members: int
    member_bytes: int
    write_s: float  # writing the members (setup, 16 threads)
    gate_full_s: float  # run_gate, verify=full: LIST + GET + checksum + decode, 16 at a time
    gate_head_s: float  # run_gate, verify=head: LIST + HEAD + store checksum, 16 at a time
    serial_s: float  # for each key: HEAD, then GET the body, one after another
    speedup_full: float
    speedup_head: float
    gate_concurrency: int = GATE_CONCURRENCY


def run_gate_bench(cfg: StoreConfig, counts: Sequence[int], codec: Codec) -> list[GateResult]:
    """Gate versus a serial HEAD+GET loop over the same freshly written keys."""
    store = S3Store(cfg)
    client = client_for(cfg)
    results = []
    for n in counts:
        spec = TaskSpec(store=cfg, run_id=f"gate-{n}", codec=codec, rows=GATE_ROWS,
                        predictor=DEFAULT_PREDICTOR)
        members = member_names(n)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(GATE_WRITE_THREADS) as pool:
            outs = list(pool.map(persist_member, [store] * n, [spec] * n, members))
        write_s = time.perf_counter() - t0
        refs: dict[str, Expectation] = {}
        for out in outs:
            if not isinstance(out, PredictionRef):
                raise RuntimeError(f"gate setup: {out.member}: {out.error_class}: {out.message}")
            refs[out.member] = Expectation(out.checksum, out.bytes)
        keys = [o.key for o in outs if isinstance(o, PredictionRef)]
        timed: dict[str, float] = {}
        modes: tuple[VerifyMode, ...] = ("full", "head")
        for mode in modes:
            t0 = time.perf_counter()
            verdict = run_gate(store, spec.layout, members=members,
                               codec=codec, refs=refs, mode=mode)
            timed[mode] = time.perf_counter() - t0
            if not verdict.passed:
                raise RuntimeError(f"gate over {n} members failed: {verdict.reason}")
            if mode == "full":
                t0 = time.perf_counter()
                for key in keys:
                    client.head_object(Bucket=cfg.bucket, Key=key)
                    client.get_object(Bucket=cfg.bucket, Key=key)["Body"].read()
                timed["serial"] = time.perf_counter() - t0
        size = sum(r.bytes for r in refs.values()) // max(1, n)
        results.append(GateResult(
            members=n, member_bytes=size, write_s=round(write_s, 3),
            gate_full_s=round(timed["full"], 3), gate_head_s=round(timed["head"], 3),
            serial_s=round(timed["serial"], 3),
            speedup_full=round(timed["serial"] / timed["full"], 3),
            speedup_head=round(timed["serial"] / timed["head"], 3)))
    return results


def with_prefix(cfg: StoreConfig, prefix: str) -> StoreConfig:
    return replace(cfg, prefix=prefix)


if __name__ == "__main__":
    sys.exit(_child())
