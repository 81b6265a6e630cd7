"""The benchmark's plan: payload sizes, writer counts, cohort and gate sizes; quick or full.

``--quick`` keeps every size a ratio needs (4 KiB, 64 MiB, 256 MiB) with fewer repeats and
writers, so it finishes in a few minutes on a 2-core machine; the full plan covers more sizes,
repeats and writers. Explicit flags (``--sizes``, ``--repeats``, ...) override either.

The end-to-end counts (``e2e_*``: ``s43-ray run`` against the cohort by value and a bare
``ray.init``; ``rss_*``: the driver's RSS per member) have no flags of their own yet (the bench's
flags are a pinned contract, ``tests/test_contracts.py``): :func:`build_plan` takes them from
the namespace when it has them (``args.e2e_members = 200``, ``args.rss_members = "200,2000"``),
else from the quick or full plan; ``--phases`` leaves either phase out.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..codec import CODECS, Codec
from ..driver import RunConfig
from ..errors import InputError

KiB, MiB, GiB = 1024, 1024**2, 1024**3
# The codec runs use unless told otherwise (the driver's default).
DEFAULT_CODEC: Codec = RunConfig.codec  # the one the pipeline uses
FULL_SIZES = (4 * KiB, 64 * KiB, 1 * MiB, 16 * MiB, 64 * MiB, 256 * MiB)
QUICK_SIZES = (4 * KiB, 1 * MiB, 64 * MiB, 256 * MiB)
CONCURRENCY = (1, 4, 16)
# Bytes in flight at once (size x writers): caps memory (each writer encodes its own copy)
# and the time 16 x 256 MiB would take on a 2-core machine. Skipped pairs are listed.
FULL_INFLIGHT_BYTES = 1 * GiB
QUICK_INFLIGHT_BYTES = 64 * MiB
COHORT_MEMBERS = (8, 32, 128)
COHORT_MEMBER_BYTES = 16 * MiB
GATE_MEMBERS = (1_000, 10_000)
# End to end (the counts): `s43-ray run` over 2,000 members of 1,000 rows against the
# same cohort by value and a bare ray.init, each a fresh process; quick: 200 members, one run.
E2E_MEMBERS, QUICK_E2E_MEMBERS = 2_000, 200
E2E_ROWS = 1_000
E2E_REPEATS, QUICK_E2E_REPEATS = 3, 1  # interleaved runs of each process (the median is used)
# The driver's peak RSS per member: by reference at these counts of RSS_ROWS-row members
# (a fresh driver process each); quick: smaller counts (the basis says so).
RSS_MEMBERS, QUICK_RSS_MEMBERS = (1_000, 20_000), (200, 2_000)
RSS_ROWS = 10
# The phases of a run, in the order they run.
PHASES = ("transport", "ray", "cohort", "gate", "e2e", "rss")


def parse_size(text: str) -> int:
    """``4KiB`` / ``64MiB`` / ``1GiB`` / ``4096`` -> bytes."""
    units = {"GIB": GiB, "MIB": MiB, "KIB": KiB, "B": 1, "": 1}
    t = text.strip()
    num = t.rstrip("KkMmGgIiBb")
    unit = t[len(num):].upper()
    try:
        value = int(num) * units[unit]
    except (ValueError, KeyError):
        raise InputError(f"size {text!r} is not valid; expected e.g. 4KiB, 64MiB, 4096") from None
    if value < 1:
        raise InputError(f"size {text!r} is not valid; expected at least 1 byte")
    return value


def size_label(n: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n}B"


def _int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{what} {text!r} is not valid; expected integers a,b,c") from None
    if not values or min(values) < 1:
        raise InputError(f"{what} {text!r} is not valid; expected positive integers")
    return values


@dataclass(frozen=True)
class Plan:
    """What one benchmark run measures."""

    quick: bool
    sizes: tuple[int, ...]
    codecs: tuple[Codec, ...]
    concurrency: tuple[int, ...]
    repeats: int | None  # None: by size (more for small payloads)
    inflight_bytes: int
    cohort_members: tuple[int, ...]
    cohort_member_bytes: int
    gate_members: tuple[int, ...]
    ray_address: str | None  # None: a fresh local Ray per cohort configuration
    phases: tuple[str, ...] = PHASES  # a subset leaves the other phases' ratios unmeasured
    # e2e: always a fresh local Ray and the run's own embedded store (what the ratio compares)
    e2e_members: int = E2E_MEMBERS
    e2e_rows: int = E2E_ROWS
    e2e_repeats: int = E2E_REPEATS
    rss_members: tuple[int, ...] = RSS_MEMBERS  # the smallest and largest count are compared
    rss_rows: int = RSS_ROWS

    def repeats_for(self, size: int) -> int:
        if self.repeats is not None:
            return self.repeats
        steps = ((64 * KiB, 20, 60), (1 * MiB, 10, 30), (16 * MiB, 6, 15), (64 * MiB, 9, 15))
        for limit, quick, full in steps:
            if size <= limit:
                return quick if self.quick else full
        return 5  # a 256 MiB PUT is server-bound and noisy here: fewer than 5 decides nothing

    def concurrency_for(self, size: int) -> tuple[int, ...]:
        return tuple(c for c in self.concurrency if c == 1 or c * size <= self.inflight_bytes)


def _positive(args: argparse.Namespace, name: str, default: int) -> int:
    """``args.<name>`` when the namespace has it (no flag sets it yet), else ``default``."""
    value = getattr(args, name, None)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name.replace('_', ' ')} {value!r} is not valid; expected a positive "
                         "integer")
    return value


def build_plan(args: argparse.Namespace) -> Plan:
    quick = bool(args.quick)
    sizes = tuple(sorted({parse_size(s) for s in args.sizes.split(",")})) if args.sizes \
        else (QUICK_SIZES if quick else FULL_SIZES)
    codec_list = tuple(c.strip() for c in args.codecs.split(",")) if args.codecs else CODECS
    bad = [c for c in codec_list if c not in CODECS]
    if bad:
        raise InputError(f"codecs {bad} are not known; expected some of {list(CODECS)}")
    if DEFAULT_CODEC not in codec_list:
        raise InputError(f"codecs {list(codec_list)} leave out the default {DEFAULT_CODEC}; "
                         "the ratios are measured with it")
    phases = tuple(p.strip() for p in args.phases.split(",")) if args.phases else PHASES
    if not phases or any(p not in PHASES for p in phases):
        raise InputError(f"phases {args.phases!r} are not valid; expected some of {list(PHASES)}")
    rss_text = getattr(args, "rss_members", None)  # "N,N", as --cohort-members takes them
    return Plan(
        phases=phases, quick=quick, sizes=sizes, codecs=codec_list,  # type: ignore[arg-type]
        concurrency=_int_list(args.concurrency, "concurrency") if args.concurrency
        else CONCURRENCY,
        repeats=args.repeats,
        inflight_bytes=QUICK_INFLIGHT_BYTES if quick else FULL_INFLIGHT_BYTES,
        cohort_members=_int_list(args.cohort_members, "cohort members") if args.cohort_members
        else COHORT_MEMBERS,
        cohort_member_bytes=parse_size(args.cohort_member_bytes) if args.cohort_member_bytes
        else COHORT_MEMBER_BYTES,
        gate_members=_int_list(args.gate_members, "gate members") if args.gate_members
        else GATE_MEMBERS,
        ray_address=args.ray_address,
        e2e_members=_positive(args, "e2e_members", QUICK_E2E_MEMBERS if quick else E2E_MEMBERS),
        e2e_rows=_positive(args, "e2e_rows", E2E_ROWS),
        e2e_repeats=_positive(args, "e2e_repeats", QUICK_E2E_REPEATS if quick else E2E_REPEATS),
        rss_members=tuple(sorted(set(_int_list(rss_text, "rss members")))) if rss_text
        else (QUICK_RSS_MEMBERS if quick else RSS_MEMBERS),
        rss_rows=_positive(args, "rss_rows", RSS_ROWS))
