"""The namespaced smoke's driver: run inside the head pod (``python -m s43_ray.pods.driver``),
its :class:`DriverSpec` as JSON on stdin, the :class:`~s43_ray.smoke_report.SmokeReport` as
JSON on the last line of stdout; events and logs on stderr.

In the head pod it sees what a KubeRay driver sees: the Ray head and the store at their own
addresses, its own ``/tmp``. It runs the cohort twice, as :mod:`s43_ray.smoke` does:

1. through the store (S3 in the store pod): members spread over the worker pods, the gate on
   the first worker pod. It must pass, faults or not.
2. the old way, exactly as the bug was: each member written to its pod's literal ``/tmp``
   (``file:///tmp``), the gate pod reading its own ``/tmp``. It must lose every member it did
   not write, and name them.

Faults are cut on the pods' links (``ip -n BRIDGE link set LINK down``): the pod sees a real
partition. ``partition_node`` cuts the last worker once a member is in; ``partition_store_s``
cuts the store that long, once a member is in. A run the cut store failed (exit 3) is finished
by ``--resume`` once the link is back, as an operator would.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import ray

from .. import events as ev
from ..cluster import node_affinity
from ..config import FileStoreConfig, Secret, StoreConfig
from ..driver import RunConfig, run_cohort
from ..errors import EXIT_UNREACHABLE, ClusterError, S43Error
from ..predict import DEFAULT_PREDICTOR
from ..smoke_report import SmokeConfig, SmokeReport, compare
from ..stores.local_s3 import create_bucket_when_up
from ..summary import Summary
from ..task import PersistOutcome, PredictionRef

STORE_WAIT_S = 60.0  # the store pod's server starts in about a second
NODES_WAIT_S = 120.0  # worker pods join the head in a few seconds each
# The pod-local store is each pod's own /tmp, literally, as the old pipeline wrote it.
POD_TMP = "/tmp"
# Past the store's cut, how long to wait for its link to come back before giving up.
HEAL_WAIT_S = 30.0
# How long Ray may take to see a node it lost as dead (health checks: about 11 s).
NODE_DEATH_WAIT_S = 60.0
# A line on stderr asking the host to kill a pod (the relay acts on it, never prints it).
KILL_MARK = "s43-pods: kill"


@dataclass(frozen=True)
class DriverSpec:
    """What the host tells the driver (over stdin: the store's key pair is in it)."""

    smoke: dict[str, Any]  # SmokeConfig's fields
    run_id: str
    members: list[str]
    head_address: str  # HOST:PORT of the Ray head's GCS
    workers: dict[str, str]  # pod role -> its address, for every worker pod
    bucket: str
    prefix: str
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    bridge_ns: str  # where the links are cut
    links: dict[str, str]  # pod role -> its link in the bridge namespace
    store_role: str = "store"
    events: str = "info"

    def store_config(self) -> StoreConfig:
        return StoreConfig(bucket=self.bucket, prefix=self.prefix,
                           endpoint_url=self.endpoint_url, region="us-east-1",
                           access_key_id=Secret(self.access_key_id),
                           secret_access_key=Secret(self.secret_access_key), max_attempts=3)


@dataclass
class Faults:
    """Strikes once a member is in and the victim still has members to write; records what it
    did, when, and whether it took (a node cut or killed is seen dead by Ray)."""

    spec: DriverSpec
    t0: float
    assigned: Mapping[str, str]  # member -> the node it was given to
    victim: str | None = None  # the worker node to cut (partition_node) or kill (kill_node)
    victim_role: str = ""
    kill: bool = False
    store_s: float = 0.0
    done: list[dict[str, Any]] = field(default_factory=list)
    _armed: bool = True
    _cut_store: bool = False
    _healed: threading.Event = field(default_factory=threading.Event)

    def on_member(self, written: Mapping[str, str]) -> None:
        if not self._armed:
            return
        if self.victim and not any(self.assigned[m] == self.victim and m not in written
                                   for m in self.assigned):
            return  # the victim has nothing left to do: striking it now would prove nothing
        self._armed = False
        if self.victim and self.kill:
            # The host kills the pod's processes (a pod cannot see another's).
            print(f"{KILL_MARK} {self.victim_role}", file=sys.stderr, flush=True)
            self._record(f"kill worker pod {self.victim_role}", self.victim_role)
        elif self.victim:
            _link(self.spec.bridge_ns, self.spec.links[self.victim_role], "down")
            self._record(f"partition worker pod {self.victim_role}", self.victim_role)
        if self.store_s > 0:
            _link(self.spec.bridge_ns, self.spec.links[self.spec.store_role], "down")
            self._cut_store = True
            fault = self._record(f"partition store for {self.store_s:g}s", self.spec.store_role)
            threading.Thread(target=self._heal_later, args=(fault,), daemon=True).start()

    def _record(self, what: str, role: str) -> dict[str, Any]:
        fault = {"what": what, "role": role, "at_s": round(time.monotonic() - self.t0, 2)}
        self.done.append(fault)
        return fault

    def _heal_later(self, fault: dict[str, Any]) -> None:
        time.sleep(self.store_s)
        _link(self.spec.bridge_ns, self.spec.links[self.spec.store_role], "up")
        fault["healed_s"] = round(time.monotonic() - self.t0, 2)
        self._healed.set()

    def wait_healed(self) -> bool:
        """Wait for the store's link to be back; False when it was never cut."""
        return self._cut_store and self._healed.wait(self.store_s + HEAL_WAIT_S)

    def confirm(self) -> None:
        """Mark each node fault that Ray saw take (the node dead); a fault that did not is
        reported as not struck, and fails the smoke."""
        for fault in self.done:
            if fault["role"] == self.victim_role:
                fault["struck"] = _node_dead(self.victim or "")
            elif fault["role"] == self.spec.store_role:
                fault["struck"] = "healed_s" in fault


def _link(bridge_ns: str, link: str, state: str) -> None:
    subprocess.run(["ip", "-n", bridge_ns, "link", "set", link, state], check=True,
                   capture_output=True, timeout=30)


def _node_dead(node_id: str) -> bool:
    deadline = time.monotonic() + NODE_DEATH_WAIT_S
    while time.monotonic() < deadline:
        nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
        if not any(n["NodeID"] == node_id and n["Alive"] for n in nodes):
            return True
        time.sleep(0.5)
    return False


def _wait_for_nodes(addresses: Mapping[str, str]) -> dict[str, str]:
    """Every worker pod's node, alive: its address -> its node id."""
    deadline = time.monotonic() + NODES_WAIT_S
    wanted = set(addresses.values())
    while True:
        nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
        alive = {n["NodeManagerAddress"]: n["NodeID"] for n in nodes if n["Alive"]}
        if wanted <= set(alive):
            return {a: alive[a] for a in wanted}
        if time.monotonic() > deadline:
            raise ClusterError(f"worker pods {sorted(wanted - set(alive))} did not join the "
                               f"Ray head within {NODES_WAIT_S:.0f}s")
        time.sleep(0.2)


def round_robin(members: list[str], nodes: list[str]) -> dict[str, str]:
    return {m: nodes[i % len(nodes)] for i, m in enumerate(members)}


def _run(spec: DriverSpec, cfg: SmokeConfig, run_id: str, store: StoreConfig | FileStoreConfig,
         nodes: list[str], events: ev.EventLog, *, predictor: str, resume: bool = False,
         faults: Faults | None = None, written: dict[str, str] | None = None,
         assigned: Mapping[str, str] | None = None) -> Summary:
    """One cohort over the worker pods: members round-robin (``assigned``, soft affinity, so
    Ray may re-run them elsewhere), the gate pinned to the first worker pod."""
    members = tuple(spec.members)
    assigned = assigned if assigned is not None else round_robin(spec.members, nodes)
    written = written if written is not None else {}

    def on_outcome(member: str, outcome: PersistOutcome) -> None:
        if isinstance(outcome, PredictionRef):
            written[member] = outcome.node_id
            if faults is not None:
                faults.on_member(written)

    run_cfg = RunConfig(
        run_id=run_id, members=members, rows=cfg.rows, codec=cfg.codec, predictor=predictor,
        address=spec.head_address, resume=resume,
        member_options=lambda m: node_affinity(assigned[m], soft=True),
        gate_options=node_affinity(nodes[0], soft=False), on_outcome=on_outcome,
        stall_timeout=120.0, gate_timeout=300.0)
    return run_cohort(run_cfg, store, events.for_run(run_id))


def main() -> int:
    """The smoke's two runs; the report (or the error, one line, with its class and exit code)
    as JSON on the last line of stdout."""
    spec = DriverSpec(**json.loads(sys.stdin.read()))
    try:
        report = _smoke(spec)
    except S43Error as exc:
        print(json.dumps({"error": str(exc).splitlines()[0], "error_class": exc.error_class,
                          "exit_code": exc.exit_code}))
        return exc.exit_code
    print(json.dumps(asdict(report)))
    return 0


def _smoke(spec: DriverSpec) -> SmokeReport:
    cfg = SmokeConfig(**spec.smoke)
    events = ev.EventLog(sys.stderr, run_id=spec.run_id,
                         min_severity=cast(ev.Severity, spec.events))
    t0 = time.monotonic()
    store = spec.store_config()
    create_bucket_when_up(store, spec.bucket, STORE_WAIT_S)
    ray.init(address=spec.head_address, logging_level=logging.WARNING, log_to_driver=True)
    try:
        by_address = _wait_for_nodes(spec.workers)
        roles = {by_address[a]: r for r, a in spec.workers.items()}
        nodes = [by_address[spec.workers[r]] for r in sorted(spec.workers)]
        victim = nodes[-1] if cfg.partition_node or cfg.kill_node else None
        assigned = round_robin(spec.members, nodes)
        faults = Faults(spec, t0, assigned, victim=victim,
                        victim_role=roles[victim] if victim else "", kill=cfg.kill_node,
                        store_s=cfg.partition_store_s)
        predictor = f"{SmokeConfig.__module__}:slow_predictor" if cfg.faulty else \
            DEFAULT_PREDICTOR
        written: dict[str, str] = {}
        s3 = _run(spec, cfg, spec.run_id, store, nodes, events, predictor=predictor,
                  faults=faults if cfg.faulty else None, written=written, assigned=assigned)
        resumed = False
        if s3.exit_code == EXIT_UNREACHABLE and faults.wait_healed():
            # The operator's move: once the store is back, --resume.
            s3 = _run(spec, cfg, spec.run_id, store, nodes, events, predictor=predictor,
                      resume=True, written=written, assigned=assigned)
            resumed = True
        faults.confirm()
        lost = victim if any(f["role"] == faults.victim_role and f["struck"]
                             for f in faults.done) else None
        pod_written: dict[str, str] = {}
        pod = _run(spec, cfg, f"{spec.run_id}__pod-local", FileStoreConfig(root=POD_TMP),
                   [n for n in nodes if n != victim], events, predictor=DEFAULT_PREDICTOR,
                   written=pod_written)
        report = compare(cfg, spec.run_id, s3, assigned, written, lost, pod, pod_written,
                         faults=faults.done)
        report.isolation = "namespaces"
        report.addresses = {node: addr for addr, node in by_address.items()
                            if node in report.members_by_node}
        report.resumed = resumed
        return report
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
