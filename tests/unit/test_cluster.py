"""How the driver reaches Ray, without starting it: the arguments given to ``ray.init``."""

from __future__ import annotations

from typing import Any

import pytest
import ray

from s43_ray.cluster import LOCAL_OBJECT_STORE_BYTES, probe_address, ray_session
from s43_ray.errors import ClusterError, InputError
from s43_ray.stores.local_s3 import free_ports


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    return calls


def test_without_an_address_a_new_local_cluster_is_started_not_a_running_one_joined(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _capture(monkeypatch)

    with ray_session(None, num_cpus=1):
        pass

    (kwargs,) = calls
    assert kwargs["address"] == "local"  # never the `ray start` cluster of this machine
    assert kwargs["num_cpus"] == 1
    assert kwargs["object_store_memory"] == LOCAL_OBJECT_STORE_BYTES
    assert kwargs["include_dashboard"] is False


def test_with_an_address_the_cluster_is_joined_without_local_resources(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _capture(monkeypatch)

    with ray_session("auto"):
        pass

    (kwargs,) = calls
    assert kwargs["address"] == "auto"
    assert "object_store_memory" not in kwargs and "num_cpus" not in kwargs


def test_an_address_nobody_listens_on_is_unreachable_at_once() -> None:
    (port,) = free_ports(1)
    with pytest.raises(ClusterError, match=f"Ray at 127.0.0.1:{port} is unreachable"):
        probe_address(f"127.0.0.1:{port}", timeout=2)


@pytest.mark.parametrize("address", ["nohostport", "host:", "ray://:80"])
def test_a_malformed_address_is_bad_input(address: str) -> None:
    with pytest.raises(InputError, match="expected HOST:PORT"):
        probe_address(address)
