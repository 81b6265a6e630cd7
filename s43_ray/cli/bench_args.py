"""``s43-ray bench``'s flags. They live here, not in :mod:`s43_ray.bench`, so that building the
parser for every other command never imports the benchmark (it is loaded only when it runs)."""

from __future__ import annotations

from typing import Any

from .store_args import store_flags


def add_bench_parser(sub: Any) -> None:
    bench = sub.add_parser("bench", help="benchmark S3 write/read latency against the "
                                         "alternatives (same as benchmarks/bench_transport.py)")
    bench.add_argument("--out", default="bench-results", metavar="DIR",
                       help="where results.json, results.md and the plots go "
                            "(default ./bench-results)")
    bench.add_argument("--quick", action="store_true",
                       help="fewer sizes and repeats: a few minutes on 2 cores")
    g = bench.add_argument_group("what to measure (defaults: the quick or full plan)")
    g.add_argument("--sizes", metavar="S,S", help="payload sizes, e.g. 4KiB,64MiB,256MiB")
    g.add_argument("--codecs", metavar="C,C", help="codecs (default npz,arrow)")
    g.add_argument("--concurrency", metavar="N,N", help="concurrent writers (default 1,4,16)")
    g.add_argument("--repeats", type=int, metavar="N",
                   help="timed operations per writer and method (default: by size)")
    g.add_argument("--cohort-members", metavar="N,N", help="cohort sizes (default 8,32,128)")
    g.add_argument("--cohort-member-bytes", metavar="SIZE", help="bytes per member (16MiB)")
    g.add_argument("--gate-members", metavar="N,N", help="gate cohort sizes (1000,10000)")
    g.add_argument("--phases", metavar="P,P",
                   help="run only these phases of transport,ray,cohort,gate,e2e,rss (default "
                        "all; e2e: `s43-ray run` against the cohort by value and a bare "
                        "ray.init, fresh processes; rss: the driver's RSS per member); the "
                        "ratios of the others are then missing")
    g.add_argument("--ray-address", metavar="ADDR",
                   help="run the cohort and rss parts on this running Ray cluster "
                        "(default: a fresh local one per configuration, 2 CPUs; e2e always "
                        "starts its own)")
    store_flags(bench)
