"""The embedded default, as a new user runs it: no store configured, no AWS credentials.

These run ``s43-ray`` in a subprocess (its own Ray cluster and its own SeaweedFS server), so
they are the slowest tests of the tier.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers import CliResult, parse_events

# Removed from the environment: the embedded server uses credentials it generates itself.
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                   "AWS_PROFILE", "S43_STORE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                   "RAY_ADDRESS", "S43_LOCAL_S3_DIR")
SUBPROCESS_TIMEOUT_S = 240


def run_clean(argv: list[str], home: Path) -> CliResult:
    """``s43-ray ARGV`` in a subprocess whose environment has no S3 credentials or store."""
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
    env["HOME"] = str(home)  # nothing of the developer's ~/.cache is used or touched
    # An endpoint exported for production (as docs/deploy.md's Scaleway section does) must not
    # stop the embedded default: with no --store, the environment's endpoint is ignored.
    env["AWS_ENDPOINT_URL_S3"] = "https://s3.fr-par.scw.cloud"
    # Nor does a session token meant for another store: the embedded credentials go alone.
    env["AWS_SESSION_TOKEN"] = "a-token-for-another-store"
    env.pop("XDG_CACHE_HOME", None)
    exe = Path(sys.executable).parent / "s43-ray"
    proc = subprocess.run([str(exe), *argv], capture_output=True, text=True, env=env,
                          timeout=SUBPROCESS_TIMEOUT_S, stdin=subprocess.DEVNULL, cwd=home)
    return CliResult(proc.returncode, proc.stdout, proc.stderr, parse_events(proc.stderr))


def listening(endpoint: str) -> bool:
    parts = urlsplit(endpoint)
    assert parts.hostname and parts.port
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((parts.hostname, parts.port)) == 0


@pytest.mark.timeout(SUBPROCESS_TIMEOUT_S * 2 + 60)
def test_embedded_default_runs_then_gates_from_the_same_folder(tmp_path: Path) -> None:
    local_dir = tmp_path / "s3data"
    home = tmp_path / "home"
    home.mkdir()

    r = run_clean(["run", "--cohort-size", "3", "--rows", "100", "--num-cpus", "1",
                   "--local-dir", str(local_dir), "--json"], home)

    assert r.code == 0, r.stderr
    s = r.summary
    assert s["status"] == "passed" and s["cohort_count"] == 3 and s["expected"] == 3
    assert s["store"] == "s3://s43-local/s43-predictions"
    assert "Traceback" not in r.stderr
    endpoint = s["endpoint"]
    assert endpoint.startswith("http://127.0.0.1:")
    # the server it started is gone: nothing listens on its endpoint, and its folder is free
    assert not listening(endpoint)
    assert (local_dir / "weed.log").is_file()
    assert (local_dir / ".lock").exists()
    with open(local_dir / ".lock") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if a server still holds it
        fcntl.flock(fh, fcntl.LOCK_UN)
    # its generated credentials stay private and never show in the output
    identities = local_dir / "s3-identities.json"
    assert identities.stat().st_mode & 0o077 == 0
    secret = json.loads(identities.read_text())["identities"][0]["credentials"][0]["secretKey"]
    assert secret not in r.stdout and secret not in r.stderr
    run_id = s["run_id"]
    assert run_id.startswith("s43__")
    assert len(r.named("s43_pred_persisted")) == 3

    g = run_clean(["gate", "--run-id", run_id, "--local-dir", str(local_dir), "--json"], home)

    assert g.code == 0, g.stderr
    assert g.summary["run_id"] == run_id
    assert g.summary["status"] == "passed" and g.summary["cohort_count"] == 3
    assert not listening(g.summary["endpoint"])
    assert secret not in g.stdout and secret not in g.stderr
    assert not (home / ".cache").exists()
