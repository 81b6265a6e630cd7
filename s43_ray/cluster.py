"""The Ray session: connect to a cluster or start a local one, fail fast on an address that
does not answer, say so when the cluster refuses the driver's token, keep every worker log line
(each S3 retry warning names its attempt), and place a task on a node.
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
from ray.exceptions import AuthenticationError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .errors import ClusterError, InputError

# A local cluster's object store only ever holds references; Ray's minimum is 75 MiB.
LOCAL_OBJECT_STORE_BYTES = 128 * 1024**2
# A Ray address that does not accept a TCP connection within this time is unreachable.
RAY_PROBE_TIMEOUT_S = 5.0
# Where Ray would really connect for a loopback address (see loopback_only_head): local, so an
# answer, or a refusal, comes at once.
REWRITTEN_PROBE_TIMEOUT_S = 1.0

# Ray (2.59+) logs this from ray.init each time it turns token auth on by default, for a local
# cluster it starts or a running one it finds with a token at hand. Nothing to act on: the
# local cluster lives for one command, and opting out (RAY_AUTH_MODE=disabled) only removes
# its protection. Dropped from this one logger, this one message; the rest of Ray's warnings
# stay, and the token error when a cluster refuses the driver is reported (ray_init_error).
TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
TOKEN_AUTH_ENABLED_NOTICE = "Token authentication is enabled for this Ray cluster."
# Where the driver looks for the cluster's token, in Ray's order.
TOKEN_SOURCES = "RAY_AUTH_TOKEN, a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token"
# What Ray's errors say when the token is missing or wrong (ray.exceptions.AuthenticationError,
# or the GCS's "Unauthenticated ... InvalidAuthToken" when the driver sent none or another).
_AUTH_FAILURE_MARKERS = ("AuthenticationError", "InvalidAuthToken", "Unauthenticated")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


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


class _DropTokenAuthNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(TOKEN_AUTH_ENABLED_NOTICE)


@contextlib.contextmanager
def quiet_token_auth_notice() -> Iterator[None]:
    """Around ``ray.init``: drop Ray's "Token authentication is enabled for this Ray cluster"
    notice (see TOKEN_AUTH_ENABLED_NOTICE), nothing else."""
    logger, drop = logging.getLogger(TOKEN_AUTH_LOGGER), _DropTokenAuthNotice()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def ray_init_error(where: str, exc: BaseException) -> ClusterError:
    """One line for a ``ray.init`` that failed: the token, when that is why, else Ray's first
    line. Ray raises AuthenticationError itself when the driver has no usable token (its first
    sentence names the source); a token the cluster refuses comes back wrapped in "Failed to
    connect to Ray cluster at ...", the cause naming it."""
    if isinstance(exc, AuthenticationError):
        what = str(exc).split(". ")[0].strip().rstrip(".") or "no usable token"
        return ClusterError(f"Ray at {where}: {what}; expected the cluster's token in "
                            f"{TOKEN_SOURCES} (docs/deploy.md)")
    chain: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 5:
        chain.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    if any(marker in "\n".join(chain) for marker in _AUTH_FAILURE_MARKERS):
        if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            return ClusterError(f"Ray at {where}: it requires a token and this driver sent none; "
                                f"expected RAY_AUTH_MODE=token and the cluster's token in "
                                f"{TOKEN_SOURCES} (docs/deploy.md)")
        return ClusterError(f"Ray at {where}: it refused this driver's token; expected the "
                            f"cluster's token in {TOKEN_SOURCES} (docs/deploy.md)")
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ClusterError(f"Ray at {where} could not be reached or started: {first}")


def loopback_only_head(address: str) -> bool:
    """Whether ``address`` is a loopback ``HOST:PORT`` that Ray would rewrite to this host's
    outbound address, where nothing answers: a head started on 127.0.0.1 only
    (``--node-ip-address 127.0.0.1`` with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). Ray
    would then retry that address for minutes; the driver must stay on loopback too."""
    if "://" in address:  # ray://: the Ray client connects where it is told
        return False
    host, _, port = address.rpartition(":")
    if host.strip("[]") not in _LOOPBACK_HOSTS or not port.isdigit():
        return False
    from ray._private import ray_constants, services

    if not ray_constants.ENABLE_RAY_CLUSTER:  # already on loopback (the variable is set)
        return False
    outbound = str(services.get_node_ip_address())  # type: ignore[no-untyped-call]
    if outbound.startswith("127.") or outbound in _LOOPBACK_HOSTS:
        return False
    try:
        with socket.create_connection((outbound, int(port)), timeout=REWRITTEN_PROBE_TIMEOUT_S):
            return False  # the head answers there too: Ray's rewrite works
    except OSError:
        return True


@contextlib.contextmanager
def scoped_env(name: str, value: str) -> Iterator[None]:
    """``os.environ[name] = value`` for the length of the block (the processes started in it
    inherit it); the previous value, or its absence, afterwards."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextlib.contextmanager
def loopback_ray(on: bool = True, *, spawned: bool = False) -> Iterator[None]:
    """While ``on``: Ray resolves 127.0.0.1 to itself, not to the outbound address (the switch
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 sets at import; ``ray.init`` reads it). ``spawned``:
    the processes Ray starts meanwhile (the raylets of a cluster it builds) too, through that
    variable."""
    if not on:
        yield
        return
    from ray._private import ray_constants

    previous = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        with (scoped_env(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, "0") if spawned
              else contextlib.nullcontext()):
            yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous


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
    loopback = False
    if address:
        probe_address(address)
        kwargs["address"] = address
        loopback = loopback_only_head(address)
    else:
        # "local" starts a new cluster even when a `ray start` cluster runs on this machine.
        kwargs.update(address="local", num_cpus=num_cpus,
                      object_store_memory=LOCAL_OBJECT_STORE_BYTES, include_dashboard=False)
    keep_every_worker_log_line()
    on_main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if on_main else None
    try:
        with quiet_token_auth_notice(), loopback_ray(loopback):
            ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError, RayError) as exc:
        raise ray_init_error(address or "a local cluster", exc) from exc
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
