"""``ray job submit`` of ``s43-ray run`` to a Ray head started with ``ray start --head``.

The production path (docs/deploy.md), on one machine: the job's entrypoint
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
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import keys_under
from ray_heads import VENV_BIN, RayHead, running_head, start_head, wait_ready, without_ray_vars

from s43_ray.config import StoreConfig
from s43_ray.stores.s3 import S3Store

REPO_ROOT = Path(__file__).resolve().parents[2]
# A cold head answers on its dashboard in ~10 s on a 2-core machine; the job takes ~15 s.
DASHBOARD_TIMEOUT_S = 90.0
JOB_TIMEOUT_S = 150.0
CLI_TIMEOUT_S = 60.0
# Not uploaded with the working dir: the venv and git history are large and not needed (Ray
# also skips what .gitignore lists).
UPLOAD_EXCLUDES = [".git", ".venv"]
# The fake test credentials (aws_env): in the head's environment only.
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# Kept out of the client's environment: it submits the job and needs no credentials.
CLIENT_DROPPED_VARS = (*CREDENTIAL_VARS, "AWS_SESSION_TOKEN", "AWS_PROFILE")


def _client_env(head: RayHead) -> dict[str, str]:
    """For `ray job ...`: the head's token, no AWS credentials, no other RAY_* variable."""
    return {k: v for k, v in without_ray_vars(os.environ).items()
            if k not in CLIENT_DROPPED_VARS} | {"RAY_AUTH_MODE": "token",
                                                "RAY_AUTH_TOKEN": head.token}


def _http_get(head: RayHead, path: str) -> Any:
    request = urllib.request.Request(f"{head.dashboard_url}{path}",
                                     headers={"Authorization": f"Bearer {head.token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _wait_for_jobs_api(head: RayHead) -> None:
    """Poll until the dashboard answers and its job module accepts requests (refused, 5xx while
    the dashboard's modules load, a cut connection or body: not yet)."""
    def probe() -> bool:
        _http_get(head, "/api/version")
        _http_get(head, "/api/jobs/")
        return True

    wait_ready(head, probe, what=f"Ray dashboard at {head.dashboard_url}",
               timeout=DASHBOARD_TIMEOUT_S,
               errors=(OSError, http.client.HTTPException, ValueError))


@pytest.fixture
def ray_head(aws_env: dict[str, str]) -> Iterator[RayHead]:
    """A Ray head of this test's own: loopback, free ports, own temp dir, own auth token.
    Its environment is the pods' environment: it carries the S3 credentials (aws_env put them
    in os.environ), and the venv's bin first so `s43-ray` is on PATH."""
    head = start_head(dashboard=True)
    with running_head(head):
        for var in CREDENTIAL_VARS:
            assert head.env.get(var) == aws_env[var]
        _wait_for_jobs_api(head)
        yield head


def _ray_job(head: RayHead, command: str, *args: str, timeout: float = CLI_TIMEOUT_S
             ) -> subprocess.CompletedProcess[str]:
    """``ray job COMMAND --address <dashboard> ARGS`` from the client's environment."""
    argv = [str(VENV_BIN / "ray"), "job", command, "--address", head.dashboard_url,
            "--log-color", "false", *args]
    return subprocess.run(argv, env=_client_env(head), cwd=REPO_ROOT, capture_output=True,
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
        assert var not in _client_env(ray_head)
        assert aws_env[var] not in shown
        assert aws_env[var] not in logs.stdout and aws_env[var] not in submit.stdout
