"""``s43-ray smoke``: the cross-pod proof on a real multi-node Ray cluster and real S3.

Each smoke runs in its own process (as a user runs it): it starts a head plus worker nodes,
each its own raylet, and must stop all of them. The S3 store is the session's SeaweedFS.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from helpers import CliResult, keys_under, run_subprocess

from s43_ray.config import StoreConfig
from s43_ray.keys import RunLayout, member_names
from s43_ray.stores.s3 import S3Store

pytestmark = pytest.mark.s3


def _smoke(store_cfg: StoreConfig, *extra: str) -> CliResult:
    return run_subprocess(["smoke", "--store", store_cfg.url, "--endpoint-url",
                           str(store_cfg.endpoint_url), "--json", *extra], timeout=240)


def _assert_run_objects(store: S3Store, store_cfg: StoreConfig, run_id: str,
                        members: list[str]) -> None:
    layout = RunLayout(store_cfg.prefix, run_id)
    assert keys_under(store, layout.run_prefix) == sorted(
        [layout.member_key(m, "arrow") for m in members] + [layout.gate_key,
                                                            layout.manifest_key])


def _assert_pod_local_lost_the_foreign_members(summary: dict[str, Any], result: CliResult
                                               ) -> None:
    pod = summary["pod_local"]
    assert pod["status"] == "failed"
    assert pod["expected"] == summary["expected"]
    assert 0 < pod["cohort_count"] < pod["expected"]
    assert len(pod["missing"]) == pod["expected"] - pod["cohort_count"]
    # The pod-local gate ran on one node and named exactly what the other nodes wrote.
    pod_run = f"{summary['run_id']}__pod-local"
    written = {e["member"]: e["node_id"] for e in result.named("s43_pred_persisted")
               if e["run_id"] == pod_run}
    assert sorted(m for m, node in written.items() if node != pod["gate_node"]) == \
        pod["missing"]
    gate = [e for e in result.named("s43_gate_outcome") if e["run_id"] == pod_run]
    assert gate and gate[0]["severity"] == "error" and gate[0]["shortfall"] == len(pod["missing"])


def test_smoke_passes_over_s3_and_catches_the_pod_local_bug(store_cfg: StoreConfig,
                                                           store: S3Store) -> None:
    result = _smoke(store_cfg, "--nodes", "3")
    assert result.code == 0, result.stderr[-3000:]
    s = result.summary
    assert s["status"] == "passed" and s["command"] == "smoke"
    assert s["nodes"] == 3 and s["cohort_count"] == s["expected"] == 12
    # Members written from every worker node, and the gate checked members it did not write.
    assert s["writer_nodes"] == 3 and sum(s["members_by_node"].values()) == 12
    assert s["gate_node"] in s["members_by_node"]
    assert s["gate_checked_foreign"] == 12 - s["members_by_node"][s["gate_node"]] > 0
    _assert_pod_local_lost_the_foreign_members(s, result)
    # The S3 run's objects really are in the store; the pod-local run wrote nothing to S3.
    _assert_run_objects(store, store_cfg, s["run_id"], member_names(12))
    assert keys_under(store, RunLayout(store_cfg.prefix, f"{s['run_id']}__pod-local")
                      .run_prefix) == []
    outcome = result.named("s43_smoke_outcome")
    assert len(outcome) == 1 and outcome[0]["status"] == "passed"
    assert outcome[0]["severity"] == "info" and outcome[0]["writer_nodes"] == 3
    # Every persisted S3 member came from a worker node, never the head (no CPUs there).
    s3_writers = Counter(e["node_id"] for e in result.named("s43_pred_persisted")
                         if e["run_id"] == s["run_id"])
    assert dict(s3_writers) == s["members_by_node"]


def test_smoke_survives_a_node_removed_mid_write(store_cfg: StoreConfig, store: S3Store
                                                 ) -> None:
    result = _smoke(store_cfg, "--kill-node", "--members-per-node", "3")
    assert result.code == 0, result.stderr[-3000:]
    s = result.summary
    assert s["status"] == "passed"
    killed = s["killed_node"]
    assert killed and killed != s["gate_node"]
    assert s["cohort_count"] == s["expected"] == 9
    assert s["s3"]["missing"] == [] and s["s3"]["invalid"] == {}
    assert s["s3"]["persist_failed"] == {}
    # The killed node had work left: Ray re-ran it on the surviving nodes, nothing was lost.
    assert s["rescheduled"], s
    survivors = set(s["members_by_node"]) - {killed}
    rerun_on = {e["member"]: e["node_id"] for e in result.named("s43_pred_persisted")
                if e["run_id"] == s["run_id"]}
    assert all(rerun_on[m] in survivors for m in s["rescheduled"])
    assert "removing worker node" in result.stderr
    _assert_run_objects(store, store_cfg, s["run_id"], member_names(9))
    _assert_pod_local_lost_the_foreign_members(s, result)


def test_smoke_refuses_a_file_store(tmp_path: Any) -> None:
    result = run_subprocess(["smoke", "--store", f"file://{tmp_path}", "--json"])
    assert result.code == 2
    assert "expected an S3 store" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_smoke_needs_at_least_three_worker_nodes() -> None:
    result = run_subprocess(["smoke", "--nodes", "2"])
    assert result.code == 2
    assert "nodes 2 is out of range; expected 3..8" in result.stderr
