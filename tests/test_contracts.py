"""Pins what users and operators depend on: a change to any of these must be deliberate.

CLI flags, event names, exit codes, key layout and the summary's fields are contracts (docs/cli.md
documents each). If one of these tests fails, you changed a contract: update the docs
and the alert rules with it, or put it back.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import s43_ray
from s43_ray import binding, errors, events
from s43_ray.cli.main import build_parser
from s43_ray.config import EnvDefaults
from s43_ray.keys import RunLayout, member_names
from s43_ray.summary import Summary

ROOT = Path(__file__).resolve().parents[1]


def _flags(command: str) -> set[str]:
    parser: argparse.ArgumentParser = build_parser(EnvDefaults())
    for word in command.split():  # "lifecycle apply": a subcommand of a subcommand
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return {opt for action in parser._actions for opt in action.option_strings}


STORE_FLAGS = {"--store", "--endpoint-url", "--region", "--addressing-style", "--s3-checksum",
               "--max-attempts", "--local-dir", "--sse", "--sse-c-key-file", "--json", "--events",
               "-h", "--help"}


def test_run_flags_are_pinned() -> None:
    assert _flags("run") == STORE_FLAGS | {
        "--run-id", "--cohort-size", "--members", "--rows", "--format", "--predictor",
        "--address", "--num-cpus", "--verify", "--stall-timeout", "--resume"}


def test_gate_flags_are_pinned() -> None:
    assert _flags("gate") == STORE_FLAGS | {"--run-id", "--expected", "--members", "--format",
                                            "--verify"}


def test_smoke_flags_are_pinned() -> None:
    assert _flags("smoke") == STORE_FLAGS | {"--nodes", "--members-per-node", "--rows",
                                             "--format", "--run-id", "--kill-node",
                                             "--isolation", "--partition-node",
                                             "--partition-store"}


@pytest.mark.parametrize("command", ["lifecycle apply", "lifecycle verify", "bucket check"])
def test_bucket_flags_are_pinned(command: str) -> None:
    assert _flags(command) == STORE_FLAGS | {"--bucket", "--rule-file"}


def test_report_flags_are_pinned() -> None:
    assert _flags("report") == STORE_FLAGS | {"--run-id", "--no-head"}


def test_bench_flags_are_pinned() -> None:
    assert _flags("bench") == STORE_FLAGS | {
        "--out", "--quick", "--sizes", "--codecs", "--concurrency", "--repeats",
        "--cohort-members", "--cohort-member-bytes", "--gate-members", "--phases",
        "--ray-address"}


def test_gc_flags_are_pinned() -> None:
    assert _flags("gc") == STORE_FLAGS | {"--older-than", "--yes"}


def test_event_names_are_pinned() -> None:
    assert events.EVENT_NAMES == (
        "s43_run_started", "s43_pred_persisted", "s43_pred_persist_failed",
        "s43_pred_load_failed", "s43_acquire_outcome", "s43_gate_outcome",
        "s43_gate_persisted", "s43_gate_persist_failed", "s43_run_failed", "s43_smoke_outcome",
        "s43_store_circuit_open", "s43_ledger_persisted")


def test_exit_codes_are_pinned() -> None:
    assert (errors.EXIT_PASSED, errors.EXIT_GATE_FAILED, errors.EXIT_BAD_INPUT,
            errors.EXIT_UNREACHABLE) == (0, 1, 2, 3)
    assert errors.InputError.exit_code == 2
    assert errors.StoreError.exit_code == 3
    assert errors.ClusterError.exit_code == 3
    assert errors.GateFailed.exit_code == 1


def test_error_classes_are_pinned() -> None:
    assert {c.error_class for c in (errors.ChecksumMismatch, errors.TruncatedObject,
                                    errors.CodecMismatch, errors.UnsafePayload,
                                    errors.ObjectNotFound, errors.AccessDenied,
                                    errors.Throttled, errors.StoreUnreachable)} == {
        "checksum", "truncated", "codec", "unsafe_payload", "not_found", "auth", "throttled",
        "unreachable"}


def test_key_layout_is_pinned() -> None:
    layout = RunLayout("s43-predictions", "manual__2026-11-28T10:00:00+00:00")
    assert layout.member_key("m00007", "npz") == \
        "s43-predictions/manual__2026-11-28T10:00:00+00:00/m00007.npz"
    assert layout.member_key("m00007", "arrow") == \
        "s43-predictions/manual__2026-11-28T10:00:00+00:00/m00007.arrow"
    assert layout.gate_key == "s43-predictions/manual__2026-11-28T10:00:00+00:00/_gate.json"
    assert layout.manifest_key == "s43-predictions/manual__2026-11-28T10:00:00+00:00/_run.json"
    assert layout.attempt_key(2) == \
        "s43-predictions/manual__2026-11-28T10:00:00+00:00/_attempts/000002.json"
    assert layout.ledger_key(2) == \
        "s43-predictions/manual__2026-11-28T10:00:00+00:00/_ledgers/000002.json"
    assert layout.verdict_history_key("20261201T101500123Z", 2, "0a1b2c3d") == \
        "s43-predictions/manual__2026-11-28T10:00:00+00:00/_gates/20261201T101500123Z-a000002-0a1b2c3d.json"
    assert member_names(2) == ["m00000", "m00001"]


def test_object_binding_metadata_is_pinned() -> None:
    assert binding.binding_metadata("r1", "m00001", 3, "s1:00") == {
        "s43-run": "r1", "s43-member": "m00001", "s43-attempt": "3", "s43-schema": "s1:00"}
    assert {cls.error_class for cls in (errors.WrongRun, errors.WrongMember, errors.WrongAttempt,
                                        errors.SchemaMismatch, errors.NotInLedger,
                                        errors.PreconditionFailed, errors.NoConditionalWrites,
                                        errors.PredictorFailed)} == {
        "wrong_run", "wrong_member", "wrong_attempt", "schema", "not_in_ledger", "conflict",
        "no_conditional_writes", "predictor"}


def test_summary_fields_are_pinned() -> None:
    s = Summary(run_id="r", status="passed", expected=1, cohort_count=1, missing=[], invalid={},
                unexpected=[])
    assert {"run_id", "expected", "cohort_count", "status", "shortfall", "missing", "invalid",
            "unexpected", "persist_failed", "write_latency_s", "read_latency_s",
            "bytes_written", "bytes_read", "wall_seconds", "gate_key", "gate_persisted",
            "writer_nodes", "gate_node", "s3_retries", "codec", "store", "endpoint",
            "command", "version", "reason", "infra_errors", "task_retries", "reused",
            "computed", "attempt", "basis", "verdict_key", "verdict_latest"} == set(s.to_dict())


PUBLIC_API = ["GateFailed", "InputError", "LoadError", "PredictionRef", "Run", "RunListing",
              "RunReport", "S43Error", "Store", "StoreError", "Summary", "Verdict",
              "__version__", "gate_run", "local_store", "open_store", "report_run",
              "run_cohort"]
# Parameters users call by name (docs/api.md); adding one with a default is not a break,
# renaming or removing one is.
PUBLIC_SIGNATURES = {
    "open_store": ["url", "endpoint_url", "sse", "sse_c_key", "region", "addressing_style",
                   "s3_checksum", "max_attempts"],
    "local_store": ["data_dir", "prefix"],
    "Store.start_run": ["self", "run_id", "members", "codec", "schema"],
    "Store.open_run": ["self", "run_id", "members"],
    "Store.runs": ["self", "limit"],
    "Run.persist": ["self", "member", "arrays"],
    "Run.gate": ["self", "refs", "verify", "events", "concurrency"],
    "Run.load": ["self", "member"],
    "Run.read_table": ["self", "concurrency"],
    "Run.read_dataset": ["self", "parallelism"],
    "Run.report": ["self", "head"],
    "run_cohort": ["store", "run_id", "members", "predictor", "rows", "codec", "address",
                   "num_cpus", "verify", "resume", "stall_timeout", "events", "progress",
                   "task_options"],
    "gate_run": ["store", "run_id", "members", "expected", "codec", "verify", "events"],
    "report_run": ["store", "run_id", "head"],
}


def test_public_api_is_pinned() -> None:
    assert s43_ray.__all__ == PUBLIC_API
    assert s43_ray.__version__
    for name in PUBLIC_API:
        value = getattr(s43_ray, name)
        assert value.__doc__ or name == "__version__", f"{name} has no docstring"


@pytest.mark.parametrize("name", sorted(PUBLIC_SIGNATURES))
def test_public_signatures_are_pinned(name: str) -> None:
    owner, _, attr = name.partition(".")
    fn = getattr(getattr(s43_ray, owner), attr) if attr else getattr(s43_ray, owner)
    assert list(inspect.signature(fn).parameters) == PUBLIC_SIGNATURES[name]
    assert fn.__doc__, f"{name} has no docstring"


def test_importing_the_package_loads_neither_ray_nor_a_client() -> None:
    assert _modules_loaded_by("import s43_ray", "ray") == []
    assert _modules_loaded_by("import s43_ray", "boto3") == []


def test_the_cli_runs_gates_and_reports_through_the_public_api() -> None:
    """``run``, ``gate`` and ``report`` call :func:`s43_ray.run_cohort`, :func:`gate_run` and
    :func:`report_run`; no CLI module imports a private name."""
    cli = ROOT / "s43_ray" / "cli"
    for path in cli.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_")
                           and a.name != "__version__"]
                assert not private, f"{path.name} imports private {private} from {node.module}"
    calls = {"cmd_run": "run_cohort", "cmd_gate": "gate_run", "cmd_report": "report_run"}
    sources = {p.name: ast.parse(p.read_text()) for p in cli.glob("*.py")}
    for fn_name, public in calls.items():
        found = [fn for tree in sources.values() for fn in ast.walk(tree)
                 if isinstance(fn, ast.FunctionDef) and fn.name == fn_name]
        assert found, fn_name
        called = {n.func.id for n in ast.walk(found[0]) if isinstance(n, ast.Call)
                  and isinstance(n.func, ast.Name)}
        assert public in called, f"{fn_name} does not call s43_ray.{public}"


@pytest.mark.parametrize("tool", [["ruff", "check", "s43_ray", "tests", "benchmarks"],
                                  ["mypy"], ["lint-imports"]],
                         ids=["ruff", "mypy", "import-layers"])
def test_code_is_lint_and_type_clean(tool: list[str]) -> None:
    exe = Path(sys.executable).parent / tool[0]
    args = [a for a in tool[1:] if (ROOT / a).exists() or a.startswith("-") or a == "check"]
    proc = subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _modules_loaded_by(statement: str, prefix: str) -> list[str]:
    code = (f"import json, sys; {statement}; "
            f"print(json.dumps(sorted(n for n in sys.modules if n == {prefix!r} or "
            f"n.startswith({prefix + '.'!r}))))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True, timeout=120)
    loaded: list[str] = json.loads(proc.stdout.splitlines()[-1])
    return loaded


def test_the_store_boundary_loads_neither_ray_nor_the_metrics() -> None:
    stores = "; ".join(f"import s43_ray.stores.{p.stem}"
                       for p in (ROOT / "s43_ray" / "stores").glob("*.py") if p.stem != "__init__")
    assert _modules_loaded_by(stores, "ray") == []
    assert _modules_loaded_by(stores, "s43_ray.metrics") == []


def test_the_cli_loads_the_benchmark_only_when_it_runs() -> None:
    statement = "import s43_ray.cli.main as m; m.build_parser()"
    assert _modules_loaded_by(statement, "s43_ray.bench") == []


MAX_MODULE_LINES = 400


def test_every_module_is_small_enough_to_read_whole() -> None:
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "s43_ray").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def _parsers(parser: argparse.ArgumentParser, path: str = "s43-ray"
             ) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{path} {name}")
    return found


def test_every_flag_and_command_in_help_has_text() -> None:
    bare = []
    for path, parser in _parsers(build_parser(EnvDefaults())):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                bare += [f"{path} {a.dest}" for a in action._choices_actions if not a.help]
            elif not action.help or action.help == argparse.SUPPRESS:
                bare.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert bare == []


def test_test_files_have_unique_names() -> None:
    """pytest imports test modules by basename (no __init__.py): two alike abort collection."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
