"""``s43-ray smoke``: the cross-pod proof on one machine.

It starts a Ray cluster of a head plus N worker nodes (each its own raylet, standing in for a
pod), then runs the same cohort twice:

1. through S3: members are spread over the worker nodes, and the gate runs on one worker node,
   so it checks members that other nodes wrote. It must pass.
2. through a **pod-local** ``file://`` store: each node has its own folder, as a pod has its own
   ``/tmp``. This is the original bug: the gate sees only its own node's files. It must fail, with
   exactly the members written by the other nodes named as missing.

Exit 0 only when both happen. ``--kill-node`` also removes one worker node while members are
being written; Ray re-runs its tasks elsewhere and the S3 run must still pass with nothing lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from . import events as ev
from .cluster import keep_every_worker_log_line
from .codec import DEFAULT_CODEC, Codec
from .config import AnyStoreConfig, FileStoreConfig
from .driver import RunConfig, run_cohort
from .errors import EXIT_GATE_FAILED, EXIT_PASSED, EXIT_UNREACHABLE, ClusterError
from .keys import member_names, new_run_id
from .predict import DEFAULT_PREDICTOR, default_predictor
from .progress import Progress
from .summary import Summary
from .task import PersistOutcome, PredictionRef

log = logging.getLogger("s43_ray.smoke")

DEFAULT_NODES = 3
MAX_NODES = 8
MEMBERS_PER_NODE = 4
SMOKE_ROWS = 2_000
# Each node is a raylet with one CPU and the smallest object store Ray accepts: it only ever
# holds references (about 300 MiB of memory a node on this kind of machine).
NODE_OBJECT_STORE_BYTES = 80 * 1024**2
# The environment variable naming each node's own folder: the pod-local store's root.
POD_DIR_ENV = "S43_SMOKE_POD_DIR"
# With --kill-node each member takes at least this long, so the kill lands mid-write.
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
                 f"  cluster: head + {self.nodes} worker nodes; members written from "
                 f"{self.writer_nodes} nodes; gate on {self.gate_node[:12]}, which wrote none "
                 f"of {self.gate_checked_foreign} members it checked",
                 f"  s3 ({self.s3.get('store')}): {self.cohort_count}/{self.expected} "
                 f"{self.s3.get('status')}, run {self.run_id}",
                 f"  pod-local (file:// on each node's own folder): "
                 f"{self.pod_local.get('cohort_count')}/{self.pod_local.get('expected')} "
                 f"{self.pod_local.get('status')}"]
        if self.killed_node:
            lines.append(f"  killed node {self.killed_node[:12]} mid-write; "
                         f"{len(self.rescheduled)} members re-run on other nodes")
        lines.append(f"  wall {self.wall_seconds:.1f}s")
        return "\n".join(lines)


@contextlib.contextmanager
def _loopback_ray() -> Iterator[None]:
    """Keep every Ray listener of the smoke's cluster on 127.0.0.1: unless this switch is off,
    Ray replaces 127.0.0.1 with the host's outbound address."""
    from ray._private import ray_constants  # read at import time; the CLI imported ray already

    previous = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        with _env(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, "0"):  # for the raylets it spawns
            yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous


class LocalCluster:
    """A head (no CPUs: it runs only the driver) plus worker nodes, each its own raylet."""

    def __init__(self, nodes: int, work_dir: str) -> None:
        self.nodes = nodes
        self.work_dir = work_dir
        self.workers: list[Any] = []  # ray._private.node.Node
        self.pod_dirs: dict[str, str] = {}  # node id -> that node's own folder
        self._cluster: Any = None

    def start(self) -> None:
        from ray.cluster_utils import Cluster

        os.makedirs("/tmp/ray", exist_ok=True)  # Ray's session folder parent
        self._cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "object_store_memory": NODE_OBJECT_STORE_BYTES,
            "include_dashboard": False, "node_ip_address": "127.0.0.1"})
        for i in range(self.nodes):
            pod_dir = os.path.join(self.work_dir, f"pod-{i}")
            os.makedirs(pod_dir)
            node = self._cluster.add_node(
                num_cpus=1, object_store_memory=NODE_OBJECT_STORE_BYTES,
                node_ip_address="127.0.0.1", env_vars={POD_DIR_ENV: pod_dir})
            self.workers.append(node)
            self.pod_dirs[node.node_id] = pod_dir
        self._cluster.wait_for_nodes()

    @property
    def address(self) -> str:
        return str(self._cluster.address)

    @property
    def node_ids(self) -> list[str]:
        return [n.node_id for n in self.workers]

    def remove(self, node_id: str) -> None:
        node = next(n for n in self.workers if n.node_id == node_id)
        self._cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)

    def shutdown(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = None


@contextlib.contextmanager
def smoke_cluster(nodes: int, work_dir: str) -> Iterator[LocalCluster]:
    """Start the cluster and connect the driver to it; stop everything it started on exit."""
    if ray.is_initialized():
        raise ClusterError("smoke needs its own Ray cluster, but this process is already "
                           "connected to one; expected a fresh process")
    cluster = LocalCluster(nodes, work_dir)
    on_main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if on_main else None
    try:
        with _loopback_ray():
            keep_every_worker_log_line()
            try:
                cluster.start()
                ray.init(address=cluster.address, logging_level=logging.WARNING,
                         log_to_driver=True)
            except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
                raise ClusterError(f"smoke cluster of {nodes} nodes could not start: "
                                   f"{str(exc).splitlines()[0] if str(exc) else exc!r}"
                                   ) from exc
            finally:
                if on_main and sigterm is not None:
                    signal.signal(signal.SIGTERM, sigterm)  # see cluster.ray_session
            yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _affinity(node_id: str, *, soft: bool) -> dict[str, Any]:
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=soft)}


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _run_on(cluster: LocalCluster, cfg: SmokeConfig, run_id: str, members: tuple[str, ...],
            store_cfg: AnyStoreConfig, events: ev.EventLog, *, predictor: str,
            progress: Progress | None = None, kill: bool = False,
            ) -> tuple[Summary, dict[str, str], dict[str, str], str | None]:
    """One cohort over the cluster: members round-robin over the worker nodes (soft affinity,
    so Ray may re-run them elsewhere), the gate pinned to the first worker node.
    Returns the summary, member -> preferred node, member -> node that wrote it, killed node."""
    nodes = cluster.node_ids
    gate_node = nodes[0]
    assigned = {m: nodes[i % len(nodes)] for i, m in enumerate(members)}
    written: dict[str, str] = {}
    killed: list[str] = []
    victim = nodes[-1]

    def on_outcome(member: str, outcome: PersistOutcome) -> None:
        if isinstance(outcome, PredictionRef):
            written[member] = outcome.node_id
        # Remove the victim as soon as any member is in, while the victim still has work.
        if kill and not killed and any(assigned[m] == victim for m in members
                                       if m not in written and m != member):
            log.warning("smoke: removing worker node %s while members are being written",
                        victim)
            cluster.remove(victim)
            killed.append(victim)

    run_cfg = RunConfig(
        run_id=run_id, members=members, rows=cfg.rows, codec=cfg.codec, predictor=predictor,
        address=cluster.address, member_options=lambda m: _affinity(assigned[m], soft=True),
        gate_options=_affinity(gate_node, soft=False), on_outcome=on_outcome,
        stall_timeout=120.0, gate_timeout=300.0)
    run_events = events.for_run(run_id, before_write=progress.clear if progress else None)
    summary = run_cohort(run_cfg, store_cfg, run_events, progress)
    return summary, assigned, written, (killed[0] if killed else None)


def run_smoke(cfg: SmokeConfig, s3_cfg: AnyStoreConfig, events: ev.EventLog,
              work_dir: str | None = None) -> SmokeReport:
    """Start the cluster, run the cohort through S3 and through pod-local folders, compare."""
    t0 = time.perf_counter()
    own_dir = work_dir is None
    work = work_dir or tempfile.mkdtemp(prefix="s43-smoke-")
    run_id = cfg.run_id or new_run_id()
    members = tuple(member_names(cfg.nodes * cfg.members_per_node))
    predictor = f"{__name__}:slow_predictor" if cfg.kill_node else DEFAULT_PREDICTOR
    try:
        with smoke_cluster(cfg.nodes, work) as cluster:
            s3, assigned, written, killed = _run_on(
                cluster, cfg, run_id, members, s3_cfg, events, predictor=predictor,
                progress=Progress(len(members)), kill=cfg.kill_node)
            # The same cohort over each node's own folder, as the old pipeline's pod /tmp.
            driver_dir = os.path.join(work, "driver")
            os.makedirs(driver_dir)
            with _env(POD_DIR_ENV, driver_dir):
                pod, _, pod_written, _ = _run_on(
                    cluster, cfg, f"{run_id}__pod-local", members,
                    FileStoreConfig(root=f"${POD_DIR_ENV}"), events,
                    predictor=DEFAULT_PREDICTOR)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
    report = _compare(cfg, run_id, s3, assigned, written, killed, pod, pod_written)
    report.wall_seconds = round(time.perf_counter() - t0, 3)
    events.for_run(run_id).emit(ev.SMOKE_OUTCOME, "info" if report.status == "passed" else "error",
                status=report.status, reason=report.reason, nodes=report.nodes,
                writer_nodes=report.writer_nodes, gate_node=report.gate_node,
                cohort_count=report.cohort_count, expected=report.expected,
                pod_local_cohort_count=report.pod_local["cohort_count"],
                pod_local_expected=report.pod_local["expected"], killed_node=killed,
                error_class="" if report.status == "passed" else "smoke_failed")
    return report


def _compare(cfg: SmokeConfig, run_id: str, s3: Summary, assigned: Mapping[str, str],
             written: Mapping[str, str], killed: str | None, pod: Summary,
             pod_written: Mapping[str, str]) -> SmokeReport:
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
    if cfg.kill_node and killed is None:
        problems.append("no node was removed: every member finished before the kill")
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
        killed_node=killed, rescheduled=rescheduled,
        infra_error=s3.exit_code == EXIT_UNREACHABLE)
