"""The benchmark's plan: payload sizes, writer counts, cohort and gate sizes; quick or full.

``--quick`` keeps every size a ratio needs (4 KiB, 64 MiB, 256 MiB) with fewer repeats and
writers, so it finishes in a few minutes on a 2-core machine; the full plan covers more sizes,
repeats and writers. Explicit flags (``--sizes``, ``--repeats``, ...) override either.
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
# The phases of a run, in the order they run.
PHASES = ("transport", "ray", "cohort", "gate")


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
        ray_address=args.ray_address)
