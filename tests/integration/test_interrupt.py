"""Ctrl-C and SIGTERM: the embedded server and the local Ray cluster are stopped, exit 130."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "S43_", "RAY_ADDRESS"))}
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive; it is reaped by its parent
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_interrupt_stops_embedded_server_and_exits_130(tmp_path: Path, sig: int) -> None:
    exe = Path(sys.executable).parent / "s43-ray"
    proc = subprocess.Popen(
        [str(exe), "run", "--cohort-size", "5000", "--rows", "10", "--num-cpus", "1",
         "--local-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_clean_env(),
        stdin=subprocess.DEVNULL)
    assert proc.stderr is not None
    endpoint = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until members are being written
        line = proc.stderr.readline()
        if not line:
            break
        if line.startswith("{"):
            record = json.loads(line)
            endpoint = endpoint or record.get("endpoint", "")
            if record["event"] == "s43_pred_persisted":
                break
    assert endpoint, "the run never started"
    weed_pid = int((tmp_path / "weed.pid").read_text())
    assert _alive(weed_pid)
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "s43-ray: error: interrupted" in rest
    assert "Traceback" not in rest
    assert not _alive(weed_pid)
    assert not (tmp_path / "weed.pid").exists()
    url = urlsplit(endpoint)
    with pytest.raises(OSError), socket.create_connection((url.hostname, url.port), timeout=2):
        pass


LOST_HANDLER = """
import sys
from s43_ray import stopping
from s43_ray.cli import main as cli

def lost(signum, frame):
    # The handler ran, but its KeyboardInterrupt is raised where it is lost (a finalizer, a
    # library's callback): only the remembered stop is left.
    stopping.ask(signum)

cli._terminated = lost
sys.exit(cli.main())
"""


@pytest.mark.ray
def test_a_lost_interrupt_still_stops_a_run_whose_members_hang(
        ray_cluster: None, store_args: list[str]) -> None:
    """A SIGTERM whose KeyboardInterrupt never reaches the run: the fan-out's wait loop raises
    it again from the remembered stop, so the run exits 130 at once, instead of
    waiting out its 900 s stall timeout for members that hang."""
    import ray

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH"))
                                         if p)}
    proc = subprocess.Popen(
        [sys.executable, "-c", LOST_HANDLER, "run", "--run-id", "lost-interrupt",
         "--cohort-size", "2", "--rows", "10", "--predictor", "tests.predictors:hang",
         *store_args], cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if line.startswith("{") and json.loads(line)["event"] == "s43_run_started":
                break
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=120)  # not the stall timeout's 900 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, rest[-3000:]
    assert "s43-ray: error: interrupted" in rest
