"""``s43-ray smoke --isolation namespaces``: the cross-pod proof in real pods on one machine.

The store, the Ray head with the driver, and three worker nodes each run in a pod of their own
(network, mount and PID namespaces, a private tmpfs on /tmp), joined by a bridge in 198.18.0.0/24
with no way out. Runs where the machine allows pods (root, iproute2, util-linux, the kernel's
consent); skipped, with the reason, elsewhere. Each smoke runs in its own process, as a user runs
it, and must leave nothing behind.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import CliResult, run_subprocess

from s43_ray.pods.network import (
    NS_PREFIX,
    STATE_DIR,
    PodNetwork,
    list_netns,
    sweep_stale,
    unavailable,
)

WHY = unavailable()
pytestmark = pytest.mark.skipif(bool(WHY), reason=f"pods unavailable here: {WHY}")
SUBNET = ipaddress.ip_network("198.18.0.0/24")


def _smoke(*extra: str, timeout: float = 600, env: dict[str, str] | None = None
           ) -> CliResult:
    return run_subprocess(["smoke", "--isolation", "namespaces", "--json", *extra],
                          timeout=timeout, env=env)


def _ours() -> list[str]:
    return [n for n in list_netns() if n.startswith(NS_PREFIX)]


def _state() -> list[str]:
    return sorted(p.name for p in STATE_DIR.iterdir()) if STATE_DIR.is_dir() else []


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Any:
    before = (_ours(), _state())
    yield
    assert (_ours(), _state()) == before, "pods left behind"


def _assert_cross_pod_proof(s: dict[str, Any], result: CliResult) -> None:
    assert s["status"] == "passed" and s["isolation"] == "namespaces", s["reason"]
    assert s["cohort_count"] == s["expected"]
    # Every writer is a worker pod at its own address in the pods' subnet, never loopback.
    assert set(s["addresses"]) == set(s["members_by_node"])
    assert all(ipaddress.ip_address(a) in SUBNET for a in s["addresses"].values())
    assert len(set(s["addresses"].values())) == len(s["addresses"])
    assert s["gate_checked_foreign"] > 0
    # The old transport, each pod's literal /tmp: the gate pod lost exactly the others'.
    pod = s["pod_local"]
    assert pod["status"] == "failed" and 0 < pod["cohort_count"] < pod["expected"]
    pod_run = f"{s['run_id']}__pod-local"
    written = {e["member"]: e["node_id"] for e in result.named("s43_pred_persisted")
               if e["run_id"] == pod_run}
    assert sorted(m for m, node in written.items() if node != pod["gate_node"]) == \
        pod["missing"]


def test_pods_pass_over_s3_and_catch_the_pod_local_bug() -> None:
    # A host's own temp dir and proxy stay on the host: each pod has its /tmp, reaches no proxy.
    result = _smoke(env={"TMPDIR": "/var/tmp", "HTTP_PROXY": "http://127.0.0.1:9",
                         "HTTPS_PROXY": "http://127.0.0.1:9"})

    assert result.code == 0, result.stderr[-4000:]
    s = result.summary
    _assert_cross_pod_proof(s, result)
    assert s["nodes"] == 3 and s["writer_nodes"] == 3 and s["expected"] == 12
    assert s["faults"] == [] and not s["resumed"]
    assert "namespaces" in s["isolation_reason"] or "asked for" in s["isolation_reason"]
    outcome = result.named("s43_smoke_outcome")
    assert len(outcome) == 1 and outcome[0]["isolation"] == "namespaces"


def test_a_worker_pod_killed_mid_write_loses_nothing() -> None:
    result = _smoke("--kill-node", "--members-per-node", "3")

    assert result.code == 0, result.stderr[-4000:]
    s = result.summary
    _assert_cross_pod_proof(s, result)
    assert [(f["what"], f["struck"]) for f in s["faults"]] == [("kill worker pod worker-3",
                                                                   True)]
    assert s["killed_node"] and s["rescheduled"], s


def test_a_worker_cut_off_mid_write_loses_nothing() -> None:
    result = _smoke("--partition-node", "--members-per-node", "3")

    assert result.code == 0, result.stderr[-4000:]
    s = result.summary
    _assert_cross_pod_proof(s, result)
    assert [(f["what"], f["struck"]) for f in s["faults"]] == [
        ("partition worker pod worker-3", True)]
    assert s["killed_node"] and s["killed_node"] not in (s["gate_node"],)
    # What the cut pod had not finished was re-run on the others.
    assert s["rescheduled"], s


def test_a_store_cut_off_briefly_is_ridden_out_by_retries() -> None:
    result = _smoke("--partition-store", "4")

    assert result.code == 0, result.stderr[-4000:]
    s = result.summary
    _assert_cross_pod_proof(s, result)
    (fault,) = s["faults"]
    assert fault["what"] == "partition store for 4s" and fault["struck"]
    assert fault["healed_s"] > fault["at_s"]
    assert not s["resumed"] and s["s3"]["exit_code"] == 0


def test_a_store_cut_off_for_long_fails_fast_and_resume_completes_the_run() -> None:
    result = _smoke("--partition-store", "75", timeout=900)

    assert result.code == 0, result.stderr[-4000:]
    s = result.summary
    _assert_cross_pod_proof(s, result)
    assert s["resumed"], s
    # The first attempt stopped on the circuit (exit 3), naming what it had not persisted.
    circuit = [e for e in result.named("s43_store_circuit_open") if e["run_id"] == s["run_id"]]
    assert circuit, result.stderr[-4000:]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "hangup"])
def test_an_interrupt_tears_every_pod_down(sig: signal.Signals) -> None:
    exe = Path(sys.executable).parent / "s43-ray"
    proc = subprocess.Popen([str(exe), "smoke", "--isolation", "namespaces"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(_ours()) < 6 and time.monotonic() < deadline:  # bridge + 5 pods
            time.sleep(0.2)
        assert len(_ours()) >= 6, "the smoke never made its pods"
        time.sleep(2)  # the store and Ray are starting inside them
        t0 = time.monotonic()
        os.kill(proc.pid, sig)
        assert proc.wait(120) == 130
        assert time.monotonic() - t0 < 30  # the driver is stopped with its pod, not waited for
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def test_what_a_killed_owner_left_is_swept_by_the_next_one() -> None:
    code = ("import os, signal, time; from s43_ray.pods.network import PodNetwork\n"
            "net = PodNetwork(['a', 'b']); net.open(); print(net.tag, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    tag = proc.stdout.strip()
    assert proc.returncode == -signal.SIGKILL and tag
    left = [n for n in _ours() if n.startswith(f"{NS_PREFIX}{tag}-")]
    assert len(left) == 3  # its bridge and two pods: the namespaces outlive their owner

    removed = sweep_stale()

    assert sorted(removed) == sorted(left) and not [n for n in _ours() if tag in n]


def test_a_live_owners_pods_are_never_swept() -> None:
    with PodNetwork(["a"]) as net:
        assert sweep_stale() == [] and len(net.leftovers()) == 2
    assert net.leftovers() == []
