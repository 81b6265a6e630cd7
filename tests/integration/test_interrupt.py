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
