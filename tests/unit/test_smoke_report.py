"""smoke_report.compare: the smoke's verdict. A fault that did not strike, or a pod-local run
that was not caught, never passes."""

from __future__ import annotations

from typing import Any

import pytest

from s43_ray.smoke_report import SmokeConfig, compare
from s43_ray.summary import Summary

MEMBERS = [f"m{i:05d}" for i in range(6)]
NODES = ["n1", "n2", "n3"]
ASSIGNED = {m: NODES[i % 3] for i, m in enumerate(MEMBERS)}


def _s3(status: str = "passed") -> Summary:
    missing = [] if status == "passed" else MEMBERS[:1]
    return Summary(run_id="r", status=status, expected=6, cohort_count=6 - len(missing),
                   missing=missing, invalid={}, unexpected=[], gate_node="n1")


def _pod() -> tuple[Summary, dict[str, str]]:
    written = dict(ASSIGNED)
    foreign = sorted(m for m, n in written.items() if n != "n1")
    return Summary(run_id="r__pod-local", status="failed", expected=6, cohort_count=2,
                   missing=foreign, invalid={}, unexpected=[], gate_node="n1"), written


def _compare(cfg: SmokeConfig, *, killed: str | None = None,
             faults: list[dict[str, Any]] | None = None, s3: Summary | None = None) -> Any:
    pod, pod_written = _pod()
    written = {m: (n if n != killed else "n2") for m, n in ASSIGNED.items()}
    return compare(cfg, "r", s3 or _s3(), ASSIGNED, written, killed, pod, pod_written,
                   faults=faults or [])


def test_the_cross_pod_proof_passes() -> None:
    report = _compare(SmokeConfig())
    assert report.status == "passed" and report.exit_code == 0, report.reason


@pytest.mark.parametrize("cfg", [SmokeConfig(partition_node=True), SmokeConfig(kill_node=True)],
                         ids=["partition", "kill"])
def test_a_node_fault_that_never_struck_fails_the_smoke(cfg: SmokeConfig) -> None:
    report = _compare(cfg, killed=None)
    assert report.status == "failed" and "no node was lost" in report.reason


def test_a_node_fault_that_struck_passes_and_names_the_members_moved() -> None:
    report = _compare(SmokeConfig(partition_node=True), killed="n3",
                      faults=[{"what": "partition worker pod worker-3", "role": "worker-3",
                               "at_s": 1.0, "struck": True}])
    assert report.status == "passed", report.reason
    assert report.rescheduled == ["m00002", "m00005"] and report.killed_node == "n3"


@pytest.mark.parametrize("faults", [[], [{"what": "partition store for 5s", "role": "store",
                                          "at_s": 1.0, "struck": False}]],
                         ids=["never-cut", "never-healed"])
def test_a_store_cut_that_never_struck_and_healed_fails_the_smoke(
        faults: list[dict[str, Any]]) -> None:
    report = _compare(SmokeConfig(partition_store_s=5), faults=faults)
    assert report.status == "failed" and "store was never cut" in report.reason


def test_a_failed_s3_run_fails_the_smoke_whatever_the_pod_local_run_did() -> None:
    report = _compare(SmokeConfig(), s3=_s3("failed"))
    assert report.status == "failed" and "the S3 run failed" in report.reason
