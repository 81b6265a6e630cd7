"""``s43-ray smoke``: the cross-pod proof on one machine.

Two isolations (:func:`choose_isolation`): ``namespaces`` (the default where the machine allows
it) runs the store, the Ray head with the driver, and each worker node in a pod of its own,
with its own network, ``/tmp`` and processes (:mod:`s43_ray.pods`); ``folders`` runs the nodes
on this machine's loopback, each with a folder standing in for its ``/tmp``. Either way it
starts a Ray cluster of a head plus N worker nodes, then runs the same cohort twice:

1. through S3: members are spread over the worker nodes, and the gate runs on one worker node,
   so it checks members that other nodes wrote. It must pass.
2. through a **pod-local** ``file://`` store: each node has its own folder, as a pod has its own
   ``/tmp``. This is the original bug: the gate sees only its own node's files. It must fail, with
   exactly the members written by the other nodes named as missing.

Exit 0 only when both happen. ``--kill-node`` also removes one worker node while members are
being written; Ray re-runs its tasks elsewhere and the S3 run must still pass with nothing lost.
In pods, ``--partition-node`` cuts a worker's link instead, and ``--partition-store S`` cuts
the store's for S seconds (retries ride it out, or ``--resume`` completes the run).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import ray

from . import events as ev
from .cluster import keep_every_worker_log_line, loopback_ray, node_affinity, scoped_env
from .config import AnyStoreConfig, FileStoreConfig
from .driver import RunConfig, run_cohort
from .errors import ClusterError, InputError
from .keys import member_names, new_run_id
from .pods.cluster import run_in_pods
from .pods.network import unavailable
from .predict import DEFAULT_PREDICTOR
from .progress import Progress
from .smoke_report import NODE_OBJECT_STORE_BYTES, Isolation, SmokeConfig, SmokeReport, compare
from .summary import Summary
from .task import PersistOutcome, PredictionRef

log = logging.getLogger("s43_ray.smoke")

# The environment variable naming each node's own folder: the pod-local store's root.
POD_DIR_ENV = "S43_SMOKE_POD_DIR"


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
        with loopback_ray(spawned=True):
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
        address=cluster.address, member_options=lambda m: node_affinity(assigned[m], soft=True),
        gate_options=node_affinity(gate_node, soft=False), on_outcome=on_outcome,
        stall_timeout=120.0, gate_timeout=300.0)
    run_events = events.for_run(run_id, before_write=progress.clear if progress else None)
    summary = run_cohort(run_cfg, store_cfg, run_events, progress)
    return summary, assigned, written, (killed[0] if killed else None)


def run_smoke(cfg: SmokeConfig, s3_cfg: AnyStoreConfig, events: ev.EventLog,
              work_dir: str | None = None, reason: str = "") -> SmokeReport:
    """Start the cluster, run the cohort through S3 and through pod-local folders, compare."""
    t0 = time.perf_counter()
    own_dir = work_dir is None
    work = work_dir or tempfile.mkdtemp(prefix="s43-smoke-")
    run_id = cfg.run_id or new_run_id()
    members = tuple(member_names(cfg.nodes * cfg.members_per_node))
    predictor = f"{SmokeConfig.__module__}:slow_predictor" if cfg.kill_node else \
        DEFAULT_PREDICTOR
    try:
        with smoke_cluster(cfg.nodes, work) as cluster:
            s3, assigned, written, killed = _run_on(
                cluster, cfg, run_id, members, s3_cfg, events, predictor=predictor,
                progress=Progress(len(members)), kill=cfg.kill_node)
            # The same cohort over each node's own folder, as the old pipeline's pod /tmp.
            driver_dir = os.path.join(work, "driver")
            os.makedirs(driver_dir)
            with scoped_env(POD_DIR_ENV, driver_dir):
                pod, _, pod_written, _ = _run_on(
                    cluster, cfg, f"{run_id}__pod-local", members,
                    FileStoreConfig(root=f"${POD_DIR_ENV}"), events,
                    predictor=DEFAULT_PREDICTOR)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
    report = compare(cfg, run_id, s3, assigned, written, killed, pod, pod_written)
    report.isolation, report.isolation_reason = "folders", reason
    return _outcome(report, events, t0)


def run_smoke_in_pods(cfg: SmokeConfig, events: ev.EventLog, reason: str = "") -> SmokeReport:
    """The smoke in pods of their own (:mod:`s43_ray.pods`): its own store, Ray head and worker
    nodes, each with its own network, ``/tmp`` and processes."""
    t0 = time.perf_counter()
    run_id = cfg.run_id or new_run_id()
    report = run_in_pods(cfg, run_id, member_names(cfg.nodes * cfg.members_per_node),
                         err=events.stream, events_level=ev.SEVERITIES[events.min_level])
    report.isolation_reason = reason
    return _outcome(report, events, t0)


def choose_isolation(asked: Isolation | None, *, store_given: bool) -> tuple[Isolation, str]:
    """The isolation to run and why: what was asked for, else namespaces where the machine
    allows (and no --store names a store the pods could not reach), else folders."""
    if asked == "folders":
        return "folders", "asked for (--isolation folders)"
    problem = unavailable()
    if asked == "namespaces":
        if problem:
            raise InputError(f"--isolation namespaces cannot run here: {problem}; expected "
                             "root with iproute2 and util-linux, or --isolation folders")
        if store_given:
            raise InputError("--isolation namespaces runs its own store in a pod, which "
                             "reaches nothing outside; expected no --store (or --isolation "
                             "folders)")
        return "namespaces", "asked for (--isolation namespaces)"
    if problem:
        return "folders", f"namespaces unavailable: {problem}"
    if store_given:
        return "folders", "a --store was given, which the pods could not reach"
    return "namespaces", "the machine allows pods (root, network and mount namespaces)"


def _outcome(report: SmokeReport, events: ev.EventLog, t0: float) -> SmokeReport:
    report.wall_seconds = round(time.perf_counter() - t0, 3)
    events.for_run(report.run_id).emit(
        ev.SMOKE_OUTCOME, "info" if report.status == "passed" else "error",
        status=report.status, reason=report.reason, nodes=report.nodes,
        writer_nodes=report.writer_nodes, gate_node=report.gate_node,
        cohort_count=report.cohort_count, expected=report.expected,
        pod_local_cohort_count=report.pod_local["cohort_count"],
        pod_local_expected=report.pod_local["expected"], killed_node=report.killed_node,
        isolation=report.isolation, faults=len(report.faults), resumed=report.resumed,
        error_class="" if report.status == "passed" else "smoke_failed")
    return report
