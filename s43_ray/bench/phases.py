"""The benchmark's phases: transport (methods side by side), Ray's object store (context),
the cohort by reference versus by value, ``s43-ray run`` end to end against the cohort by value
and a bare ``ray.init`` (fresh processes, :mod:`.walls`), and the driver's peak RSS per member.
Each returns rows for ``results.json``.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any, TextIO

from ..cluster import quiet_token_auth_notice
from ..config import StoreConfig
from ..stores.s3 import S3Store
from . import e2e, report, walls
from . import methods as ops
from . import timing as timer
from .plan import DEFAULT_CODEC, MiB, Plan, size_label

# Threads deleting the benchmark's prefix at the end.
CLEANUP_THREADS = 16
# Ray's object store for the context rows: two payloads of the largest size fit.
RAY_CONTEXT_MIN_STORE_BYTES = 256 * MiB
# Below this size each writer runs every method once untimed first (connections, caches);
# above it one operation dwarfs that, and the warm-up would only add minutes to the run.
WARMUP_BELOW_BYTES = 16 * MiB


def say(err: TextIO, text: str) -> None:
    print(f"bench: {text}", file=err, flush=True)


def _row(m: ops.Method, op: str, codec: str, p: ops.Payload, c: int, timing: timer.Timing,
         nbytes: int) -> dict[str, Any]:
    lat = sorted(timing.latencies)
    n = len(lat)

    def pct(q: float) -> float:
        return float(report.percentile(lat, q))

    mean = sum(lat) / n
    per_op_cpu = timing.client_cpu_s / n if c == 1 else None
    server = timing.server_cpu_s / n if c == 1 and timing.server_cpu_s is not None else None
    return {
        "section": "transport", "method": m.name, "kind": m.kind, "op": op,
        "label": m.write_label if op == "write" else m.read_label, "codec": codec,
        "size": p.label, "size_bytes": p.nominal, "payload_bytes": nbytes, "concurrency": c,
        "n": n, "p50_s": pct(50), "p95_s": pct(95), "p99_s": pct(99), "mean_s": mean,
        "min_s": lat[0], "max_s": lat[-1],
        "mb_per_s": c * nbytes / mean / 1e6,
        "client_cpu_s_per_op": per_op_cpu,
        "server_cpu_s_per_op": server,
        "breakdown_ms": {k: v / n * 1e3 for k, v in timing.parts.items()},
        # One writer: the samples in iteration order, so methods can be paired per iteration.
        "samples_s": list(timing.latencies) if c == 1 else None,
    }


def transport_phase(plan: Plan, env: ops.Env, names: Sequence[str], err: TextIO,
                    server_pid: int | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    store = env.store
    for size in plan.sizes:
        label = size_label(size)
        payload = ops.make_payload(label, size, plan.codecs)
        skipped.extend({"what": f"{label} x {c} writers", "reason": "over the in-flight cap "
                        f"of {size_label(plan.inflight_bytes)} (size x writers)"}
                       for c in plan.concurrency if c not in plan.concurrency_for(size))
        for c in plan.concurrency_for(size):
            for codec in plan.codecs:
                chosen = [ops.method(n) for n in names
                          if (ops.method(n).per_codec or codec == DEFAULT_CODEC)
                          and (ops.method(n).concurrent or c == 1)]
                pairs = {m.name: m.build(env, payload, codec) for m in chosen}
                t0 = time.perf_counter()
                per_worker = max(1, math.ceil(plan.repeats_for(size) / c))
                for op in ("write", "read"):
                    fns = {n: (p.write if op == "write" else p.read) for n, p in pairs.items()}
                    timings, _ = timer.measure(fns, concurrency=c, per_worker=per_worker,
                                             slot=f"s{label}-c{c}", server_pid=server_pid,
                                             warmup=size < WARMUP_BELOW_BYTES, seed=size + c)
                    rows.extend(_row(m, op, codec, payload, c, timings[m.name],
                                     pairs[m.name].nbytes) for m in chosen)
                say(err, f"transport {label} {codec} x{c}: {', '.join(pairs)} "
                          f"({time.perf_counter() - t0:.1f}s)")
        delete_prefix(store, env.cfg.prefix + "/")
        for f in env.scratch.iterdir():
            f.unlink()
    return rows, skipped


def ray_context_phase(plan: Plan, env: ops.Env, err: TextIO) -> list[dict[str, Any]]:
    """Ray's object store as context: put and (same node, zero-copy) get of the arrays."""
    import ray

    started = False
    if not ray.is_initialized():
        store_bytes = max(RAY_CONTEXT_MIN_STORE_BYTES, 2 * max(plan.sizes) + 64 * MiB)
        on_main = threading.current_thread() is threading.main_thread()
        sigterm = signal.getsignal(signal.SIGTERM) if on_main else None
        with quiet_token_auth_notice():
            ray.init(address="local", num_cpus=e2e.COHORT_NUM_CPUS,
                     object_store_memory=store_bytes, include_dashboard=False,
                     logging_level=logging.WARNING, log_to_driver=False)
        if on_main and sigterm is not None:  # Ray's crash handler would abort on SIGTERM
            signal.signal(signal.SIGTERM, sigterm)
        started = True
    rows = []
    try:
        m = ops.method("ray")
        for size in plan.sizes:
            payload = ops.make_payload(size_label(size), size, [DEFAULT_CODEC])
            pair = m.build(env, payload, DEFAULT_CODEC)
            for op in ("write", "read"):
                fn = pair.write if op == "write" else pair.read
                timings, _ = timer.measure({m.name: fn}, concurrency=1,
                                         per_worker=plan.repeats_for(size),
                                         slot=f"s{payload.label}")
                rows.append(_row(m, op, DEFAULT_CODEC, payload, 1, timings[m.name],
                                 pair.nbytes))
            del pair
        say(err, f"ray object store: {len(plan.sizes)} sizes")
    finally:
        if started:
            ray.shutdown()
    return rows


def cohort_phase(plan: Plan, cfg: StoreConfig, err: TextIO) -> list[dict[str, Any]]:
    rows = ops.rows_for(plan.cohort_member_bytes)
    out = []
    for n in plan.cohort_members:
        for mode in ("reference", "value"):
            t0 = time.perf_counter()
            res = e2e.run_cohort_config(cfg, mode=mode, members=n, rows=rows,
                                        codec=DEFAULT_CODEC, run_id=f"cohort-{mode}-{n}",
                                        address=plan.ray_address)
            if not res.ok:
                raise RuntimeError(f"cohort {mode} x{n} did not complete: {res.detail}")
            out.append(asdict(res))
            say(err, f"cohort by {mode} x{n}: wall {res.wall_s:.1f}s, driver peak RSS "
                      f"{res.peak_rss_mib:.0f} MiB ({time.perf_counter() - t0:.1f}s)")
    return out


def e2e_phase(plan: Plan, err: TextIO) -> list[dict[str, Any]]:
    """``s43-ray run`` (its embedded store, a fresh local Ray), the same cohort by value, and a
    bare ``ray.init``: each a fresh process, ``plan.e2e_repeats`` times, interleaved (the order
    rotates each repeat)."""
    out = []
    for r in range(plan.e2e_repeats):
        for kind in walls.order(r):
            res = walls.measure(kind, plan.e2e_members, plan.e2e_rows, r)
            out.append(asdict(res))
            marks = ", ".join(f"{k} {v:.1f}s" for k, v in res.marks.items())
            what = "bare ray.init" if kind == "ray_init" else \
                f"{kind} x{res.members} of {res.rows} rows"
            say(err, f"e2e {what}: wall {res.wall_s:.1f}s ({marks})")
    return out


def rss_phase(plan: Plan, cfg: StoreConfig, err: TextIO) -> list[dict[str, Any]]:
    """The driver's peak RSS by reference at each of ``plan.rss_members`` members of
    ``plan.rss_rows`` rows, a fresh driver process each (as the cohort phase measures)."""
    out = []
    for n in plan.rss_members:
        t0 = time.perf_counter()
        res = e2e.run_cohort_config(cfg, mode="reference", members=n, rows=plan.rss_rows,
                                    codec=DEFAULT_CODEC, run_id=f"rss-{n}",
                                    address=plan.ray_address)
        if not res.ok:
            raise RuntimeError(f"rss x{n} did not complete: {res.detail}")
        out.append({**asdict(res), "rows": plan.rss_rows})
        say(err, f"rss by reference x{n} of {plan.rss_rows} rows: wall {res.wall_s:.1f}s, "
                  f"driver peak RSS {res.peak_rss_mib:.0f} MiB "
                  f"({time.perf_counter() - t0:.1f}s)")
    return out


def delete_prefix(store: S3Store, prefix: str) -> int:
    """Delete every key under ``prefix`` (16 at a time); how many there were."""
    keys = [o.key for o in store.list(prefix)]
    with ThreadPoolExecutor(CLEANUP_THREADS) as pool:
        list(pool.map(store.delete, keys))
    return len(keys)


# --- the run ------------------------------------------------------------------------------------
