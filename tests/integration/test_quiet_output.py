"""What a user sees: a plain ``s43-ray run`` prints its events and nothing of Ray's or
SeaweedFS's housekeeping; a server that cannot start still says why; a head started by hand
with token auth (docs/deploy.md, "Running against a head started by hand") takes the driver
that has its token and tells the one without what is missing.

Each runs ``s43-ray`` in a subprocess whose environment has no RAY_* variable (an in-process
``ray.init`` of the session sets RAY_AUTH_MODE, which would hide what a user meets), no S3
credentials and a fresh HOME (no ``~/.ray/auth_token``: Ray's first-run path).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import CliResult, parse_events
from ray_heads import RayHead, running_head, start_head, wait_ready, without_ray_vars

from s43_ray.errors import StoreUnreachable
from s43_ray.stores.local_s3 import _PORT_FLAGS, LocalS3, weed_ports

CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                   "AWS_PROFILE", "S43_STORE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                   "S43_LOCAL_S3_DIR", "XDG_CACHE_HOME")
SUBPROCESS_TIMEOUT_S = 180
HEAD_START_TIMEOUT_S = 90.0
# Ray's notice when it turns token auth on by default (s43_ray.cluster drops it).
TOKEN_NOTICE = "Token authentication is enabled for this Ray cluster"
# A line of Ray's Python logging ("2026-12-01 16:07:40,202\tWARNING file.py:85 -- ...") or of
# its C++ logging ("[2026-12-01 16:14:40,197 W 27361 27361] gcs_client.cc:210: ...").
RAY_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\s+[A-Z]+ |\[\d{4}-\d\d-\d\d )")
PYTHON_WARNING = re.compile(r"\b\w*Warning: ")


def run_clean(argv: list[str], home: Path, **env: str) -> CliResult:
    """``s43-ray ARGV`` as a user runs it: no RAY_* variable, no S3 settings, HOME ``home``."""
    base = {k: v for k, v in without_ray_vars(os.environ).items() if k not in CREDENTIAL_VARS}
    exe = Path(sys.executable).parent / "s43-ray"
    proc = subprocess.run([str(exe), *argv], capture_output=True, text=True,
                          env={**base, "HOME": str(home), **env}, cwd=home,
                          timeout=SUBPROCESS_TIMEOUT_S, stdin=subprocess.DEVNULL)
    return CliResult(proc.returncode, proc.stdout, proc.stderr, parse_events(proc.stderr))


def error_lines(r: CliResult) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("s43-ray: error:")]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[CliResult, Path, Path]:
    """One small ``s43-ray run`` on the embedded default: (result, HOME, server folder)."""
    home = tmp_path_factory.mktemp("home")
    local_dir = home / "s3data"
    r = run_clean(["run", "--cohort-size", "2", "--rows", "10", "--num-cpus", "1",
                   "--local-dir", str(local_dir), "--json"], home)
    return r, home, local_dir


@pytest.mark.timeout(SUBPROCESS_TIMEOUT_S + 60)
def test_a_plain_run_prints_its_events_and_none_of_rays_noise(
        plain_run: tuple[CliResult, Path, Path]) -> None:
    r, home, _ = plain_run

    assert r.code == 0, r.stderr
    assert r.summary["status"] == "passed" and r.summary["cohort_count"] == 2
    assert {"s43_run_started", "s43_ledger_persisted", "s43_gate_outcome",
            "s43_gate_persisted"} <= {e["event"] for e in r.events}
    assert len(r.named("s43_pred_persisted")) == 2
    # Ray did take its first-run path, the one that logs the notice: token auth on by default,
    # a token written to this HOME.
    assert (home / ".ray" / "auth_token").is_file()
    assert TOKEN_NOTICE not in r.stderr
    assert not [line for line in r.stderr.splitlines() if RAY_LOG_LINE.match(line)], r.stderr
    assert not PYTHON_WARNING.search(r.stderr), r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.timeout(SUBPROCESS_TIMEOUT_S + 60)
def test_the_embedded_servers_log_has_no_connection_refused_lines(
        plain_run: tuple[CliResult, Path, Path]) -> None:
    r, _, local_dir = plain_run
    assert r.code == 0, r.stderr

    log = (local_dir / "weed.log").read_text(errors="replace")

    assert "S3 Endpoint:" in log and "Shutting down" in log  # it ran, and was stopped
    refused = [line for line in log.splitlines() if "connection refused" in line.lower()
               or "connection failed" in line.lower()]
    assert not refused, "\n".join(refused[:5])


def test_a_server_that_cannot_start_still_says_why(tmp_path: Path) -> None:
    ports = weed_ports()
    s3_port = ports[_PORT_FLAGS.index("s3.port")]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", s3_port))
        busy.listen()
        server = LocalS3(tmp_path / "s3", ports=ports)
        with pytest.raises(StoreUnreachable,
                           match=r"exited with code \d+ at start; see .*weed\.log"):
            server.start()

    log = (tmp_path / "s3" / "weed.log").read_text(errors="replace")
    assert f"port {s3_port} for S3" in log and "is not available" in log, log


# --- a head started by hand, token auth on, bound to 127.0.0.1 only ---------------------------

@pytest.fixture(scope="module")
def token_head() -> Iterator[RayHead]:
    """``ray start --head`` with its own token (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN) on
    127.0.0.1 only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), as docs/deploy.md starts one."""
    head = start_head(dashboard=False)
    with running_head(head):
        wait_ready(head, lambda: "Ray runtime started" in head.log_tail(200),
                   what="Ray head", timeout=HEAD_START_TIMEOUT_S)
        yield head


@pytest.mark.timeout(SUBPROCESS_TIMEOUT_S + HEAD_START_TIMEOUT_S)
def test_a_driver_with_the_heads_token_in_a_file_runs_on_it(token_head: RayHead,
                                                            tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(token_head.token)
    token_file.chmod(0o600)

    # No RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER here: Ray would dial 127.0.0.1 on the host's
    # outbound address, where this head does not listen; s43-ray stays on loopback.
    r = run_clean(["run", "--address", token_head.gcs_address, "--cohort-size", "4",
                   "--rows", "100", "--local-dir", str(tmp_path / "s3data"), "--json"],
                  tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))

    assert r.code == 0, r.stderr[-3000:]
    assert r.summary["status"] == "passed" and r.summary["cohort_count"] == 4
    assert TOKEN_NOTICE not in r.stderr


@pytest.mark.timeout(SUBPROCESS_TIMEOUT_S + HEAD_START_TIMEOUT_S)
def test_a_driver_without_a_token_is_told_where_ray_looks_for_it(token_head: RayHead,
                                                                 tmp_path: Path) -> None:
    r = run_clean(["run", "--address", token_head.gcs_address, "--cohort-size", "1",
                   "--rows", "10", "--local-dir", str(tmp_path / "s3data")],
                  tmp_path, RAY_AUTH_MODE="token")

    assert r.code == 3, r.stderr[-3000:]
    (line,) = error_lines(r)
    assert "no authentication token was found" in line
    assert "RAY_AUTH_TOKEN, a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token" in line
    assert token_head.gcs_address in line
    assert "Traceback" not in r.stderr
