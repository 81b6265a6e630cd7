"""``ray job submit`` of ``s43-ray run`` to a Ray head started with ``ray start --head``.

The production path (README, "Running on a real cluster"), on one machine: the job's entrypoint
runs on the head with the head's environment, connects to the running cluster through the
``RAY_ADDRESS`` Ray sets for job entrypoints, and the tasks find the S3 credentials in the
environment the head was started with, never in ``runtime_env``. The submitting client has no
credentials at all.

The commands, as the test runs them (every port a free one picked at test time)::

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<64 hex> \\
    AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... PATH=<venv>/bin:$PATH \\
    ray start --head --block --node-ip-address 127.0.0.1 --port GCS \\
        --node-manager-port P --object-manager-port P --ray-client-server-port P \\
        --min-worker-port 0 --max-worker-port 0 --include-dashboard true \\
        --dashboard-host 127.0.0.1 --dashboard-port DASH --dashboard-agent-listen-port P \\
        --dashboard-agent-grpc-port P --runtime-env-agent-port P --metrics-export-port P \\
        --num-cpus 2 --object-store-memory 104857600 --temp-dir /tmp/s43rh-XXXX \\
        --disable-usage-stats
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<64 hex> \\
    ray job submit --address http://127.0.0.1:DASH --submission-id ID --working-dir <repo> \\
        --runtime-env-json '{"excludes": [".git", ".venv"]}' -- \\
        s43-ray run --run-id RUN --store s3://s43-test/PREFIX --endpoint-url URL \\
        --cohort-size 4 --rows 1000 --max-attempts 2 --json
    ray job status ID --address http://127.0.0.1:DASH
    ray job logs ID --address http://127.0.0.1:DASH

Teardown sends SIGTERM to the ``ray start --block`` process it started (which stops its own
children), then stops by PID whatever of that head is still running (its descendants, its
process group, processes carrying its marker variable), and waits until none is left, even
when the test failed. It never runs ``ray stop``, which would stop every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import keys_under

from s43_ray.config import StoreConfig
from s43_ray.local_s3 import free_ports
from s43_ray.store import S3Store

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # `ray` and `s43-ray` of the environment under test
HEAD_NUM_CPUS = 2
# The head's object store only carries references; 100 MiB is above Ray's 75 MiB minimum.
HEAD_OBJECT_STORE_BYTES = 100 * 1024**2
# Ray's own default ports (GCS, client server, dashboard, dashboard agent): never picked, so
# this head cannot take them from a default `ray.init()` started on the machine meanwhile.
RAY_DEFAULT_PORTS = frozenset({6379, 10001, 8265, 52365})
# Unix socket paths (<temp>/session_<date>_<pid>/sockets/plasma_store) must stay under 108
# bytes: the head's temp dir lives directly in /tmp, not under pytest's long tmp_path.
SHORT_TMP = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
# Set in the head's environment; the processes the head starts inherit it, which is how
# teardown finds one that left the head's process tree.
MARKER_VAR = "S43_TEST_RAY_HEAD"
# A cold head answers on its dashboard in ~10 s on a 2-core machine; the job takes ~15 s.
DASHBOARD_TIMEOUT_S = 90.0
JOB_TIMEOUT_S = 150.0
CLI_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0  # for `ray start --block` to stop its children after SIGTERM
STOP_GRACE_S = 5.0  # for anything left after that, per signal
# Not uploaded with the working dir: the venv and git history are large and not needed (Ray
# also skips what .gitignore lists).
UPLOAD_EXCLUDES = [".git", ".venv"]
# Variables that would point the head or the client at another cluster or another token.
RAY_ENV_PREFIX = "RAY_"
# The fake test credentials (aws_env): in the head's environment only.
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# Kept out of the client's environment: it submits the job and needs no credentials.
CLIENT_DROPPED_VARS = (*CREDENTIAL_VARS, "AWS_SESSION_TOKEN", "AWS_PROFILE")


@dataclass
class RayHead:
    """A ``ray start --head --block`` process this test started, and how to reach it."""

    proc: subprocess.Popen[bytes]
    temp_dir: Path
    dashboard_url: str
    client_env: dict[str, str]  # for `ray job ...`: the token, no AWS credentials
    token: str
    log_path: Path

    @property
    def marker(self) -> bytes:
        return f"{MARKER_VAR}={self.temp_dir}".encode()

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _without_ray_vars(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment minus every RAY_* variable (an in-process ``ray.init`` sets some)."""
    return {k: v for k, v in environ.items() if not k.startswith(RAY_ENV_PREFIX)}


def _pick_ports(count: int) -> list[int]:
    ports = [p for p in free_ports(count + len(RAY_DEFAULT_PORTS)) if p not in RAY_DEFAULT_PORTS]
    return ports[:count]


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


def _stop_head(head: RayHead) -> None:
    """Stop what this test started, by PID, and wait until it is gone: SIGTERM to
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


def _http_get(head: RayHead, path: str) -> Any:
    request = urllib.request.Request(f"{head.dashboard_url}{path}",
                                     headers={"Authorization": f"Bearer {head.token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _wait_for_jobs_api(head: RayHead) -> None:
    """Poll until the dashboard answers and its job module accepts requests."""
    deadline = time.monotonic() + DASHBOARD_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if head.proc.poll() is not None:
            pytest.fail(f"ray start exited {head.proc.returncode}:\n{head.log_tail()}")
        try:
            _http_get(head, "/api/version")
            _http_get(head, "/api/jobs/")
            return
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # refused, 5xx while the dashboard's modules load, a cut connection or body
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    pytest.fail(f"Ray dashboard at {head.dashboard_url} not ready after "
                f"{DASHBOARD_TIMEOUT_S:.0f}s ({last}):\n{head.log_tail()}")


@pytest.fixture
def ray_head(aws_env: dict[str, str]) -> Iterator[RayHead]:
    """A Ray head of this test's own: loopback, free ports, own temp dir, own auth token."""
    temp_dir = Path(tempfile.mkdtemp(prefix="s43rh-", dir=SHORT_TMP))
    (gcs, node_manager, object_manager, client_server, dashboard, agent_http, agent_grpc,
     runtime_env_agent, metrics) = _pick_ports(9)
    token = secrets.token_hex(32)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    base = _without_ray_vars(os.environ)
    # The head's environment is the pods' environment: it carries the S3 credentials
    # (aws_env put them in os.environ), and the venv's bin first so `s43-ray` is on PATH.
    head_env = {**base, **auth, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                MARKER_VAR: str(temp_dir),
                "PATH": f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}"}
    for var in CREDENTIAL_VARS:
        assert head_env.get(var) == aws_env[var]
    client_env = {k: v for k, v in base.items() if k not in CLIENT_DROPPED_VARS} | auth
    argv = [str(VENV_BIN / "ray"), "start", "--head", "--block",
            "--node-ip-address", "127.0.0.1", "--port", str(gcs),
            "--node-manager-port", str(node_manager),
            "--object-manager-port", str(object_manager),
            "--ray-client-server-port", str(client_server),
            "--min-worker-port", "0", "--max-worker-port", "0",  # 0: the OS picks free ones
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(dashboard),
            "--dashboard-agent-listen-port", str(agent_http),
            "--dashboard-agent-grpc-port", str(agent_grpc),
            "--runtime-env-agent-port", str(runtime_env_agent),
            "--metrics-export-port", str(metrics),
            "--num-cpus", str(HEAD_NUM_CPUS), "--object-store-memory",
            str(HEAD_OBJECT_STORE_BYTES), "--temp-dir", str(temp_dir),
            "--disable-usage-stats"]
    log_path = temp_dir / "ray-start.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, env=head_env, cwd=temp_dir, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    head = RayHead(proc, temp_dir, f"http://127.0.0.1:{dashboard}", client_env, token,
                   log_path)
    try:
        _wait_for_jobs_api(head)
        yield head
    finally:
        try:
            _stop_head(head)
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _ray_job(head: RayHead, command: str, *args: str, timeout: float = CLI_TIMEOUT_S
             ) -> subprocess.CompletedProcess[str]:
    """``ray job COMMAND --address <dashboard> ARGS`` from the client's environment."""
    argv = [str(VENV_BIN / "ray"), "job", command, "--address", head.dashboard_url,
            "--log-color", "false", *args]
    return subprocess.run(argv, env=head.client_env, cwd=REPO_ROOT, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout)


def _summary(logs: str) -> dict[str, Any]:
    """The run's ``--json`` summary: the last JSON object in the logs that is not an event."""
    for line in reversed(logs.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and "event" not in record:
                    return record
    raise AssertionError(f"no JSON summary in the job logs:\n{logs[-3000:]}")


def _events(logs: str, name: str) -> list[dict[str, Any]]:
    found = []
    for line in logs.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == name:
                    found.append(record)
    return found


@pytest.mark.s3
@pytest.mark.timeout(DASHBOARD_TIMEOUT_S + JOB_TIMEOUT_S + 4 * CLI_TIMEOUT_S)
def test_ray_job_submit_to_a_started_head_persists_the_cohort(
        ray_head: RayHead, store_args: list[str], store: S3Store, store_cfg: StoreConfig,
        aws_env: dict[str, str]) -> None:
    run_id = "manual__2026-11-28T10:00:00+00:00"  # an Airflow id, through the job's shell
    submission_id = f"s43-test-{uuid.uuid4().hex[:12]}"

    try:
        submit = _ray_job(ray_head, "submit", "--submission-id", submission_id,
                          "--working-dir", str(REPO_ROOT),
                          "--runtime-env-json", json.dumps({"excludes": UPLOAD_EXCLUDES}),
                          "--", "s43-ray", "run", "--run-id", run_id, "--cohort-size", "4",
                          "--rows", "1000", "--json", *store_args, timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ray job submit still running after {JOB_TIMEOUT_S:.0f}s")
    status = _ray_job(ray_head, "status", submission_id)
    logs = _ray_job(ray_head, "logs", submission_id)

    assert submit.returncode == 0, submit.stdout[-4000:] + submit.stderr[-4000:]
    assert f"Job '{submission_id}' succeeded" in submit.stdout
    assert status.returncode == 0, status.stderr
    assert f"Job '{submission_id}' succeeded" in status.stdout, status.stdout
    assert logs.returncode == 0, logs.stderr
    job = _http_get(ray_head, f"/api/jobs/{submission_id}")
    assert job["status"] == "SUCCEEDED" and job["driver_exit_code"] == 0

    s = _summary(logs.stdout)
    assert s["command"] == "run" and s["run_id"] == run_id
    assert s["status"] == "passed"
    assert s["cohort_count"] == s["expected"] == 4
    assert s["missing"] == [] and s["invalid"] == {} and s["persist_failed"] == {}
    # The driver joined the running cluster (RAY_ADDRESS set by Ray for the entrypoint) instead
    # of starting a local one: the gate and every writer ran on the head's own node.
    assert s["gate_node"] == job["driver_node_id"]
    persisted = _events(logs.stdout, "s43_pred_persisted")
    assert sorted(e["member"] for e in persisted) == [f"m{i:05d}" for i in range(4)]
    assert {e["node_id"] for e in persisted} == {job["driver_node_id"]}

    base = f"{store_cfg.prefix}/{run_id}/"
    assert keys_under(store, base) == [f"{base}_gate.json", f"{base}_run.json",
                                       *(f"{base}m{i:05d}.arrow" for i in range(4))]
    gate = json.loads(bytes(store.get(f"{base}_gate.json")[0]))
    assert gate["status"] == "passed" and gate["cohort_count"] == 4

    # Credentials reached the tasks through the head's environment, not the job's runtime_env
    # (which the dashboard shows to anyone who can reach it) and not the client's environment.
    runtime_env = job.get("runtime_env") or {}
    assert "env_vars" not in runtime_env
    shown = json.dumps(job)
    for var in CREDENTIAL_VARS:
        assert var not in ray_head.client_env
        assert aws_env[var] not in shown
        assert aws_env[var] not in logs.stdout and aws_env[var] not in submit.stdout
