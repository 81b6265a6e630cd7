"""The Ray session: connect to a cluster or start a local one, fail fast on an address that
does not answer, keep every worker log line (each S3 retry warning names its attempt), and
place a task on a node.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .errors import ClusterError, InputError

# A local cluster's object store only ever holds references; Ray's minimum is 75 MiB.
LOCAL_OBJECT_STORE_BYTES = 128 * 1024**2
# A Ray address that does not accept a TCP connection within this time is unreachable.
RAY_PROBE_TIMEOUT_S = 5.0


def probe_address(address: str, timeout: float = RAY_PROBE_TIMEOUT_S) -> None:
    """Fail fast if a ``host:port`` (or ``ray://host:port``) Ray address does not answer:
    ``ray.init`` itself retries an unreachable GCS for minutes."""
    if address == "auto" or address.startswith("local"):
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"Ray address {address!r} is not valid; expected HOST:PORT, "
                         "ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(f"Ray at {address} is unreachable ({exc.strerror or exc}); expected "
                           "a running cluster's address") from exc


def keep_every_worker_log_line() -> None:
    """Ray folds repeated worker lines ("[repeated 2x across cluster]") in the driver's output;
    each S3 retry warning names its attempt, so keep them all unless RAY_DEDUP_LOGS is set."""
    if "RAY_DEDUP_LOGS" in os.environ:
        return
    with contextlib.suppress(Exception):  # a private switch: never fail a run over it
        from ray._private import ray_logging

        ray_logging.RAY_DEDUP_LOGS = False  # type: ignore[attr-defined]


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to ``address`` or start a local cluster; disconnect (and stop it) afterwards.
    A session the caller already opened is reused and left open."""
    if ray.is_initialized():
        yield
        return
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        probe_address(address)
        kwargs["address"] = address
    else:
        # "local" starts a new cluster even when a `ray start` cluster runs on this machine.
        kwargs.update(address="local", num_cpus=num_cpus,
                      object_store_memory=LOCAL_OBJECT_STORE_BYTES, include_dashboard=False)
    keep_every_worker_log_line()
    on_main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if on_main else None
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local cluster"
        raise ClusterError(f"Ray at {where} could not be reached or started: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                           ) from exc
    if on_main and sigterm is not None:
        # Ray's core worker installs a crash handler that aborts on SIGTERM; put the caller's
        # handler back so that SIGTERM cleans up (embedded server, local cluster) like Ctrl-C.
        signal.signal(signal.SIGTERM, sigterm)
    try:
        yield
    finally:
        ray.shutdown()  # drains forwarded worker logs before the summary is printed


def node_affinity(node_id: str, *, soft: bool) -> dict[str, Any]:
    """Ray task options placing a task on ``node_id``; ``soft``: elsewhere when it is gone."""
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=soft)}
