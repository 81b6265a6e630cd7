"""Ray's token auth as the driver meets it, without starting Ray: the notice dropped (and only
it), one clear line when a cluster wants a token the driver lacks, and a loopback-only head
joined on loopback."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import ray
from ray._private import ray_constants, services
from ray._private.authentication import authentication_token_setup
from ray.exceptions import AuthenticationError

from s43_ray import cluster
from s43_ray.cluster import (
    TOKEN_AUTH_LOGGER,
    TOKEN_SOURCES,
    loopback_only_head,
    quiet_token_auth_notice,
    ray_init_error,
    ray_session,
)
from s43_ray.errors import ClusterError


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def auth_log() -> Iterator[_Records]:
    """What Ray's token-auth logger emits, whatever Ray configured for its handlers."""
    logger, records = logging.getLogger(TOKEN_AUTH_LOGGER), _Records()
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)


def test_rays_own_notice_is_dropped_while_ray_starts_and_nothing_else(
        auth_log: _Records) -> None:
    with quiet_token_auth_notice():
        authentication_token_setup._warn_token_auth_enabled()  # the notice, as Ray words it
        authentication_token_setup._warn_token_auth_disabled()  # actionable: kept
        logging.getLogger(TOKEN_AUTH_LOGGER).warning("something else")

    assert len(auth_log.messages) == 2
    assert auth_log.messages[0].startswith("Token authentication is disabled")
    assert auth_log.messages[1] == "something else"


def test_the_notice_is_back_once_ray_has_started(auth_log: _Records) -> None:
    with quiet_token_auth_notice():
        pass

    authentication_token_setup._warn_token_auth_enabled()

    assert [m for m in auth_log.messages if "Token authentication is enabled" in m]


# --- the one line a missing or refused token gives ---------------------------------------------

REFUSED = ("Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
           "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: Authentication "
           "token is missing or incorrect. Note: RAY_AUTH_MODE is currently 'disabled'")


def _wrapped(cause_text: str) -> ConnectionError:
    """What ray.init raises when the GCS refused it: a ConnectionError from a RuntimeError."""
    try:
        try:
            raise RuntimeError(cause_text)
        except RuntimeError as cause:
            raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6380") from cause
    except ConnectionError as exc:
        return exc


def test_a_driver_that_sent_no_token_is_told_to_set_the_mode(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)

    err = ray_init_error("127.0.0.1:6380", _wrapped(REFUSED))

    assert str(err) == ("Ray at 127.0.0.1:6380: it requires a token and this driver sent none; "
                        f"expected RAY_AUTH_MODE=token and the cluster's token in {TOKEN_SOURCES}"
                        " (docs/deploy.md)")
    assert err.exit_code == 3


def test_a_driver_whose_token_is_refused_is_told_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "token")

    err = ray_init_error("127.0.0.1:6380", _wrapped(REFUSED))

    assert str(err).startswith("Ray at 127.0.0.1:6380: it refused this driver's token; "
                               "expected the cluster's token in RAY_AUTH_TOKEN")


@pytest.mark.parametrize("message, said", [
    ("Token authentication is enabled but no authentication token was found. Ensure that ...",
     "Token authentication is enabled but no authentication token was found"),
    ("RAY_AUTH_TOKEN_PATH is set but file cannot be opened or is empty: /x/t. Ensure that ...",
     "RAY_AUTH_TOKEN_PATH is set but file cannot be opened or is empty: /x/t"),
])
def test_a_driver_without_a_usable_token_hears_rays_reason_in_one_line(
        monkeypatch: pytest.MonkeyPatch, message: str, said: str) -> None:
    calls: list[dict[str, Any]] = []

    def init(**kwargs: Any) -> None:
        calls.append(kwargs)
        raise AuthenticationError(message)

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(cluster, "probe_address", lambda address: None)
    monkeypatch.setattr(cluster, "loopback_only_head", lambda address: False)

    with pytest.raises(ClusterError) as caught, ray_session("127.0.0.1:6380"):
        pass

    assert calls
    assert str(caught.value) == (f"Ray at 127.0.0.1:6380: {said}; expected the cluster's token "
                                 f"in {TOKEN_SOURCES} (docs/deploy.md)")
    assert "\n" not in str(caught.value)


def test_other_failures_keep_rays_first_line() -> None:
    err = ray_init_error("a local cluster", RuntimeError("Failed to start GCS.\nlots more"))
    assert str(err) == ("Ray at a local cluster could not be reached or started: "
                        "Failed to start GCS.")


# --- a head on 127.0.0.1 only ---------------------------------------------------------------

@pytest.mark.parametrize("address", ["auto", "ray://127.0.0.1:10001", "10.1.2.3:6379",
                                     "127.0.0.1:notaport"])
def test_only_a_loopback_host_port_is_ever_considered(
        monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    def never(*args: Any) -> str:
        raise AssertionError("must not look up the outbound address")

    monkeypatch.setattr(services, "get_node_ip_address", never)
    assert loopback_only_head(address) is False


def test_a_head_that_answers_on_loopback_only_is_joined_on_loopback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    # TEST-NET-2: nothing answers there, as nothing of a loopback-only head does on the
    # host's outbound address.
    monkeypatch.setattr(services, "get_node_ip_address", lambda: "198.51.100.7")
    monkeypatch.setattr(cluster, "REWRITTEN_PROBE_TIMEOUT_S", 0.5)
    with socket.socket() as head:
        head.bind(("127.0.0.1", 0))
        head.listen()
        port = head.getsockname()[1]

        assert loopback_only_head(f"127.0.0.1:{port}") is True
        assert loopback_only_head(f"localhost:{port}") is True


def test_rays_rewrite_is_left_alone_where_it_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    monkeypatch.setattr(services, "get_node_ip_address", lambda: "198.51.100.7")
    dialled: list[tuple[str, int]] = []

    class _Answer:
        def __enter__(self) -> _Answer:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    def connect(addr: tuple[str, int], timeout: float) -> _Answer:
        dialled.append(addr)
        return _Answer()

    monkeypatch.setattr(socket, "create_connection", connect)

    assert loopback_only_head("127.0.0.1:6380") is False
    assert dialled == [("198.51.100.7", 6380)]


def test_no_rewrite_to_avoid_when_ray_is_on_loopback_already(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    assert loopback_only_head("127.0.0.1:6380") is False
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    monkeypatch.setattr(services, "get_node_ip_address", lambda: "127.0.0.1")
    assert loopback_only_head("127.0.0.1:6380") is False


def test_ray_init_sees_loopback_for_such_a_head_and_the_switch_is_put_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    seen: list[bool] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.append(ray_constants.ENABLE_RAY_CLUSTER))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(cluster, "probe_address", lambda address: None)
    monkeypatch.setattr(cluster, "loopback_only_head", lambda address: True)

    with ray_session("127.0.0.1:6380"):
        assert ray_constants.ENABLE_RAY_CLUSTER is True

    assert seen == [False]
