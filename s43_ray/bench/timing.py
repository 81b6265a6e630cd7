"""The benchmark's timer: methods interleaved in a fresh random order, per-op CPU accounting.

:func:`measure` runs every operation ``per_worker`` times in each of ``concurrency`` threads.
In each iteration a worker runs every method once, in a random (seeded) order, so drift on a
shared machine (other processes, the server's own compaction) falls on all methods alike and
no method always follows the same neighbour: with a fixed rotation, the op after s5cmd's
process exit was measurably slower (+0.5 ms at 4 KiB).
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# An operation on one slot (object key); it may return a breakdown of its time in seconds.
Op = Callable[[str], Mapping[str, float] | None]


def proc_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (e.g. the embedded S3 server), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Timing:
    """Latencies of one method in one interleaved measurement."""

    latencies: list[float] = field(default_factory=list)
    client_cpu_s: float = 0.0  # only counted when one operation runs at a time
    server_cpu_s: float | None = None
    parts: dict[str, float] = field(default_factory=dict)  # summed breakdown, when ops give one


def measure(ops: Mapping[str, Op], *, concurrency: int, per_worker: int, slot: str,
            server_pid: int | None = None, warmup: bool = True, seed: int = 0
            ) -> tuple[dict[str, Timing], float]:
    """Run every op ``per_worker`` times in each of ``concurrency`` threads, interleaved.

    Each worker uses its own slot (object key) ``<slot>-w<i>``; with ``warmup`` it first runs
    every op once, untimed (connections, caches). In each iteration the ops run in a fresh
    random order (seeded), so no op always follows the same neighbour. With one worker, the
    client's and the server's CPU time is attributed to each op."""
    names = list(ops)
    timings = {n: Timing() for n in names}
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(concurrency + 1)
    serial = concurrency == 1

    def worker(w: int) -> None:
        key = f"{slot}-w{w}"
        rng = random.Random(seed * 1000 + w)
        try:
            for n in names if warmup else ():
                ops[n](key)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        try:
            for _ in range(per_worker):
                for n in rng.sample(names, len(names)):
                    cpu0, srv0 = (_own_cpu_seconds(), proc_cpu_seconds(server_pid)) if serial \
                        else (0.0, None)
                    t0 = time.perf_counter()
                    parts = ops[n](key)
                    dt = time.perf_counter() - t0
                    with lock:
                        t = timings[n]
                        t.latencies.append(dt)
                        for part, sec in (parts or {}).items():
                            t.parts[part] = t.parts.get(part, 0.0) + sec
                        if serial:
                            t.client_cpu_s += _own_cpu_seconds() - cpu0
                            srv1 = proc_cpu_seconds(server_pid)
                            if srv0 is not None and srv1 is not None:
                                t.server_cpu_s = (t.server_cpu_s or 0.0) + srv1 - srv0
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True)
               for w in range(concurrency)]
    for th in threads:
        th.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return timings, wall
