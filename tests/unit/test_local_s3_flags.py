"""The embedded server's command line, without starting it: the admin's gRPC port where
``weed mini``'s own maintenance workers dial it (its HTTP port + 10000), else they retry
"connection refused" into weed.log for as long as the server runs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from s43_ray.stores import local_s3
from s43_ray.stores.local_s3 import _PORT_FLAGS, ADMIN_GRPC_OFFSET, LocalS3, weed_ports


def _flag(cmd: list[str], name: str) -> int:
    (value,) = [arg.split("=", 1)[1] for arg in cmd if arg.startswith(f"-{name}=")]
    return int(value)


def test_the_admins_grpc_port_is_its_http_port_plus_the_workers_offset() -> None:
    for _ in range(20):
        ports = weed_ports()

        assert len(ports) == len(_PORT_FLAGS) == len(set(ports))
        admin = ports[_PORT_FLAGS.index("admin.port")]
        assert ports[_PORT_FLAGS.index("admin.port.grpc")] == admin + ADMIN_GRPC_OFFSET == \
            admin + 10000
        assert all(0 < p < 65536 for p in ports)


def test_the_command_line_gives_every_port_and_the_pair(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(local_s3, "find_weed", lambda: "/bin/weed")
    ports = weed_ports()

    cmd = LocalS3(tmp_path).command(ports)

    assert cmd[:2] == ["/bin/weed", "mini"]
    assert [_flag(cmd, name) for name in _PORT_FLAGS] == ports
    assert _flag(cmd, "admin.port.grpc") == _flag(cmd, "admin.port") + 10000


class _FakeWeed:
    pid = 4242
    returncode = 0

    def poll(self) -> None:
        return None

    def terminate(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> int:
        return 0


def test_a_server_started_without_ports_gets_the_pair(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    launched: list[list[str]] = []

    def popen(cmd: list[str], **kwargs: Any) -> _FakeWeed:
        launched.append(cmd)
        return _FakeWeed()

    monkeypatch.setattr(local_s3, "find_weed", lambda: "/bin/weed")
    monkeypatch.setattr(subprocess, "Popen", popen)
    server = LocalS3(tmp_path, wait=False)

    server.start()
    server.stop()

    (cmd,) = launched
    assert _flag(cmd, "admin.port.grpc") == _flag(cmd, "admin.port") + ADMIN_GRPC_OFFSET
    assert server.ports == [_flag(cmd, name) for name in _PORT_FLAGS]
