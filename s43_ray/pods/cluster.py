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
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any, TextIO

from ..config import ENV_ADDRESS
from ..errors import ClusterError, S43Error
from ..keys import DEFAULT_PREFIX
from ..smoke_report import NODE_OBJECT_STORE_BYTES, SmokeConfig, SmokeReport
from ..stores.local_s3 import LocalS3, default_data_dir
from .driver import KILL_MARK
from .network import Pod, PodNetwork

RAY_PORT = 6379
HEAD_START_S = 60.0
DRIVER_TIMEOUT_S = 900.0
# A partitioned node is declared dead after about 1 + 5 x (1 + 1) = 11 s (measured: 9-10 s), not
# Ray's default of about a minute.
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
    """The whole namespaced smoke; everything it made is gone when it returns or raises. When
    it raises, the pods' logs are kept and the error names where."""
    ray = str(Path(sys.executable).parent / "ray")
    env = pod_environment(secrets.token_hex(32))
    with PodNetwork(roles(cfg.nodes), shared=code_under_tmp()) as net:
        try:
            record = _smoke(net, cfg, run_id, members, ray, env, err, events_level)
        except S43Error as exc:
            raise driver_failed(f"{exc} (the pods' logs: {_keep_logs(net)})", exc.error_class,
                                exc.exit_code) from exc
        except Exception as exc:  # a bug: keep what the pods said, and say where
            raise ClusterError(f"the smoke failed: {type(exc).__name__}: {exc} (the pods' "
                               f"logs: {_keep_logs(net)})") from exc
    leftovers = net.leftovers()
    if leftovers:
        raise ClusterError(f"pods left behind after the smoke: {leftovers}")
    return SmokeReport(**record)


def code_under_tmp(paths: Sequence[str] | None = None) -> list[str]:
    """The host folders under /tmp that the pods' processes run from (a checkout or a venv
    there, as CI has): the first folder below /tmp of each of ``paths`` (default: this
    interpreter's prefix, this package's folder, every import path). The pods see them
    read-only; the rest of /tmp is each pod's own."""
    if paths is None:
        package_parent = str(Path(__file__).resolve().parents[2])  # the folder holding s43_ray
        paths = [sys.prefix, package_parent, *sys.path]
    tops = set()
    for path in paths:
        parts = Path(os.path.realpath(path or ".")).parts
        if len(parts) > 2 and parts[:2] == ("/", "tmp"):
            tops.add(str(Path(*parts[:3])))
    return sorted(tops)


def pod_environment(token: str) -> dict[str, str]:
    """This process's environment for every pod process, made pod-like: its own /tmp (not the
    host's $TMPDIR, which every node would share), no proxies (nothing outside the pods is
    reachable), Ray's token, the keepalives."""
    env = {k: v for k, v in os.environ.items() if k not in _HOST_ONLY}
    env.update({"TMPDIR": "/tmp", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                "RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0", **GRPC_KEEPALIVE})
    return env


# Host settings that would break a pod: a shared temp dir, proxies it cannot reach.
_HOST_ONLY = frozenset({"RAY_TMPDIR", "TMPDIR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                        "http_proxy", "https_proxy", "all_proxy", ENV_ADDRESS})


def _smoke(net: PodNetwork, cfg: SmokeConfig, run_id: str, members: list[str], ray: str,
           env: dict[str, str], err: TextIO, events_level: str) -> dict[str, Any]:
    work = net.work_dir
    store_pod, head = net.pods["store"], net.pods["head"]
    server = LocalS3(work / "store", bind_ip=store_pod.address, launcher=store_pod.enter,
                     wait=False)
    with open(work / "pods.log", "ab") as log:
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
            return _drive(net, head, env, spec, err)
        finally:
            server.stop()


def _keep_logs(net: PodNetwork) -> Path:
    """Copy the pods' logs out of the network's folder (which goes with it)."""
    kept = default_data_dir().parent / "smoke-logs" / net.tag
    kept.mkdir(parents=True, exist_ok=True)
    for log in [*net.work_dir.glob("*.log"), *net.work_dir.glob("store/*.log")]:
        with contextlib.suppress(OSError):
            shutil.copy2(log, kept / log.name)
    return kept


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
            last = (text.strip().splitlines() or ["no output"])[-1]
            raise ClusterError(f"the Ray head in pod {head.name} exited with code "
                               f"{proc.returncode}: {last}")
        time.sleep(0.1)
    raise ClusterError(f"the Ray head in pod {head.name} did not start within "
                       f"{HEAD_START_S:.0f}s")


def _drive(net: PodNetwork, head: Pod, env: dict[str, str], spec: dict[str, Any],
           err: TextIO) -> dict[str, Any]:
    """Run the driver in the head pod; relay its stderr; its last stdout line is the report
    (or its error). It is stopped, with its pod, past :data:`DRIVER_TIMEOUT_S` or when this
    process is interrupted."""
    proc = subprocess.Popen(head.enter([sys.executable, "-m", "s43_ray.pods.driver"]), env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    relay = threading.Thread(target=_relay, args=(proc.stderr, err, net), daemon=True)
    relay.start()
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        net.kill(head.name)

    timer = threading.Timer(DRIVER_TIMEOUT_S, stop)
    timer.daemon = True
    timer.start()
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(spec))
        proc.stdin.close()
        out = proc.stdout.read()
        proc.wait()
    except BaseException:
        net.kill(head.name)  # the driver itself, not only the nsenter that started it
        proc.kill()
        raise
    finally:
        timer.cancel()
        relay.join(5)
    lines = out.strip().splitlines()
    record: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    if "error" in record:
        raise driver_failed(record["error"], record["error_class"], record["exit_code"])
    if proc.returncode != 0 or not record:
        why = (f"was stopped after {DRIVER_TIMEOUT_S:.0f}s" if timed_out.is_set() else
               f"exited with code {proc.returncode}")
        raise ClusterError(f"the smoke's driver in pod {head.name} {why}; its output is above")
    return record


def driver_failed(message: str, error_class: str, exit_code: int) -> S43Error:
    """An error as the driver (or the step that failed) classed it: its one line, class and
    exit code."""
    kind: type[S43Error] = type("DriverFailed", (S43Error,), {"error_class": error_class,
                                                             "exit_code": int(exit_code)})
    return kind(message)


def _relay(stream: IO[str] | None, err: TextIO, net: PodNetwork) -> None:
    """The driver's stderr to ours; a kill request (``--kill-node``) is carried out instead.
    It drains to the end whatever fails, so the driver never blocks on a full pipe."""
    if stream is None:
        return
    for line in stream:
        try:
            if line.startswith(KILL_MARK):
                net.kill(line[len(KILL_MARK):].strip())
                continue
            err.write(line)
            err.flush()
        except Exception:  # a broken stderr or a bad request must not stop the draining
            continue
