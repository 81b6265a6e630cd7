"""The pipeline's subcommands: ``run`` (persist a cohort on Ray, then gate it), ``gate``
(re-check a run from the store alone) and ``smoke`` (the cross-pod proof on one machine).

Every default a flag shows is the library's own (:class:`~s43_ray.driver.RunConfig`,
:class:`~s43_ray.smoke_report.SmokeConfig`): the CLI restates none of them.
"""

from __future__ import annotations

import argparse
from typing import Any

from .. import Store, gate_run, run_cohort
from ..codec import CODECS
from ..config import ENV_ADDRESS, EnvDefaults
from ..driver import RunConfig
from ..errors import InputError
from ..events import EventLog
from ..keys import MAX_COHORT_SIZE, check_key_lengths, member_names, parse_members
from ..predict import resolve_predictor
from ..progress import Progress
from ..smoke import choose_isolation, run_smoke, run_smoke_in_pods
from ..smoke_report import ISOLATIONS, MAX_NODES, SmokeConfig, SmokeReport
from ..summary import Summary
from .parser import int_in
from .store_args import open_config, store_flags, store_target

# Largest --rows accepted: 50 M float32 predictions is ~600 MiB a member with the default record.
MAX_ROWS = 50_000_000
# Members of a run given neither --cohort-size nor --members.
DEFAULT_COHORT_SIZE = 8
VERIFY_MODES = ("full", "head")
RUN_DEFAULTS = RunConfig(run_id="", members=())
SMOKE_DEFAULTS = SmokeConfig()


def add_pipeline_parsers(sub: Any, env: EnvDefaults) -> None:
    """``run``, ``gate`` and ``smoke`` under the main parser's subcommands."""
    d = RUN_DEFAULTS
    run = sub.add_parser("run", help="persist a cohort through S3 on Ray, then gate it")
    run.add_argument("--run-id", help="run id (default: a fresh sortable id)")
    who = run.add_mutually_exclusive_group()
    who.add_argument("--cohort-size", type=int_in("cohort size", 1, MAX_COHORT_SIZE),
                     help=f"members m00000.. (default {DEFAULT_COHORT_SIZE})")
    who.add_argument("--members", help="explicit member names: a,b,c")
    run.add_argument("--rows", type=int_in("rows", 1, MAX_ROWS), default=d.rows,
                     help=f"predictions per member (default {d.rows})")
    run.add_argument("--format", choices=CODECS, default=d.codec,
                     help=f"object format (default {d.codec})")
    run.add_argument("--predictor", default=d.predictor, metavar="MODULE:FUNCTION",
                     help="f(run_id, member, rows) -> {name: ndarray}, importable on every "
                          "worker (default: a deterministic synthetic model)")
    run.add_argument("--address", default=env.address,
                     help=f"a running Ray cluster (env {ENV_ADDRESS}); default: start a local "
                          "one")
    run.add_argument("--num-cpus", type=int_in("num cpus", 1, 1024),
                     help="CPUs of the local Ray cluster (default: all)")
    run.add_argument("--verify", choices=VERIFY_MODES, default=d.verify,
                     help="gate check: full (GET + checksum + decode) or head (store checksums)")
    run.add_argument("--stall-timeout", type=int_in("stall timeout", 1, 86_400),
                     default=int(d.stall_timeout), metavar="SECONDS",
                     help="cancel and report pending members when none finished for this long "
                          f"(default {int(d.stall_timeout)})")
    run.add_argument("--resume", action="store_true",
                     help="finish an earlier run (same --run-id, cohort and format) as a new "
                          "attempt: keep members already in the store and verified (from any "
                          "attempt), compute the rest")
    store_flags(run)

    gate = sub.add_parser("gate", help="re-check an existing run from the store alone")
    gate.add_argument("--run-id", required=True, help="the run to check")
    gate.add_argument("--expected", type=int_in("expected", 1, MAX_COHORT_SIZE),
                      help="members the cohort must have (default: the run's record; must "
                           "agree with it, and names the cohort of a run without one)")
    gate.add_argument("--members", help="explicit member names (default: the run's record; "
                                        "must agree with it)")
    gate.add_argument("--format", choices=CODECS, help="object format (default: the manifest's)")
    gate.add_argument("--verify", choices=VERIFY_MODES, default=d.verify,
                      help="full (GET + checksum + decode, default) or head (store checksums)")
    store_flags(gate)

    s = SMOKE_DEFAULTS
    smoke = sub.add_parser(
        "smoke", help="cross-pod proof on one machine: a multi-node Ray cluster, the cohort "
                      "through S3 (must pass) and through pod-local folders (must fail)")
    smoke.add_argument("--nodes", type=int_in("nodes", 3, MAX_NODES), default=s.nodes,
                       help=f"worker nodes besides the head (default {s.nodes})")
    smoke.add_argument("--members-per-node", type=int_in("members per node", 1, 100),
                       default=s.members_per_node,
                       help=f"cohort size = nodes x this (default {s.members_per_node})")
    smoke.add_argument("--rows", type=int_in("rows", 1, MAX_ROWS), default=s.rows,
                       help=f"predictions per member (default {s.rows})")
    smoke.add_argument("--format", choices=CODECS, default=s.codec,
                       help=f"object format (default {s.codec})")
    smoke.add_argument("--run-id", help="the S3 run's id (default: a fresh one)")
    smoke.add_argument("--kill-node", action="store_true",
                       help="remove one worker node while members are being written")
    smoke.add_argument("--isolation", choices=ISOLATIONS,
                       help="namespaces: each node, the store and the driver in a pod of its "
                            "own (network, /tmp, processes); folders: nodes on loopback, a "
                            "folder each (default: namespaces where the machine allows)")
    smoke.add_argument("--partition-node", action="store_true",
                       help="namespaces: cut a worker pod's link while members are written")
    smoke.add_argument("--partition-store", type=int_in("partition store", 1, 600),
                       metavar="SECONDS",
                       help="namespaces: cut the store pod's link this long, mid-run")
    store_flags(smoke)


def cmd_run(args: argparse.Namespace, env: EnvDefaults, events: EventLog) -> Summary:
    """``s43-ray run``: :func:`s43_ray.run_cohort` on the store the flags name."""
    run_id = events.run_id
    members = tuple(parse_members(args.members) if args.members is not None
                    else member_names(args.cohort_size or DEFAULT_COHORT_SIZE))
    resolve_predictor(args.predictor)  # bad input is refused here, before anything is written
    target = store_target(args, env)
    # Keys S3 would refuse: exit 2 before Ray or a server starts.
    check_key_lengths(target.prefix, run_id, members, args.format)
    if args.resume and args.run_id is None:
        raise InputError("--resume was given without --run-id; expected the id of the run "
                         "to finish")
    # The embedded server, if it is the store, comes up while Ray starts.
    with open_config(target, args, env, wait=False) as (store_cfg, server):
        progress = Progress(len(members))
        events.before_write = progress.clear
        store = Store(store_cfg, ready=server.ready if server is not None else None)
        return run_cohort(store, run_id, members, args.predictor, rows=args.rows,
                          codec=args.format, address=args.address, num_cpus=args.num_cpus,
                          verify=args.verify, resume=args.resume,
                          stall_timeout=float(args.stall_timeout), events=events,
                          progress=progress)


def cmd_smoke(args: argparse.Namespace, env: EnvDefaults, events: EventLog) -> SmokeReport:
    target = store_target(args, env)
    if target.root is not None:
        raise InputError(f"smoke --store {target.url!r} is a file store; expected an S3 "
                         "store (the smoke compares S3 with pod-local files itself)")
    isolation, why = choose_isolation(args.isolation, store_given=not target.embedded)
    partition = args.partition_node or args.partition_store
    if isolation == "folders" and partition:
        raise InputError(f"--partition-node/--partition-store need pods, but this smoke runs "
                         f"in folders ({why}); expected --isolation namespaces on a machine "
                         "that allows it")
    if args.kill_node and partition:
        raise InputError("--kill-node was given with a partition; expected one fault a run")
    cfg = SmokeConfig(nodes=args.nodes, members_per_node=args.members_per_node, rows=args.rows,
                      codec=args.format, kill_node=args.kill_node, run_id=events.run_id,
                      isolation=isolation, partition_node=args.partition_node,
                      partition_store_s=float(args.partition_store or 0))
    if isolation == "namespaces":
        return run_smoke_in_pods(cfg, events, why)
    with open_config(target, args, env) as (store_cfg, _):
        return run_smoke(cfg, store_cfg, events, reason=why)


def cmd_gate(args: argparse.Namespace, env: EnvDefaults, events: EventLog) -> Summary:
    """``s43-ray gate``: :func:`s43_ray.gate_run` on the store the flags name."""
    explicit = parse_members(args.members) if args.members is not None else None
    if explicit is not None and args.expected is not None and args.expected != len(explicit):
        raise InputError(f"--expected {args.expected} differs from the {len(explicit)} members "
                         "named by --members; expected one of them, or both agreeing")
    with open_config(store_target(args, env), args, env) as (store_cfg, _):
        return gate_run(Store(store_cfg), events.run_id, members=explicit,
                        expected=args.expected, codec=args.format, verify=args.verify,
                        events=events)
