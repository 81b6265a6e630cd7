"""Fresh-process walls for the end-to-end ratios: ``s43-ray run`` as a user runs it, the same
cohort passed by value, and a bare ``ray.init``.

Each is a fresh process, timed by this (parent) process from just before it is spawned to its
exit (``wall_s``). The moments in between (``marks``: seconds since the spawn) come from the
run's own structured events (``--events info``: RFC 3339 ``ts``, millisecond resolution) or
from ``time.time()`` the child prints: one wall clock, this machine's.

- ``run``: ``s43-ray run --cohort-size N --rows R --num-cpus 2 --local-dir <fresh scratch>
  --events info --json`` with no ``--store``: the embedded default, so it starts its own
  SeaweedFS server and its own local Ray. Every ``S43_*`` variable and ``RAY_ADDRESS`` are
  removed from its environment (they would name another store or cluster). The scratch data
  folder is fresh (the default one, ``~/.cache``, may be locked by another user's run).
- ``value``: ``python -m s43_ray.bench.walls``: ``ray.init`` with the run's local-cluster
  arguments, a task per member returning its arrays (the run's predictor), ``ray.wait`` in
  batches of the fan-out's size, CRC64NVME of every byte received (the driver keeps the
  cohort, as a gate combining it must), ``ray.shutdown``. It imports only Ray, numpy, awscrt
  and the predictor: the cheapest honest by-value script.
- ``ray_init``: ``python -c``: ``import ray``, ``ray.init`` with the same arguments, the time
  printed, ``ray.shutdown``.

Marks of a run: ``run_started`` (``s43_run_started``: Ray is up, the store answers, the run and
its attempt are claimed; the driver emits it just before the fan-out submits the first task; no
event marks the first submission itself), ``first_persisted``/``last_persisted`` (the first and
last ``s43_pred_persisted``: the driver emits one as it gathers each member's reference, in
batches of up to 256 or every 0.5 s), ``ledger_persisted``, ``gate_outcome`` and ``verdict``
(``s43_gate_persisted``: the verdict kept). Of ``value``: ``ray_init``, ``first_submitted``,
``last_received``. Of ``ray_init``: ``ray_init``.

This module's top level imports nothing heavy: it is also the by-value child.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

# CPUs of every fresh local Ray here (the benchmark machine's cores), set explicitly.
E2E_NUM_CPUS = 2
# One process must finish within this long (a 2,000-member run takes under a minute here).
PROCESS_TIMEOUT_S = 1800.0
# Grace between SIGTERM (s43-ray cleans up as on Ctrl-C) and SIGKILL for a process timed out.
STOP_GRACE_S = 30.0
# Pause before each process, so that the previous one's Ray processes have gone.
SETTLE_S = 1.0
KINDS = ("run", "value", "ray_init")
# Variables that would point `s43-ray run` elsewhere than its embedded store and a local Ray.
SCRUBBED_PREFIXES = ("S43_",)
SCRUBBED_NAMES = ("RAY_ADDRESS",)

RAY_INIT_SCRIPT = """\
import json, logging, time
import ray
ray.init(address="local", num_cpus={num_cpus}, object_store_memory={store_bytes},
         include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
print(json.dumps({{"ray_init": time.time()}}), flush=True)
ray.shutdown()
"""


@dataclass(frozen=True)
class ProcessWall:
    """One fresh process, timed from its spawn to its exit."""

    kind: str  # run | value | ray_init
    repeat: int
    members: int  # 0 for ray_init
    rows: int
    ok: bool
    wall_s: float  # spawn to exit, measured by the parent
    marks: dict[str, float] = field(default_factory=dict)  # seconds since the spawn
    member_bytes: int = 0  # bytes per member: written (run) or received (value)
    detail: str = ""
    # Durations the process reported itself (run: the summary's wall_seconds, the gate task's
    # gate_seconds), context for the marks.
    context: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Exited:
    spawned: float  # time.time() just before the spawn
    exited: float  # time.time() once it was reaped
    code: int
    stdout: str
    stderr: str


def _read(fh: IO[bytes]) -> str:
    fh.seek(0)
    return fh.read().decode("utf-8", "replace")


def _spawn(argv: list[str], *, env: dict[str, str] | None = None, stdin: str | None = None,
           timeout: float = PROCESS_TIMEOUT_S) -> _Exited:
    """Run ``argv`` to its exit; its output goes to files, so that a grandchild still holding
    a pipe cannot stretch the wall, which ends when the process itself is reaped."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        spawned = time.time()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None
                                else subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        try:
            if stdin is not None:
                assert proc.stdin is not None
                proc.stdin.write(stdin.encode())
                proc.stdin.close()
            proc.wait(timeout=timeout)
        except BaseException:
            _stop(proc)
            raise
        exited = time.time()
        return _Exited(spawned, exited, proc.returncode, _read(out), _read(err))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a run then stops its server and Ray as on Ctrl-C), SIGKILL after a grace."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if not ln.startswith('{"ts"')]
    return (lines or ["no output"])[-1][:300]


def _json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue  # e.g. a worker's log line interleaved (never seen; not fatal)
            if isinstance(value, dict):
                out.append(value)
    return out


def event_epoch(record: dict[str, Any]) -> float:
    """An event's ``ts`` (RFC 3339 UTC, ``...Z``) as epoch seconds."""
    return datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00")).timestamp()


def s43_ray_command() -> list[str]:
    """The ``s43-ray`` console script next to this interpreter (as a user runs it), else the
    same entry point through the interpreter."""
    script = Path(sys.executable).parent / "s43-ray"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "from s43_ray.cli.main import entrypoint; entrypoint()"]


def run_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(SCRUBBED_PREFIXES) and k not in SCRUBBED_NAMES}


def run_marks(events: list[dict[str, Any]], spawned: float
              ) -> tuple[dict[str, float], dict[str, float], int]:
    """The run's marks (seconds since the spawn) from its events, the gate task's own
    seconds, and how many members the run said were persisted."""
    def since(record: dict[str, Any]) -> float:
        return round(event_epoch(record) - spawned, 3)

    persisted = [e for e in events if e.get("event") == "s43_pred_persisted"]
    marks: dict[str, float] = {}
    context: dict[str, float] = {}
    firsts = {"run_started": "s43_run_started", "ledger_persisted": "s43_ledger_persisted",
              "gate_outcome": "s43_gate_outcome", "verdict": "s43_gate_persisted"}
    for mark, name in firsts.items():
        rec = next((e for e in events if e.get("event") == name), None)
        if rec is not None:
            marks[mark] = since(rec)
            if "gate_seconds" in rec:
                context["gate_seconds"] = float(rec["gate_seconds"])
    if persisted:
        times = sorted(since(e) for e in persisted)
        marks["first_persisted"], marks["last_persisted"] = times[0], times[-1]
    return marks, context, len(persisted)


def measure_run(members: int, rows: int, repeat: int) -> ProcessWall:
    """``s43-ray run`` on its embedded default store and a fresh local Ray, start to exit."""
    scratch = Path(tempfile.mkdtemp(prefix="s43-bench-e2e-"))
    try:
        argv = [*s43_ray_command(), "run", "--cohort-size", str(members), "--rows", str(rows),
                "--num-cpus", str(E2E_NUM_CPUS), "--local-dir", str(scratch / "s3"),
                "--events", "info", "--json"]
        done = _spawn(argv, env=run_env())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    records = _json_lines(done.stdout)
    summary = records[-1] if records else {}
    marks, context, persisted = run_marks([e for e in _json_lines(done.stderr) if "event" in e],
                                 done.spawned)
    status = summary.get("status", "no summary")
    ok = done.code == 0 and status == "passed" and persisted == members
    if not ok:
        raise RuntimeError(f"s43-ray run x{members} exited {done.code} ({status}, {persisted} "
                           f"of {members} members persisted): {_tail(done.stderr)}")
    per_member = int(summary.get("bytes_written", 0)) // max(1, members)
    context["summary_wall_seconds"] = float(summary.get("wall_seconds", 0.0))
    return ProcessWall("run", repeat, members, rows, ok, round(done.exited - done.spawned, 3),
                       marks, per_member, str(summary.get("reason", "")), context)


def measure_value(members: int, rows: int, repeat: int) -> ProcessWall:
    """The same cohort by value in a fresh process (:func:`_value_child`), start to exit."""
    from ..cluster import LOCAL_OBJECT_STORE_BYTES
    from ..fanout import WAIT_BATCH
    from ..predict import DEFAULT_PREDICTOR
    from ..task import TASK_MAX_RETRIES

    spec = {"members": members, "rows": rows, "run_id": f"e2e-value-{repeat}",
            "predictor": DEFAULT_PREDICTOR, "wait_batch": WAIT_BATCH,
            "max_retries": TASK_MAX_RETRIES, "num_cpus": E2E_NUM_CPUS,
            "store_bytes": LOCAL_OBJECT_STORE_BYTES}
    done = _spawn([sys.executable, "-m", __name__], stdin=json.dumps(spec), env=run_env())
    lines = _json_lines(done.stdout)
    if done.code != 0 or not lines:
        raise RuntimeError(f"by value x{members} exited {done.code}: {_tail(done.stderr)}")
    res = lines[-1]
    marks = {k: round(res[k] - done.spawned, 3)
             for k in ("ray_init", "first_submitted", "last_received")}
    return ProcessWall("value", repeat, members, rows, bool(res["ok"]),
                       round(done.exited - done.spawned, 3), marks, int(res["member_bytes"]),
                       str(res["detail"]))


def measure_ray_init(repeat: int) -> ProcessWall:
    """A bare ``ray.init`` (the run's local-cluster arguments) in a fresh process."""
    from ..cluster import LOCAL_OBJECT_STORE_BYTES

    code = RAY_INIT_SCRIPT.format(num_cpus=E2E_NUM_CPUS, store_bytes=LOCAL_OBJECT_STORE_BYTES)
    done = _spawn([sys.executable, "-c", code], env=run_env())
    lines = _json_lines(done.stdout)
    if done.code != 0 or not lines:
        raise RuntimeError(f"bare ray.init exited {done.code}: {_tail(done.stderr)}")
    return ProcessWall("ray_init", repeat, 0, 0, True, round(done.exited - done.spawned, 3),
                       {"ray_init": round(lines[-1]["ray_init"] - done.spawned, 3)})


def measure(kind: str, members: int, rows: int, repeat: int) -> ProcessWall:
    time.sleep(SETTLE_S)
    if kind == "run":
        return measure_run(members, rows, repeat)
    if kind == "value":
        return measure_value(members, rows, repeat)
    return measure_ray_init(repeat)


def order(repeat: int) -> tuple[str, ...]:
    """The kinds in repeat ``repeat``'s order: rotated, so that none always runs first."""
    k = repeat % len(KINDS)
    return KINDS[k:] + KINDS[:k]


# --- the by-value child -------------------------------------------------------------------------

def _value_child() -> int:
    import logging

    import numpy as np
    import ray
    from awscrt import checksums

    from ..keys import member_names
    from ..predict import load_predictor

    spec = json.loads(sys.stdin.read())
    ray.init(address="local", num_cpus=spec["num_cpus"], object_store_memory=spec["store_bytes"],
             include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    t_init = time.time()
    name, run_id, rows = spec["predictor"], spec["run_id"], spec["rows"]

    @ray.remote(max_retries=spec["max_retries"])
    def predict_value(member: str) -> Any:
        return load_predictor(name)(run_id, member, rows)

    members = member_names(spec["members"])  # the run's names: the predictor seeds on them
    pending = [predict_value.remote(members[0])]
    t_first = time.time()
    pending += [predict_value.remote(m) for m in members[1:]]
    kept: list[Any] = []  # the driver holds the cohort, as a gate combining it must
    nbytes = 0
    while pending:
        done, pending = ray.wait(pending, num_returns=min(len(pending), spec["wait_batch"]),
                                 timeout=0.5)
        for arrays in ray.get(done) if done else []:
            for arr in arrays.values():
                flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
                checksums.crc64nvme(flat)  # reads every byte the driver received
                nbytes += flat.nbytes
            kept.append(arrays)
    t_last = time.time()
    ok = len(kept) == len(members)
    print(json.dumps({"ray_init": t_init, "first_submitted": t_first, "last_received": t_last,
                      "ok": ok, "member_bytes": nbytes // max(1, len(kept)),
                      "detail": f"{len(kept)} of {len(members)} members received"}),
          flush=True)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(_value_child())
