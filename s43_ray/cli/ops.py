"""The operator's subcommands: ``runs``, ``report``, ``lifecycle apply|verify``,
``bucket check``, ``gc``.

Each returns a report with ``human()``, ``to_json()`` and ``exit_code``, printed by the CLI like
a run summary (``--json``: one JSON object as the last stdout line).
"""

from __future__ import annotations

import argparse
from typing import Any, Protocol

from .. import Store, report_run
from ..config import EnvDefaults, StoreConfig
from ..errors import InputError
from ..events import EventLog
from ..ops.lifecycle import (
    apply_lifecycle,
    bucket_check,
    covers_prefix,
    default_rule_doc,
    gc_runs,
    load_rule_file,
    parse_age,
    verify_lifecycle,
)
from ..ops.lifecycle_rules import LifecycleDoc
from ..ops.runs import DEFAULT_LIMIT, runs_report
from ..stores import open_bucket_admin, open_store
from .parser import Parser, int_in
from .store_args import open_config, store_flags, store_target

OPS_COMMANDS = ("lifecycle", "bucket", "gc", "report", "runs")
# --limit's range; 0 lists every run.
MAX_LIMIT = 1_000_000


class Report(Protocol):
    @property
    def exit_code(self) -> int: ...

    def human(self) -> str: ...

    def to_json(self) -> str: ...


def _bucket_flags(p: argparse.ArgumentParser, env: EnvDefaults) -> None:
    p.add_argument("--bucket", metavar="B",
                   help="the bucket (short for --store s3://B/s43-predictions)")
    p.add_argument("--rule-file", metavar="PATH",
                   help="lifecycle rules (default: infra/scaleway/"
                        "s3-lifecycle-s43-predictions.json's rule for the store's prefix)")
    store_flags(p)


def add_ops_parsers(sub: Any, env: EnvDefaults) -> None:
    """``lifecycle``, ``bucket``, ``gc``, ``report`` and ``runs`` under the main parser's
    subcommands."""
    lc = sub.add_parser("lifecycle", help="the 7-day retention rule on the bucket")
    lc_sub = lc.add_subparsers(dest="action", required=True, parser_class=Parser)
    _bucket_flags(lc_sub.add_parser(
        "apply", help="put the rule, merged with the bucket's rules for other prefixes"), env)
    _bucket_flags(lc_sub.add_parser(
        "verify", help="read the live rule back: the operator's proof (exit 0 only if it "
                       "matches)"), env)
    bucket = sub.add_parser("bucket", help="bucket settings s43 relies on")
    bucket_sub = bucket.add_subparsers(dest="action", required=True, parser_class=Parser)
    _bucket_flags(bucket_sub.add_parser(
        "check", help="is default encryption set, and the lifecycle rule?"), env)
    gc = sub.add_parser("gc", help="list (or delete with --yes) whole runs older than a cut-off, "
                                   "for stores without lifecycle rules")
    gc.add_argument("--older-than", default="7d", metavar="AGE",
                    help="runs whose newest object is older than this: 7d, 36h, 90m "
                         "(default 7d)")
    gc.add_argument("--yes", action="store_true",
                    help="delete them (default: a dry run that only lists)")
    store_flags(gc)
    report = sub.add_parser("report", help="what an operator needs about a run: verdict, "
                                           "members missing/invalid/unexpected, sizes, times; "
                                           "without --run-id, the runs as `runs` lists them")
    report.add_argument("--run-id", metavar="ID",
                        help="the run to report (default: list the runs under the store's "
                             f"prefix, newest first, the {DEFAULT_LIMIT} newest, as `runs` "
                             "does)")
    report.add_argument("--no-head", action="store_true",
                        help="skip the HEAD of every object (codec and write time from LIST "
                             "only; faster on 10,000 members); with --run-id only")
    store_flags(report)
    runs = sub.add_parser("runs", help="the runs under the store's prefix, newest first, each "
                                       "with its latest verdict recomputed")
    runs.add_argument("--limit", type=int_in("limit", 0, MAX_LIMIT), default=DEFAULT_LIMIT,
                      metavar="N",
                      help=f"show the N newest runs (default {DEFAULT_LIMIT}; 0: every run); "
                           "the older ones are counted")
    store_flags(runs)


def _rule_doc(args: argparse.Namespace, cfg: StoreConfig) -> LifecycleDoc:
    doc = load_rule_file(args.rule_file) if args.rule_file else default_rule_doc(cfg.prefix)
    if not covers_prefix(doc, cfg.prefix):
        raise InputError(f"--rule-file {args.rule_file!r} has no rule for the store's prefix "
                         f"{cfg.prefix + '/'!r}; expected a rule whose Filter.Prefix is "
                         "that prefix")
    return doc


def cmd_runs(args: argparse.Namespace, env: EnvDefaults, events: EventLog) -> Report:
    """``s43-ray runs``: the runs under the store's prefix, newest first, each verdict
    recomputed (:func:`s43_ray.ops.runs.runs_report`)."""
    limit = getattr(args, "limit", DEFAULT_LIMIT)  # ``report`` has no --limit: the default
    with open_config(store_target(args, env), args, env) as (cfg, _):
        return runs_report(open_store(cfg), cfg.prefix, limit=limit or None,
                           command=args.command)


def cmd_report(args: argparse.Namespace, env: EnvDefaults, events: EventLog) -> Report:
    """``s43-ray report --run-id RUN``: :func:`s43_ray.report_run` on the store the flags
    name; without ``--run-id``, the runs as ``s43-ray runs`` lists them."""
    if args.run_id is None:
        return cmd_runs(args, env, events)
    with open_config(store_target(args, env), args, env) as (cfg, _):
        return report_run(Store(cfg), events.run_id, head=not args.no_head)


def run_op(args: argparse.Namespace, env: EnvDefaults, events: EventLog) -> Report:
    """Run one operator subcommand."""
    if args.command == "runs":
        return cmd_runs(args, env, events)
    if args.command == "report":
        return cmd_report(args, env, events)
    if args.command == "gc":
        age = parse_age(args.older_than)
        with open_config(store_target(args, env), args, env) as (cfg, _):
            return gc_runs(open_store(cfg), cfg.prefix, age, delete=args.yes)
    target = store_target(args, env, bucket=args.bucket)
    if target.root is not None:
        raise InputError(f"{args.command} {args.action} needs an S3 bucket, not the file "
                         f"store {target.url!r}; expected --bucket or --store s3://... "
                         "(a file store's retention is `s43-ray gc`)")
    with open_config(target, args, env) as (cfg, _):
        assert isinstance(cfg, StoreConfig)  # target names a bucket
        doc = _rule_doc(args, cfg)
        admin = open_bucket_admin(cfg)
        if args.command == "bucket":
            return bucket_check(admin, cfg.bucket, doc)
        if args.action == "apply":
            return apply_lifecycle(admin, cfg.bucket, doc)
        return verify_lifecycle(admin, cfg.bucket, doc)
