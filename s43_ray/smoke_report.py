"""What the smoke proves, whichever way it isolates its pods: its settings
(:class:`SmokeConfig`), the verdict over its two runs (:func:`compare`) and the report the CLI
prints (:class:`SmokeReport`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .codec import DEFAULT_CODEC, Codec
from .errors import EXIT_GATE_FAILED, EXIT_PASSED, EXIT_UNREACHABLE
from .predict import default_predictor
from .summary import Summary

DEFAULT_NODES = 3
MAX_NODES = 8
MEMBERS_PER_NODE = 4
SMOKE_ROWS = 2_000

# Each node is a raylet with one CPU and the smallest object store Ray accepts: it only ever
# holds references (about 300 MiB of memory a node on this kind of machine).
NODE_OBJECT_STORE_BYTES = 80 * 1024**2
# How the smoke's pods are kept apart: "namespaces" (each its own network, /tmp and PIDs;
# s43_ray.pods) or "folders" (one Ray node per folder on this machine's loopback).
Isolation = Literal["namespaces", "folders"]
ISOLATIONS: tuple[Isolation, ...] = ("namespaces", "folders")
# What the pod-local store is, by isolation.
POD_LOCAL: dict[Isolation, str] = {"namespaces": "file:///tmp, each pod's own tmpfs",
                                   "folders": "file:// on each node's own folder"}
# With a fault each member takes at least this long, so the fault lands mid-write.
SLOW_MEMBER_SECONDS = 1.0


def slow_predictor(run_id: str, member: str, rows: int) -> dict[str, np.ndarray]:
    """The default predictor, made to take a second, so a node can be removed mid-cohort."""
    time.sleep(SLOW_MEMBER_SECONDS)
    return default_predictor(run_id, member, rows)


@dataclass(frozen=True)
class SmokeConfig:
    nodes: int = DEFAULT_NODES
    members_per_node: int = MEMBERS_PER_NODE
    rows: int = SMOKE_ROWS
    codec: Codec = DEFAULT_CODEC
    kill_node: bool = False
    run_id: str | None = None  # the S3 run's id; default: a fresh one
    isolation: Isolation | None = None  # None: namespaces where the machine allows, else folders
    partition_node: bool = False  # namespaces: cut a worker's link mid-write
    partition_store_s: float = 0.0  # namespaces: cut the store's link this long mid-run

    @property
    def faulty(self) -> bool:
        return self.kill_node or self.partition_node or self.partition_store_s > 0


@dataclass
class SmokeReport:
    """What the smoke proved; the CLI prints it like a run summary."""

    status: str  # passed | failed
    reason: str
    nodes: int
    writer_nodes: int
    members_by_node: dict[str, int]
    gate_node: str
    gate_checked_foreign: int  # members the gate checked that its node did not write
    run_id: str
    cohort_count: int
    expected: int
    s3: dict[str, Any]
    pod_local: dict[str, Any]
    killed_node: str | None = None
    rescheduled: list[str] = field(default_factory=list)  # members moved off the killed node
    wall_seconds: float = 0.0
    infra_error: bool = False
    isolation: Isolation = "folders"
    isolation_reason: str = ""  # why this isolation ran (asked for, or what the machine lacks)
    addresses: dict[str, str] = field(default_factory=dict)  # writer node -> its own address
    faults: list[dict[str, Any]] = field(default_factory=list)  # what was cut, when, healed
    resumed: bool = False  # the S3 run failed with the store cut and --resume completed it

    @property
    def exit_code(self) -> int:
        if self.status == "passed":
            return EXIT_PASSED
        return EXIT_UNREACHABLE if self.infra_error else EXIT_GATE_FAILED

    def to_record(self) -> dict[str, Any]:
        return {"command": "smoke", **self.__dict__, "exit_code": self.exit_code}

    def to_json(self) -> str:
        return json.dumps(self.to_record(), sort_keys=True)

    def human(self) -> str:
        lines = [f"smoke {self.status.upper()}: {self.reason}",
                 f"  isolation: {self.isolation} ({self.isolation_reason})",
                 f"  cluster: head + {self.nodes} worker nodes; members written from "
                 f"{self.writer_nodes} nodes; gate on {self.gate_node[:12]}, which wrote none "
                 f"of {self.gate_checked_foreign} members it checked",
                 f"  s3 ({self.s3.get('store')}): {self.cohort_count}/{self.expected} "
                 f"{self.s3.get('status')}, run {self.run_id}",
                 f"  pod-local ({POD_LOCAL[self.isolation]}): "
                 f"{self.pod_local.get('cohort_count')}/{self.pod_local.get('expected')} "
                 f"{self.pod_local.get('status')}"]
        if self.addresses:
            lines.append("  writers: " + ", ".join(f"{n[:12]} at {a}"
                                                   for n, a in sorted(self.addresses.items())))
        if self.killed_node:
            lines.append(f"  lost node {self.killed_node[:12]} mid-write; "
                         f"{len(self.rescheduled)} members re-run on other nodes")
        for fault in self.faults:
            lines.append(f"  fault: {fault.get('what')} at +{fault.get('at_s', 0):.1f}s"
                         + (f", healed at +{fault['healed_s']:.1f}s" if 'healed_s' in fault
                            else ""))
        if self.resumed:
            lines.append("  the S3 run failed while the store was cut; --resume completed it")
        lines.append(f"  wall {self.wall_seconds:.1f}s")
        return "\n".join(lines)


def compare(cfg: SmokeConfig, run_id: str, s3: Summary, assigned: Mapping[str, str],
             written: Mapping[str, str], killed: str | None, pod: Summary,
             pod_written: Mapping[str, str], *,
             faults: Sequence[Mapping[str, Any]] = ()) -> SmokeReport:
    """The smoke's verdict. ``killed``: the node lost mid-write (killed or cut off), None when
    no node fault struck; ``faults``: what the pods' driver did, each marked ``struck``."""
    by_node: dict[str, int] = {}
    for node in written.values():
        by_node[node] = by_node.get(node, 0) + 1
    gate_node = s3.gate_node
    foreign = sum(1 for node in written.values() if node != gate_node)
    # The pod-local gate must find exactly what its own node wrote, and name every other member.
    pod_gate = pod.gate_node
    pod_own = sorted(m for m, node in pod_written.items() if node == pod_gate)
    pod_foreign = sorted(m for m, node in pod_written.items() if node != pod_gate)
    problems = []
    if s3.status != "passed":
        problems.append(f"the S3 run failed: {s3.reason}")
    # Every worker node writes some (the killed one may have been removed before it could).
    idle = sorted(set(assigned.values()) - set(by_node) - ({killed} if killed else set()))
    if len(by_node) < 2 or idle:
        problems.append(f"members were written from {len(by_node)} node(s), none from "
                        f"{[n[:12] for n in idle]}; expected every worker node to write some")
    if foreign == 0:
        problems.append("the gate's node wrote every member; expected it to check others'")
    if pod.status == "passed":
        problems.append("the pod-local transport passed; expected it to lose members")
    elif sorted(pod.missing) != pod_foreign or pod.cohort_count != len(pod_own):
        problems.append(f"the pod-local gate reported missing {pod.missing[:10]}; expected "
                        f"exactly the {len(pod_foreign)} members other nodes wrote")
    if (cfg.kill_node or cfg.partition_node) and killed is None:
        problems.append("no node was lost: every member finished before the fault, or the "
                        "node lived on")
    if cfg.partition_store_s > 0 and not any(f.get("role") == "store" and f.get("struck")
                                             for f in faults):
        problems.append("the store was never cut and healed: every member finished before "
                        "the fault")
    rescheduled = sorted(m for m, node in written.items() if killed and assigned[m] == killed
                         and node != killed)
    if problems:
        reason = "; ".join(problems)
    else:
        reason = (f"S3 transport passed {s3.cohort_count}/{s3.expected} from {len(by_node)} "
                  f"nodes; pod-local transport caught failing with {pod.cohort_count}/"
                  f"{pod.expected} (missing {len(pod.missing)})")
        if killed:
            reason += f"; node {killed[:12]} removed mid-run, nothing lost"
    s3_record = {**s3.to_dict(), "exit_code": s3.exit_code}
    return SmokeReport(
        status="failed" if problems else "passed", reason=reason, nodes=cfg.nodes,
        writer_nodes=len(by_node), members_by_node=by_node, gate_node=gate_node,
        gate_checked_foreign=foreign, run_id=run_id, cohort_count=s3.cohort_count,
        expected=s3.expected,
        s3={k: s3_record[k] for k in ("status", "store", "run_id", "missing", "invalid",
                                      "unexpected", "persist_failed", "reason", "gate_key",
                                      "wall_seconds", "s3_retries", "task_retries",
                                      "exit_code")},
        pod_local={"status": pod.status, "cohort_count": pod.cohort_count,
                   "expected": pod.expected, "missing": pod.missing,
                   "gate_node": pod_gate, "reason": pod.reason},
        killed_node=killed, rescheduled=rescheduled, faults=[dict(f) for f in faults],
        infra_error=s3.exit_code == EXIT_UNREACHABLE)
