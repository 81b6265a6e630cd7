"""pods.network and pods.cluster without making pods: what the pause process runs, which host
folders a pod shares, and the environment its processes get."""

from __future__ import annotations

import os

import pytest

from s43_ray.pods import cluster
from s43_ray.pods.network import PodNetwork, pause_script


def test_a_pod_mounts_its_own_tmp_and_shm_and_says_ready() -> None:
    script = pause_script()
    assert script.index("tmpfs /tmp") < script.index("tmpfs /dev/shm") < script.index("ready")
    assert script.endswith("exec sleep infinity") and "--bind" not in script


def test_shared_folders_under_tmp_come_back_read_only_and_nothing_else() -> None:
    script = pause_script(["/tmp/ci"], "/run/s43-pods/t/host-tmp-head")
    steps = script.split(" && ")
    assert steps[0] == "mount --bind /tmp /run/s43-pods/t/host-tmp-head"
    assert "mount --bind /run/s43-pods/t/host-tmp-head/ci /tmp/ci" in steps
    assert "mount -o remount,bind,ro /tmp/ci" in steps
    assert steps.index("umount -l /run/s43-pods/t/host-tmp-head") < steps.index("echo ready")


def test_only_folders_under_tmp_are_shared() -> None:
    net = PodNetwork(["a"], shared=["/tmp/ci", "/work/main", "/tmpfoo", "/tmp/ci"])
    assert net.shared == ["/tmp/ci"]


def test_the_code_is_shared_only_when_it_lives_under_tmp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    assert cluster.code_under_tmp(["/tmp/ci/.venv", "/tmp/ci/s43_ray/..", "/usr/lib/python3.11",
                                   "", "/tmp"]) == ["/tmp/ci"]
    assert cluster.code_under_tmp(["/work/main", "/opt/venv"]) == []


def test_pod_processes_get_their_own_tmpdir_no_proxy_and_the_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in {"TMPDIR": "/var/tmp", "HTTP_PROXY": "http://p:1", "https_proxy": "x",
                       "RAY_TMPDIR": "/var/tmp/ray", "RAY_ADDRESS": "h:1"}.items():
        monkeypatch.setenv(var, value)

    env = cluster.pod_environment("t0k")

    assert env["TMPDIR"] == "/tmp" and env["RAY_AUTH_TOKEN"] == "t0k"
    assert not {"HTTP_PROXY", "https_proxy", "RAY_TMPDIR", "RAY_ADDRESS"} & set(env)
    assert env["RAY_grpc_client_keepalive_time_ms"] == "2000"
    assert env["PATH"] == os.environ["PATH"]
