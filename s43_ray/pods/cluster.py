"""The namespaced smoke, host side: make the pods, start the store and Ray in them, run the
driver in the head pod, tear everything down.

Pods (:mod:`.network`): ``store`` (SeaweedFS on the pod's own address), ``head`` (the Ray head,
no CPUs, and the driver), ``worker-1`` .. ``worker-N`` (a Ray node of one CPU each). Ray's
token authentication is on, with a token made for this smoke. The driver (:mod:`.driver`) does
the runs and the faults and answers with the report; its events go to our stderr as they come.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any, TextIO

from ..errors import ClusterError
from ..keys import DEFAULT_PREFIX
from ..smoke_report import SmokeConfig, SmokeReport
from ..stores.local_s3 import LocalS3, default_data_dir
from .driver import KILL_MARK
from .network import Pod, PodNetwork

RAY_PORT = 6379
# Each Ray node: the smallest object store Ray accepts (it only ever holds references).
NODE_OBJECT_STORE_BYTES = 80 * 1024**2
HEAD_START_S = 60.0
DRIVER_TIMEOUT_S = 900.0
# A partitioned node is declared dead after about 1 + 1 x 5 s, not Ray's default half-minute.
HEALTH_CHECK = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 1000,
                "health_check_timeout_ms": 1000, "health_check_failure_threshold": 5}


# A task pushed to a node that is cut off is retried elsewhere only once its connection fails:
# without keepalives a silent partition never fails it (measured: tasks still pending 60 s after
# the node was declared dead); with these, about 5 s after the cut.
GRPC_KEEPALIVE = {"RAY_grpc_client_keepalive_time_ms": "2000",
                  "RAY_grpc_client_keepalive_timeout_ms": "2000"}


def roles(nodes: int) -> list[str]:
    return ["store", "head", *(f"worker-{i}" for i in range(1, nodes + 1))]


def run_in_pods(cfg: SmokeConfig, run_id: str, members: list[str], *, err: TextIO,
                events_level: str = "info") -> SmokeReport:
    """The whole namespaced smoke; everything it made is gone when it returns or raises."""
    ray = str(Path(sys.executable).parent / "ray")
    work = Path(tempfile.mkdtemp(prefix="smoke-", dir=_work_root()))
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0", **GRPC_KEEPALIVE}
    try:
        with PodNetwork(roles(cfg.nodes)) as net, \
                open(work / "pods.log", "ab") as log:
            store_pod, head = net.pods["store"], net.pods["head"]
            server = LocalS3(work / "store", bind_ip=store_pod.address, launcher=store_pod.enter,
                             wait=False)
            server.start()  # answers inside the pods only: the driver waits for it
            try:
                _start_head(head, ray, env, log, work)
                workers = {r: p for r, p in net.pods.items() if r.startswith("worker-")}
                for pod in workers.values():
                    pod.start([ray, "start", "--block", f"--address={head.address}:{RAY_PORT}",
                               f"--node-ip-address={pod.address}", "--num-cpus=1",
                               f"--object-store-memory={NODE_OBJECT_STORE_BYTES}",
                               "--disable-usage-stats"], env=env, log_file=log)
                store_cfg = server.store_config()
                key_id, secret = store_cfg.access_key_id, store_cfg.secret_access_key
                assert key_id is not None and secret is not None  # the server made them
                spec = {"smoke": asdict(cfg), "run_id": run_id, "members": members,
                        "head_address": f"{head.address}:{RAY_PORT}",
                        "workers": {r: p.address for r, p in workers.items()},
                        "bucket": store_cfg.bucket, "prefix": DEFAULT_PREFIX,
                        "endpoint_url": store_cfg.endpoint_url,
                        "access_key_id": key_id.value, "secret_access_key": secret.value,
                        "bridge_ns": net.bridge_ns,
                        "links": {r: p.link for r, p in net.pods.items()},
                        "events": events_level}
                record = _drive(net, head, env, spec, err)
            finally:
                server.stop()
        leftovers = net.leftovers()
        if leftovers:
            raise ClusterError(f"pods left behind after the smoke: {leftovers}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return SmokeReport(**record)


def _work_root() -> str:
    """Host folders the pods read (the store's data): not under /tmp, which each pod has to
    itself."""
    root = default_data_dir().parent / "smoke"
    root.mkdir(parents=True, exist_ok=True)
    return str(root)


def _start_head(head: Pod, ray: str, env: dict[str, str], log: IO[bytes], work: Path) -> None:
    head_log = work / "head.log"
    with open(head_log, "ab") as out:
        proc = head.start([ray, "start", "--head", "--block", f"--node-ip-address={head.address}",
                           f"--port={RAY_PORT}", "--num-cpus=0",
                           f"--object-store-memory={NODE_OBJECT_STORE_BYTES}",
                           "--include-dashboard=false", "--disable-usage-stats",
                           f"--system-config={json.dumps(HEALTH_CHECK)}"],
                          env=env, log_file=out)
    deadline = time.monotonic() + HEAD_START_S
    while time.monotonic() < deadline:
        text = head_log.read_text(errors="replace")
        if "Ray runtime started" in text:
            log.write(text.encode())
            return
        if proc.poll() is not None:
            raise ClusterError(f"the Ray head in pod {head.name} exited with code "
                               f"{proc.returncode}: {text.strip().splitlines()[-1:]}")
        time.sleep(0.1)
    raise ClusterError(f"the Ray head in pod {head.name} did not start within "
                       f"{HEAD_START_S:.0f}s")


def _drive(net: PodNetwork, head: Pod, env: dict[str, str], spec: dict[str, Any],
           err: TextIO) -> dict[str, Any]:
    """Run the driver in the head pod; relay its stderr; its last stdout line is the report."""
    proc = subprocess.Popen(head.enter([sys.executable, "-m", "s43_ray.pods.driver"]), env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    relay = threading.Thread(target=_relay, args=(proc.stderr, err, net), daemon=True)
    relay.start()
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(spec))
    proc.stdin.close()
    try:
        out = proc.stdout.read()
        proc.wait(DRIVER_TIMEOUT_S)
    except BaseException:
        proc.kill()
        raise
    finally:
        relay.join(5)
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ClusterError(f"the smoke's driver in pod {head.name} exited with code "
                           f"{proc.returncode}; its output is above")
    record: dict[str, Any] = json.loads(lines[-1])
    return record


def _relay(stream: IO[str] | None, err: TextIO, net: PodNetwork) -> None:
    """The driver's stderr to ours; a kill request (``--kill-node``) is carried out instead."""
    if stream is None:
        return
    with contextlib.suppress(ValueError):
        for line in stream:
            if line.startswith(KILL_MARK):
                net.kill(line[len(KILL_MARK):].strip())
                continue
            err.write(line)
            err.flush()
