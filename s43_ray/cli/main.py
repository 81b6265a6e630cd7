"""``s43-ray``: the one command. Subcommands ``run``, ``gate``, ``smoke`` and the operator's
``lifecycle``, ``bucket check`` and ``gc`` (:mod:`s43_ray.cli_ops`).

Exit codes: 0 gate passed; 1 gate failed (cohort incomplete or invalid); 2 bad input or usage,
with nothing written; 3 store or cluster unreachable (or the verdict could not be persisted);
130 interrupted. Events are JSON lines on stderr; the summary goes to stdout, and with ``--json``
its last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from typing import NoReturn, TextIO

from .. import __version__
from ..circuit import Circuit, WatchedStore, watched
from ..codec import CODECS, Codec
from ..config import (
    AnyStoreConfig,
    EnvDefaults,
    FileStoreConfig,
    env_defaults,
    is_file_url,
    parse_store_url,
)
from ..driver import STALL_TIMEOUT_S, RunConfig, gate_existing, run_cohort
from ..errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_UNREACHABLE,
    InputError,
    S43Error,
)
from ..events import RUN_FAILED, EventLog, Severity
from ..keys import (
    DEFAULT_PREFIX,
    MAX_COHORT_SIZE,
    RunLayout,
    check_key_lengths,
    member_names,
    new_run_id,
    parse_members,
    validate_run_id,
)
from ..ledger import latest_ledger
from ..manifest import read_manifest
from ..predict import DEFAULT_PREDICTOR, load_predictor
from ..progress import Progress
from ..smoke import DEFAULT_NODES as DEFAULT_SMOKE_NODES
from ..smoke import MAX_NODES as MAX_SMOKE_NODES
from ..smoke import MEMBERS_PER_NODE, SMOKE_ROWS, SmokeConfig, SmokeReport, run_smoke
from ..stores import open_store
from ..stores.local_s3 import LocalS3
from ..summary import Summary
from .bench_args import add_bench_parser
from .ops import OPS_COMMANDS, Report, add_ops_parsers, run_op
from .store_args import (
    Parser,
    UsageError,
    int_in,
    store_and_server,
    store_config,
    store_flags,
)

log = logging.getLogger("s43_ray.cli")
# Largest --rows accepted: 50 M float32 predictions is ~600 MiB a member with the default record.
MAX_ROWS = 50_000_000
DEFAULT_COHORT_SIZE = 8
DEFAULT_ROWS = 10_000
DEFAULT_CODEC: Codec = "arrow"


DESCRIPTION = ("Move per-member prediction arrays between Ray workers through S3, by reference, "
               "and prove that the whole cohort arrived.")
EPILOG = """exit codes:
  0  gate passed (and its verdict persisted)
  1  gate failed: cohort incomplete or invalid
  2  bad input or usage; nothing written
  3  store or cluster unreachable or refusing; or the verdict could not be persisted
  130 interrupted
  smoke: 0 only when S3 passed and the pod-local transport was caught failing;
  lifecycle verify, bucket check: 0 OK, 1 MISMATCH or MISSING

events: JSON lines on stderr; summary on stdout (--json: its last line is one JSON object)."""


def build_parser(env: EnvDefaults | None = None) -> argparse.ArgumentParser:
    env = env or env_defaults()
    parser = Parser(prog="s43-ray", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"s43-ray {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = sub.add_parser("run", help="persist a cohort through S3 on Ray, then gate it")
    run.add_argument("--run-id", help="run id (default: a fresh sortable id)")
    who = run.add_mutually_exclusive_group()
    who.add_argument("--cohort-size", type=int_in("cohort size", 1, MAX_COHORT_SIZE),
                     help=f"members m00000.. (default {DEFAULT_COHORT_SIZE})")
    who.add_argument("--members", help="explicit member names: a,b,c")
    run.add_argument("--rows", type=int_in("rows", 1, MAX_ROWS), default=DEFAULT_ROWS,
                     help=f"predictions per member (default {DEFAULT_ROWS})")
    run.add_argument("--format", choices=CODECS, default=DEFAULT_CODEC,
                     help=f"object format (default {DEFAULT_CODEC})")
    run.add_argument("--predictor", default=DEFAULT_PREDICTOR, metavar="MODULE:FUNCTION",
                     help="f(run_id, member, rows) -> {name: ndarray}, importable on every "
                          "worker (default: a deterministic synthetic model)")
    run.add_argument("--address", default=env.address,
                     help="a running Ray cluster (env RAY_ADDRESS); default: start a local one")
    run.add_argument("--num-cpus", type=int_in("num cpus", 1, 1024),
                     help="CPUs of the local Ray cluster (default: all)")
    run.add_argument("--verify", choices=("full", "head"), default="full",
                     help="gate check: full (GET + checksum + decode) or head (store checksums)")
    run.add_argument("--stall-timeout", type=int_in("stall timeout", 1, 86_400),
                     default=int(STALL_TIMEOUT_S), metavar="SECONDS",
                     help="cancel and report pending members when none finished for this long "
                          f"(default {int(STALL_TIMEOUT_S)})")
    run.add_argument("--resume", action="store_true",
                     help="finish an earlier run (same --run-id, cohort and format) as a new "
                          "attempt: keep members already in the store and verified (from any "
                          "attempt), compute the rest")
    store_flags(run, env)

    gate = sub.add_parser("gate", help="re-check an existing run from the store alone")
    gate.add_argument("--run-id", required=True)
    gate.add_argument("--expected", type=int_in("expected", 1, MAX_COHORT_SIZE),
                      help="members the cohort must have (default: the run's record; must "
                           "agree with it, and names the cohort of a run without one)")
    gate.add_argument("--members", help="explicit member names (default: the run's record; "
                                        "must agree with it)")
    gate.add_argument("--format", choices=CODECS, help="object format (default: the manifest's)")
    gate.add_argument("--verify", choices=("full", "head"), default="full")
    store_flags(gate, env)

    smoke = sub.add_parser(
        "smoke", help="cross-pod proof on one machine: a multi-node Ray cluster, the cohort "
                      "through S3 (must pass) and through pod-local folders (must fail)")
    smoke.add_argument("--nodes", type=int_in("nodes", 3, MAX_SMOKE_NODES),
                       default=DEFAULT_SMOKE_NODES,
                       help=f"worker nodes besides the head (default {DEFAULT_SMOKE_NODES})")
    smoke.add_argument("--members-per-node", type=int_in("members per node", 1, 100),
                       default=MEMBERS_PER_NODE,
                       help=f"cohort size = nodes x this (default {MEMBERS_PER_NODE})")
    smoke.add_argument("--rows", type=int_in("rows", 1, MAX_ROWS), default=SMOKE_ROWS,
                       help=f"predictions per member (default {SMOKE_ROWS})")
    smoke.add_argument("--format", choices=CODECS, default=DEFAULT_CODEC)
    smoke.add_argument("--run-id", help="the S3 run's id (default: a fresh one)")
    smoke.add_argument("--kill-node", action="store_true",
                       help="remove one worker node while members are being written")
    store_flags(smoke, env)
    add_ops_parsers(sub, env)
    add_bench_parser(sub, env)
    return parser


def _cmd_run(args: argparse.Namespace, events: EventLog) -> Summary:
    run_id = validate_run_id(args.run_id) if args.run_id is not None else new_run_id()
    members = tuple(parse_members(args.members) if args.members is not None
                    else member_names(args.cohort_size or DEFAULT_COHORT_SIZE))
    load_predictor(args.predictor)  # bad input is refused here, before anything is written
    store_prefix = _store_prefix(args)
    if store_prefix is not None:  # keys S3 would refuse: exit 2 before Ray or a server starts
        check_key_lengths(store_prefix, run_id, members, args.format)
    cfg = RunConfig(run_id=run_id, members=members, rows=args.rows, codec=args.format,
                    predictor=args.predictor, address=args.address, num_cpus=args.num_cpus,
                    verify=args.verify, stall_timeout=float(args.stall_timeout),
                    resume=args.resume)
    if args.resume and args.run_id is None:
        raise InputError("--resume was given without --run-id; expected the id of the run "
                         "to finish")
    events.run_id = run_id
    with store_config(args) as store_cfg:
        progress = Progress(len(members))
        events.before_write = progress.clear
        return run_cohort(cfg, store_cfg, events, progress)


def _cmd_smoke(args: argparse.Namespace, events: EventLog) -> SmokeReport:
    run_id = validate_run_id(args.run_id) if args.run_id is not None else None
    cfg = SmokeConfig(nodes=args.nodes, members_per_node=args.members_per_node, rows=args.rows,
                      codec=args.format, kill_node=args.kill_node, run_id=run_id)
    with store_config(args) as store_cfg:
        if isinstance(store_cfg, FileStoreConfig):
            raise InputError(f"smoke --store {args.store!r} is a file store; expected an S3 "
                             "store (the smoke compares S3 with pod-local files itself)")
        return run_smoke(cfg, store_cfg, events)


def _cmd_gate(args: argparse.Namespace, events: EventLog) -> Summary:
    run_id = validate_run_id(args.run_id)
    events.run_id = run_id
    explicit = parse_members(args.members) if args.members is not None else None
    if explicit is not None and args.expected is not None and args.expected != len(explicit):
        raise InputError(f"--expected {args.expected} differs from the {len(explicit)} members "
                         "named by --members; expected one of them, or both agreeing")
    with store_config(args) as store_cfg:
        layout = RunLayout(store_cfg.prefix, run_id)
        store = open_store(store_cfg)
        breaker = Circuit.for_store(store)
        wstore = WatchedStore(store, breaker)
        watched(breaker, wstore.check, what=f"checking {store_cfg.url}")
        manifest = watched(breaker, lambda: read_manifest(wstore, layout),
                           what=f"reading {layout.manifest_key}")
        ledger = None if manifest else watched(breaker, lambda: latest_ledger(wstore, layout),
                                               what=f"reading {layout.run_prefix}_ledgers/")
        recorded = manifest.members if manifest else (ledger.members if ledger else None)
        members = _gate_members(run_id, store_cfg.url, recorded, explicit, args.expected)
        known: Codec | None = manifest.codec if manifest else (ledger.codec if ledger else None)
        codec: Codec = args.format or known or DEFAULT_CODEC
        if known and args.format and args.format != known:
            raise InputError(f"--format {args.format} differs from the run's format "
                             f"{known}; expected {known}")
        check_key_lengths(store_cfg.prefix, run_id, members, codec)
        return gate_existing(store_cfg, run_id=run_id, members=members, codec=codec,
                             expected=len(members), events=events, verify=args.verify)


def _gate_members(run_id: str, url: str, cohort: Sequence[str] | None,
                  explicit: list[str] | None, expected: int | None) -> list[str]:
    """The cohort a gate checks: the run's record (or, if it was lost, its latest ledger);
    ``--members``/``--expected`` must agree with it (a verdict over part of a cohort would read
    as the whole run's), and name it only when the run has neither."""
    if cohort is None:
        if explicit:
            return explicit
        if expected:
            return member_names(expected)
        raise InputError(f"run {run_id!r} has no manifest in {url}; expected --expected N or "
                         "--members a,b,c")
    recorded = list(cohort)
    if explicit is not None and sorted(explicit) != sorted(recorded):
        gone = sorted(set(recorded) - set(explicit))
        extra = sorted(set(explicit) - set(recorded))
        raise InputError(f"--members names {len(explicit)} members but run {run_id!r} records "
                         f"{len(recorded)} (not named: {gone[:5]}, not in the run: {extra[:5]}); "
                         "expected the run's members, or no --members")
    if expected is not None and expected != len(recorded):
        raise InputError(f"--expected {expected} differs from the {len(recorded)} members run "
                         f"{run_id!r} records; expected {len(recorded)}, or no --expected")
    return recorded


def _store_prefix(args: argparse.Namespace) -> str | None:
    """The key prefix ``--store`` names, when it is a valid URL (else the store's own check
    reports it); None for the embedded default, whose prefix is the default one."""
    url = args.store
    if url is None or is_file_url(url):
        return DEFAULT_PREFIX
    try:
        return parse_store_url(url)[1]
    except InputError:
        return None


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Entry point; returns the exit code (``s43-ray`` calls ``sys.exit`` on it)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    logging.basicConfig(level=logging.WARNING, stream=err,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        wants_json = "--json" in argv
        command = next((a for a in argv if a in {"run", "gate", "smoke", "bench",
                                                  *OPS_COMMANDS}), "")
        return _fail(argparse.Namespace(json=wants_json, command=command), out, err,
                     exc.exit_code, "usage", str(exc), None)
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if on_main else None
    try:
        return _main(args, out, err)
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.command == "bench":  # prints its own tables and JSON
        from ..bench.main import run as run_bench  # loaded only for the benchmark

        return run_bench(args, lambda: _bench_store(args), stdout=out, stderr=err)
    level: Severity = args.events or ("warning" if err.isatty() else "info")
    events = EventLog(err, min_severity=level)
    try:
        summary: Summary | SmokeReport | Report
        if args.command in OPS_COMMANDS:
            summary = run_op(args, events)
        elif args.command == "smoke":
            summary = _cmd_smoke(args, events)
        else:
            summary = {"run": _cmd_run, "gate": _cmd_gate}[args.command](args, events)
    except S43Error as exc:
        return _fail(args, out, err, exc.exit_code, exc.error_class, str(exc), events)
    except KeyboardInterrupt:
        return _fail(args, out, err, EXIT_INTERRUPTED, "interrupted", "interrupted", events)
    except Exception as exc:  # a bug or an unforeseen failure: say so, never "gate failed"
        log.exception("internal error")
        return _fail(args, out, err, EXIT_UNREACHABLE, "internal",
                     f"internal error: {type(exc).__name__}: {exc}", events)
    if args.json:
        print(summary.human(), file=err)
        print(summary.to_json(), file=out)
    else:
        print(summary.human(), file=out)
    out.flush()
    return summary.exit_code


@contextlib.contextmanager
def _bench_store(args: argparse.Namespace
                 ) -> Iterator[tuple[AnyStoreConfig, LocalS3 | None]]:
    """The benchmark's store: the one given, else an embedded server in a scratch folder
    (unless ``--local-dir``), removed at the end."""
    scratch = None
    if not args.store and not args.local_dir:
        scratch = tempfile.mkdtemp(prefix="s43-bench-s3-")
        args.local_dir = scratch
    try:
        with store_and_server(args) as pair:
            yield pair
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _fail(args: argparse.Namespace, out: TextIO, err: TextIO, code: int, error_class: str,
          message: str, events: EventLog | None) -> int:
    """One line on stderr; an error event unless the input was bad; the JSON error object."""
    line = message.splitlines()[0] if message else error_class
    run_id = events.run_id if events else ""
    if events is not None and code != EXIT_BAD_INPUT:
        events.emit(RUN_FAILED, "error", command=args.command, error_class=error_class,
                    exit_code=code, message=line)
    print(f"s43-ray: error: {line}", file=err)
    if args.json:
        print(json.dumps({"status": "error", "exit_code": code, "error_class": error_class,
                          "message": line, "command": args.command, "run_id": run_id}),
              file=out)
    return code


def entrypoint() -> NoReturn:
    sys.exit(main())
