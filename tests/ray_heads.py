"""A ``ray start --head --block`` of a test's own, and how to stop exactly it (imported as
``ray_heads``; pytest puts tests/ on sys.path).

The head binds 127.0.0.1 on free ports (never Ray's defaults), lives in its own short temp dir,
uses its own auth token, and carries the environment it is given (the "pods'" environment,
S3 credentials included). Teardown sends SIGTERM to the ``ray start --block`` process (which
stops its own children), then stops by PID whatever of that head is still running (its
descendants, its process group, processes carrying its marker variable), and waits until none
is left. It never runs ``ray stop``, which would stop every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from s43_ray.stores.local_s3 import free_ports

VENV_BIN = Path(sys.executable).parent  # `ray` and `s43-ray` of the environment under test
HEAD_NUM_CPUS = 2
# The head's object store only carries references; 100 MiB is above Ray's 75 MiB minimum.
HEAD_OBJECT_STORE_BYTES = 100 * 1024**2
# Ray's own default ports (GCS, client server, dashboard, dashboard agent, metrics): never
# picked, so this head cannot take them from a default `ray.init()` started meanwhile.
RAY_DEFAULT_PORTS = frozenset({6379, 10001, 8265, 52365, 8080})
# Unix socket paths (<temp>/session_<date>_<pid>/sockets/plasma_store) must stay under 108
# bytes: the head's temp dir lives directly in /tmp, not under pytest's long tmp_path.
SHORT_TMP = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
# Set in the head's environment; the processes the head starts inherit it, which is how
# teardown finds one that left the head's process tree.
MARKER_VAR = "S43_TEST_RAY_HEAD"
RAY_ENV_PREFIX = "RAY_"
STOP_TIMEOUT_S = 20.0  # for `ray start --block` to stop its children after SIGTERM
STOP_GRACE_S = 5.0  # for anything left after that, per signal
PORT_NAMES = ("gcs", "node_manager", "object_manager", "client_server", "dashboard",
              "agent_http", "agent_grpc", "runtime_env_agent", "metrics")


@dataclass
class RayHead:
    """A ``ray start --head --block`` process a test started, and how to reach it."""

    proc: subprocess.Popen[bytes]
    temp_dir: Path
    ports: dict[str, int]
    env: dict[str, str]  # the head's environment (drivers started next to it use it too)
    token: str
    log_path: Path

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.ports['gcs']}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['metrics']}/metrics"

    @property
    def marker(self) -> bytes:
        return f"{MARKER_VAR}={self.temp_dir}".encode()

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def without_ray_vars(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment minus every RAY_* variable (an in-process ``ray.init`` sets some)."""
    return {k: v for k, v in environ.items() if not k.startswith(RAY_ENV_PREFIX)}


def start_head(*, dashboard: bool, extra_env: Mapping[str, str] | None = None) -> RayHead:
    """Start a head with the current environment (minus RAY_*), the venv's bin first on PATH,
    token auth, loopback only, plus ``extra_env``. The caller waits until it is ready."""
    temp_dir = Path(tempfile.mkdtemp(prefix="s43rh-", dir=SHORT_TMP))
    picked = [p for p in free_ports(len(PORT_NAMES) + len(RAY_DEFAULT_PORTS))
              if p not in RAY_DEFAULT_PORTS]
    ports = dict(zip(PORT_NAMES, picked, strict=False))
    token = secrets.token_hex(32)
    base = without_ray_vars(os.environ)
    env = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", MARKER_VAR: str(temp_dir),
           "PATH": f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}", **(extra_env or {})}
    argv = [str(VENV_BIN / "ray"), "start", "--head", "--block",
            "--node-ip-address", "127.0.0.1", "--port", str(ports["gcs"]),
            "--node-manager-port", str(ports["node_manager"]),
            "--object-manager-port", str(ports["object_manager"]),
            "--ray-client-server-port", str(ports["client_server"]),
            "--min-worker-port", "0", "--max-worker-port", "0",  # 0: the OS picks free ones
            "--include-dashboard", "true" if dashboard else "false",
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(ports["dashboard"]),
            "--dashboard-agent-listen-port", str(ports["agent_http"]),
            "--dashboard-agent-grpc-port", str(ports["agent_grpc"]),
            "--runtime-env-agent-port", str(ports["runtime_env_agent"]),
            "--metrics-export-port", str(ports["metrics"]),
            "--num-cpus", str(HEAD_NUM_CPUS), "--object-store-memory",
            str(HEAD_OBJECT_STORE_BYTES), "--temp-dir", str(temp_dir),
            "--disable-usage-stats"]
    log_path = temp_dir / "ray-start.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, env=env, cwd=temp_dir, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return RayHead(proc, temp_dir, ports, env, token, log_path)


def wait_ready(head: RayHead, probe: Callable[[], bool], *, what: str, timeout: float,
               errors: tuple[type[BaseException], ...] = (OSError,)) -> None:
    """Poll ``probe`` until it returns True; fail the test (with the head's log) if the head
    exits or ``timeout`` passes. ``errors`` raised by the probe mean "not yet"."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if head.proc.poll() is not None:
            pytest.fail(f"ray start exited {head.proc.returncode}:\n{head.log_tail()}")
        try:
            if probe():
                return
        except errors as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    pytest.fail(f"{what} not ready after {timeout:.0f}s ({last}):\n{head.log_tail()}")


# --- stopping exactly what was started ---------------------------------------------------------

@dataclass(frozen=True)
class _Proc:
    """A process as /proc shows it; ``start`` (clock ticks after boot) tells a reused PID."""

    pid: int
    ppid: int
    pgid: int
    start: int
    zombie: bool


def _processes() -> dict[int, _Proc]:
    procs = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # fields after "(comm)": state ppid pgrp session ... starttime is the 20th
        fields = stat[stat.rindex(")") + 2:].split()
        pid = int(entry.name)
        procs[pid] = _Proc(pid, int(fields[1]), int(fields[2]), int(fields[19]),
                           fields[0] in "ZX")
    return procs


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _head_processes(head: RayHead, seeds: set[int]) -> set[_Proc]:
    """``seeds``, the processes carrying the head's marker variable, and all their descendants
    (a job entrypoint runs in a session of its own; processes that rename themselves, such as
    Ray workers, hide their environment: hence both)."""
    procs = _processes()
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    ours = {pid for pid in seeds if pid in procs}
    ours |= {pid for pid in procs if pid != os.getpid() and _has_marker(pid, head.marker)}
    stack = list(ours)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in ours:
                ours.add(child)
                stack.append(child)
    return {procs[pid] for pid in ours if not procs[pid].zombie}


def _alive(snapshot: set[_Proc]) -> set[_Proc]:
    now = _processes()
    return {p for p in snapshot
            if p.pid in now and now[p.pid].start == p.start and not now[p.pid].zombie}


def _wait_exit(snapshot: set[_Proc], timeout: float) -> set[_Proc]:
    deadline = time.monotonic() + timeout
    while (left := _alive(snapshot)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _signal(procs: set[_Proc], sig: signal.Signals) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, sig)


def stop_head(head: RayHead) -> None:
    """Stop what the test started, by PID, and wait until it is gone: SIGTERM to
    ``ray start --block`` (it stops its own children), then SIGTERM and SIGKILL to any process
    of the head still running."""
    ours: set[_Proc] = set()
    if head.proc.poll() is None:  # not reaped: its PID and process group are still its own
        group = {p.pid for p in _processes().values() if p.pgid == head.proc.pid}
        ours = _head_processes(head, {head.proc.pid, *group})
        head.proc.send_signal(signal.SIGTERM)
    try:
        head.proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        head.proc.kill()
        head.proc.wait(timeout=STOP_TIMEOUT_S)
    ours = _alive(ours)
    ours |= _head_processes(head, {p.pid for p in ours})
    left = _wait_exit(ours, STOP_GRACE_S)
    if left:
        _signal(left, signal.SIGTERM)
        left = _wait_exit(left, STOP_GRACE_S)
    if left:
        _signal(left, signal.SIGKILL)
        left = _wait_exit(left, STOP_GRACE_S)
    pids = sorted(p.pid for p in left)
    assert not left, f"processes of the test's Ray head still running: {pids}"


@contextlib.contextmanager
def running_head(head: RayHead) -> Iterator[RayHead]:
    """``head`` for the block; then stopped (:func:`stop_head`) and its temp dir removed,
    whatever happened in the block."""
    try:
        yield head
    finally:
        try:
            stop_head(head)
        finally:
            shutil.rmtree(head.temp_dir, ignore_errors=True)
