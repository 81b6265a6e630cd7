"""``s43-ray``: the one command. The pipeline's ``run``, ``gate`` and ``smoke``
(:mod:`.pipeline`), the operator's ``report``, ``lifecycle``, ``bucket check`` and ``gc``
(:mod:`.ops`), and ``bench`` (:mod:`.bench_args`; the benchmark is imported only when it runs).

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
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn, TextIO

from .. import stopping
from ..config import AnyStoreConfig, EnvDefaults, env_defaults
from ..errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_UNREACHABLE, S43Error
from ..events import RUN_FAILED, EventLog, Severity
from ..keys import new_run_id, validate_run_id
from ..smoke_report import SmokeReport
from ..stores.local_s3 import LocalS3
from ..summary import Summary
from ..version import __version__
from .bench_args import add_bench_parser
from .ops import OPS_COMMANDS, Report, add_ops_parsers, run_op
from .parser import Parser, UsageError
from .pipeline import add_pipeline_parsers, cmd_gate, cmd_run, cmd_smoke
from .store_args import open_config, store_target

log = logging.getLogger("s43_ray.cli")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

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
    add_pipeline_parsers(sub, env)
    add_ops_parsers(sub, env)
    add_bench_parser(sub)
    return parser


Command = Callable[[argparse.Namespace, EnvDefaults, EventLog], "Summary | SmokeReport | Report"]
COMMANDS: dict[str, Command] = {"run": cmd_run, "gate": cmd_gate, "smoke": cmd_smoke,
                                **dict.fromkeys(OPS_COMMANDS, run_op)}


def run_id_of(args: argparse.Namespace) -> str:
    """The run a command is about, checked before anything starts: its events carry it from
    the first. ``run`` and ``smoke`` name a fresh one unless given; ``gate`` and ``report``
    take it; the other commands are about no single run ("")."""
    given = getattr(args, "run_id", None)
    if given is not None:
        return validate_run_id(given)
    return new_run_id() if args.command in ("run", "smoke") else ""


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Entry point; returns the exit code (``s43-ray`` calls ``sys.exit`` on it)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    logging.basicConfig(level=logging.WARNING, stream=err,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    env = env_defaults()
    try:
        args = build_parser(env).parse_args(argv)
    except UsageError as exc:
        wants_json = "--json" in argv
        command = next((a for a in argv if a in {"run", "gate", "smoke", "bench",
                                                  *OPS_COMMANDS}), "")
        return _fail(argparse.Namespace(json=wants_json, command=command), out, err,
                     exc.exit_code, "usage", str(exc), None)
    on_main = threading.current_thread() is threading.main_thread()
    # SIGTERM (a pod stopped, `kill`) and SIGHUP (the terminal or ssh session gone) clean up
    # like Ctrl-C: the embedded server, a local cluster, the smoke's pods.
    previous = {sig: signal.signal(sig, _terminated) for sig in STOP_SIGNALS} if on_main else {}
    try:
        return _main(args, env, out, err)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stopping.clear()


def _main(args: argparse.Namespace, env: EnvDefaults, out: TextIO, err: TextIO) -> int:
    if args.command == "bench":  # prints its own tables and JSON
        from ..bench.main import run as run_bench  # loaded only for the benchmark

        return run_bench(args, lambda: _bench_store(args, env), stdout=out, stderr=err)
    level: Severity = args.events or ("warning" if err.isatty() else "info")
    events: EventLog | None = None
    try:
        events = EventLog(err, min_severity=level, run_id=run_id_of(args), keep=False)
        summary = COMMANDS[args.command](args, env, events)
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
def _bench_store(args: argparse.Namespace, env: EnvDefaults
                 ) -> Iterator[tuple[AnyStoreConfig, LocalS3 | None]]:
    """The benchmark's store: the one given, else an embedded server in a scratch folder
    (unless ``--local-dir``), removed at the end."""
    target = store_target(args, env)
    scratch = None
    if target.embedded and not (args.local_dir or env.local_dir):
        scratch = tempfile.mkdtemp(prefix="s43-bench-s3-")
        args.local_dir = scratch
    try:
        with open_config(target, args, env) as pair:
            yield pair
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _terminated(signum: int, frame: object) -> None:
    stopping.ask(signum)  # raised again by the wait loops, should this one be lost
    raise KeyboardInterrupt(f"signal {signum}")


def _fail(args: argparse.Namespace, out: TextIO, err: TextIO, code: int, error_class: str,
          message: str, events: EventLog | None) -> int:
    """One line on stderr; an error event unless the input was bad; the JSON error object."""
    line = message.splitlines()[0] if message else error_class
    # Refused input names no run it made up: a fresh id belongs to a run that never started.
    named = getattr(args, "run_id", None) is not None
    run_id = events.run_id if events and (code != EXIT_BAD_INPUT or named) else ""
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
