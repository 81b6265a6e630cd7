"""Every LogQL expression in infra/alerts/loki-rules.yaml, evaluated on the events of real runs.

Real failing cohorts run on the session's SeaweedFS server and Ray cluster (a predictor that
raises, a corrupted member, a deleted member, a gate told to expect fewer members, a verdict
write the store refuses, an unreachable store, an interrupted run). Their stderr, every line of
it, is the log stream. Each rule's expression is parsed (the LogQL subset the rules use: stream
selector, line filters, ``| json`` with named fields, label filters, ``unwrap``, range and
vector aggregations, comparisons, ``unless``) and evaluated on that stream, with every line
inside every window (time ranges and offsets are not evaluated). The test asserts:

- every event a rule selects on is one the project emits (events.EVENT_NAMES) and really is
  emitted by these runs, with every field the rule extracts, of the JSON type its use needs
  (numbers for numeric filters and ``unwrap``, strings for string matchers);
- each alert fires for exactly the runs (and labels) it should, and for no passing run;
- the "no gate outcome" alert fires for a run whose driver died after s43_run_started (the
  interrupted run's log cut where a SIGKILL would have cut it) and not once it logged an end.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from faults import FaultProxy, Rule

from s43_ray import events as ev
from s43_ray.cli.main import main
from s43_ray.config import StoreConfig
from s43_ray.stores.local_s3 import LocalS3, free_ports
from s43_ray.stores.s3 import S3Store

ROOT = Path(__file__).resolve().parents[2]
LOKI_RULES = ROOT / "infra" / "alerts" / "loki-rules.yaml"
TEST_BUCKET = "s43-test"
ROWS = "100"
SUBPROCESS_TIMEOUT_S = 120.0

# --- a LogQL subset: tokens, parse tree, evaluation --------------------------------------------

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)
    | (?P<dur>\d+(?:ms|s|m|h|d|w|y)\b)
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<op>\|=|\|~|!=|!~|=~|==|>=|<=|[|(){}\[\],=<>])
    | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
    )""", re.VERBOSE)
RANGE_FUNCS = {"count_over_time", "max_over_time", "min_over_time", "sum_over_time"}
VECTOR_FUNCS = {"sum", "max", "min", "count"}
SET_OPS = {"unless", "and", "or"}
COMPARISONS = {">", ">=", "<", "<=", "==", "!="}
Labels = frozenset[tuple[str, str]]
Vector = dict[Labels, float]


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m and m.end() > pos, f"cannot tokenize LogQL at {text[pos:pos + 40]!r}"
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "str":
            value = json.loads(value) if value.startswith('"') else value[1:-1]
        tokens.append((kind, value))
        pos = m.end()
    return tokens


@dataclass
class Stage:
    kind: str  # line | json | error | string | number | unwrap
    label: str = ""
    op: str = ""
    value: Any = None
    params: dict[str, str] = field(default_factory=dict)  # json: label -> JSON field


@dataclass
class LogRange:
    func: str
    selector: dict[str, str]
    stages: list[Stage]
    window: str
    offset: str | None


@dataclass
class Node:
    kind: str  # range | vector | compare | setop
    func: str = ""
    by: tuple[str, ...] = ()
    args: list[Any] = field(default_factory=list)
    op: str = ""
    number: float = 0.0


class Parser:
    def __init__(self, text: str) -> None:
        self.toks = tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else ("eof", "")

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        k, v = self.peek()
        assert (value is None or v == value) and (kind is None or k == kind), \
            f"LogQL: expected {value or kind}, got {v!r} at token {self.i}"
        self.i += 1
        return v

    def parse(self) -> Node:
        node = self.expr()
        assert self.peek()[0] == "eof", f"LogQL: trailing tokens {self.toks[self.i:]}"
        return node

    def expr(self) -> Node:
        node = self.term()
        while self.peek()[1] in SET_OPS:
            op = self.take()
            node = Node("setop", op=op, args=[node, self.term()])
        return node

    def term(self) -> Node:
        node = self.primary()
        while self.peek()[1] in COMPARISONS:
            op = self.take()
            node = Node("compare", op=op, number=float(self.take(kind="num")), args=[node])
        return node

    def primary(self) -> Node:
        k, v = self.peek()
        if v == "(":
            self.take("(")
            node = self.expr()
            self.take(")")
            return node
        if v in VECTOR_FUNCS:
            self.take()
            by = self.by()
            self.take("(")
            inner = self.expr()
            self.take(")")
            return Node("vector", func=v, by=by or self.by(), args=[inner])
        if v in RANGE_FUNCS:
            self.take()
            self.take("(")
            log_range = self.log_range(v)
            self.take(")")
            return Node("range", func=v, args=[log_range])
        raise AssertionError(f"LogQL: unexpected {v!r} ({k})")

    def by(self) -> tuple[str, ...]:
        if self.peek()[1] != "by":
            return ()
        self.take("by")
        self.take("(")
        labels = [self.take(kind="id")]
        while self.peek()[1] == ",":
            self.take(",")
            labels.append(self.take(kind="id"))
        self.take(")")
        return tuple(labels)

    def log_range(self, func: str) -> LogRange:
        self.take("{")
        selector = {}
        while self.peek()[1] != "}":
            name = self.take(kind="id")
            self.take("=")
            selector[name] = self.take(kind="str")
            if self.peek()[1] == ",":
                self.take(",")
        self.take("}")
        stages = []
        while self.peek()[1] != "[":
            stages.append(self.stage())
        self.take("[")
        window = self.take(kind="dur")
        self.take("]")
        offset = None
        if self.peek()[1] == "offset":
            self.take("offset")
            offset = self.take(kind="dur")
        return LogRange(func, selector, stages, window, offset)

    def stage(self) -> Stage:
        v = self.peek()[1]
        if v in {"|=", "|~", "!=", "!~"}:
            self.take()
            return Stage("line", op=v, value=self.take(kind="str"))
        self.take("|")
        name = self.take(kind="id")
        if name == "json":
            params = {}
            while self.peek()[0] == "id" and self.peek(1)[1] == "=":
                label = self.take(kind="id")
                self.take("=")
                params[label] = self.take(kind="str")
                if self.peek()[1] == ",":
                    self.take(",")
            return Stage("json", params=params)
        if name == "unwrap":
            return Stage("unwrap", label=self.take(kind="id"))
        op = self.take()
        kind, value = self.peek()
        self.take()
        if name == "__error__":
            return Stage("error", op=op, value=value)
        if kind == "num":
            return Stage("number", label=name, op=op, value=float(value))
        assert kind == "str", f"LogQL: label filter {name} {op} {value!r}"
        return Stage("string", label=name, op=op, value=value)


def _compare(a: float, op: str, b: float) -> bool:
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b, "==": a == b,
            "!=": a != b}[op]


def _loki_label_value(value: Any) -> str:
    """A JSON value as Loki's json parser turns it into a label value."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


@dataclass
class Use:
    """How a rule uses one extracted field, for the type checks."""

    field: str
    needs: str  # number | string | scalar


@dataclass
class Evaluator:
    """Evaluates a parse tree on log lines; records how extracted fields are used."""

    stream: dict[str, str]
    lines: list[str]
    uses: dict[str, list[Use]] = field(default_factory=dict)  # event name -> uses

    def eval(self, node: Node) -> Vector:
        if node.kind == "range":
            return self.range(node.args[0])
        if node.kind == "vector":
            inner = self.eval(node.args[0])
            groups: dict[Labels, list[float]] = {}
            for labels, value in inner.items():
                key = frozenset((k, v) for k, v in labels if k in node.by)
                groups.setdefault(key, []).append(value)
            agg: dict[str, Callable[[list[float]], float]] = {
                "sum": sum, "max": max, "min": min, "count": len}
            return {k: float(agg[node.func](v)) for k, v in groups.items()}
        if node.kind == "compare":
            inner = self.eval(node.args[0])
            return {k: v for k, v in inner.items() if _compare(v, node.op, node.number)}
        left, right = self.eval(node.args[0]), self.eval(node.args[1])
        if node.op == "unless":
            return {k: v for k, v in left.items() if k not in right}
        if node.op == "and":
            return {k: v for k, v in left.items() if k in right}
        return {**right, **left}

    def range(self, lr: LogRange) -> Vector:
        assert lr.selector.items() <= self.stream.items(), f"selector {lr.selector} does not " \
            f"select the stream {self.stream}"
        out: dict[Labels, list[float]] = {}
        for line in self.lines:
            matched = self.pipeline(lr.stages, line)
            if matched is None:
                continue
            labels, value = matched
            out.setdefault(frozenset({**self.stream, **labels}.items()), []).append(value)
        if lr.func == "count_over_time":
            return {k: float(len(v)) for k, v in out.items()}
        fn: dict[str, Callable[[list[float]], float]] = {
            "max_over_time": max, "min_over_time": min, "sum_over_time": sum}
        return {k: fn[lr.func](v) for k, v in out.items()}

    def pipeline(self, stages: list[Stage], line: str) -> tuple[dict[str, str], float] | None:
        labels: dict[str, str] = {}
        record: dict[str, Any] | None = None
        value = math.nan
        for st in stages:
            if st.kind == "line":
                hit = (st.value in line) if st.op in {"|=", "!="} else bool(
                    re.search(st.value, line))
                if hit != (st.op in {"|=", "|~"}):
                    return None
            elif st.kind == "json":
                try:
                    parsed = json.loads(line)
                    record = parsed if isinstance(parsed, dict) else None
                except ValueError:
                    record = None
                if record is None:
                    labels["__error__"] = "JSONParserErr"
                    continue
                for label, path in st.params.items():
                    if path in record and record[path] is not None:
                        labels[label] = _loki_label_value(record[path])
            elif st.kind == "error":
                if labels.get("__error__", "") != st.value:
                    return None
                labels.pop("__error__", None)
            elif st.kind == "string":
                got = labels.get(st.label, "")
                self.use(record, st.label, stages, "string")
                ok = {"=": got == st.value, "!=": got != st.value,
                      "=~": re.fullmatch(st.value, got) is not None,
                      "!~": re.fullmatch(st.value, got) is None}[st.op]
                if not ok:
                    return None
            elif st.kind == "number":
                self.use(record, st.label, stages, "number")
                assert st.label in labels, f"numeric filter on {st.label}, absent in {line}"
                if not _compare(float(labels[st.label]), st.op, st.value):
                    return None
            elif st.kind == "unwrap":
                self.use(record, st.label, stages, "number")
                value = float(labels.pop(st.label))
        for label in list(labels):  # every extracted field of a selected event is used
            self.use(record, label, stages, "scalar")
        return labels, value

    def use(self, record: dict[str, Any] | None, label: str, stages: list[Stage],
            needs: str) -> None:
        if record is None or "event" not in record:
            return
        fields = {lbl: path for st in stages if st.kind == "json" for lbl, path in
                  st.params.items()}
        self.uses.setdefault(record["event"], []).append(Use(fields.get(label, label), needs))


def parse_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(LOKI_RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def log_ranges(node: Node) -> Iterator[LogRange]:
    for arg in node.args:
        if isinstance(arg, LogRange):
            yield arg
        elif isinstance(arg, Node):
            yield from log_ranges(arg)


def selected_events(lr: LogRange) -> set[str]:
    """The event names a log query selects: its ``event="..."`` or ``event=~"a|b"`` filter."""
    names: set[str] = set()
    for st in lr.stages:
        if st.kind == "string" and st.label == "event":
            assert st.op in {"=", "=~"}, f"event filter {st.op} {st.value}"
            names |= {st.value} if st.op == "=" else set(st.value.split("|"))
    return names


# --- the real runs -----------------------------------------------------------------------------

@dataclass
class Runs:
    """The stderr of every real run, and the interrupted run's log cut at s43_run_started."""

    stderr: list[str]
    killed: str  # what a SIGKILL after s43_run_started leaves of the interrupted run's log
    codes: dict[str, int]

    @property
    def lines(self) -> list[str]:
        return [line for text in self.stderr for line in text.splitlines()]

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.lines:
            if line.startswith("{"):
                record = json.loads(line)
                if "event" in record:
                    found.append(record)
        return found


def _cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, err.getvalue()


def _interrupted_run(run_id: str, store_flags: list[str]) -> tuple[int, str, str]:
    """``s43-ray run`` in a subprocess on the session's cluster, with members that hang;
    SIGTERM once it logged s43_run_started. Returns the exit code, the whole stderr, and the
    stderr up to and including s43_run_started."""
    import ray

    exe = Path(sys.executable).parent / "s43-ray"
    # tests.predictors importable by the driver (its sys.path[0] is the venv's bin) and workers
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "PYTHONPATH": path}
    proc = subprocess.Popen(
        [str(exe), "run", "--run-id", run_id, "--cohort-size", "2", "--rows", "10",
         "--predictor", "tests.predictors:hang", *store_flags],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    head = []
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            head.append(line)
            if line.startswith("{") and json.loads(line).get("event") == ev.RUN_STARTED:
                break
        assert head and ev.RUN_STARTED in head[-1], "".join(head)[-3000:]
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(head) + rest, "".join(head)


@pytest.fixture(scope="module")
def runs(ray_cluster: None, s3_server: LocalS3, aws_env: dict[str, str]) -> Runs:
    prefix = f"t/loki-{uuid.uuid4().hex[:8]}"
    cfg = StoreConfig(bucket=TEST_BUCKET, prefix=prefix, endpoint_url=s3_server.endpoint_url,
                      region="us-east-1", max_attempts=2)
    store = S3Store(cfg)
    flags = ["--store", cfg.url, "--endpoint-url", s3_server.endpoint_url,
             "--max-attempts", "2"]
    stderr: list[str] = []
    codes: dict[str, int] = {}

    def cli(name: str, *argv: str) -> None:
        code, err = _cli(*argv)
        codes[name] = code
        stderr.append(err)

    for run_id in ("loki-ok", "loki-corrupt", "loki-deleted", "loki-noledger"):
        cli(f"run {run_id}", "run", "--run-id", run_id, "--cohort-size", "3", "--rows", ROWS,
            *flags)
    cli("predictor raises", "run", "--run-id", "loki-predictor", "--cohort-size", "2",
        "--rows", ROWS, "--predictor", "math:hypot", *flags)
    # A member whose bytes changed in the store after it was written (one flipped byte in the
    # middle): same size, same metadata, the recorded checksum no longer matches.
    key = f"{prefix}/loki-corrupt/m00001.arrow"
    body = bytearray(store.get(key)[0])
    body[len(body) // 2] ^= 0xFF
    store.put(key, bytes(body), metadata=store.head(key).metadata)
    cli("gate corrupt", "gate", "--run-id", "loki-corrupt", *flags)
    store.delete(f"{prefix}/loki-deleted/m00002.arrow")
    cli("gate deleted", "gate", "--run-id", "loki-deleted", *flags)
    # Every member present and sound, but no ledger: as if the driver died before gathering.
    store.delete(f"{prefix}/loki-noledger/_ledgers/000001.json")
    cli("gate without ledger", "gate", "--run-id", "loki-noledger", *flags)
    proxy = FaultProxy(s3_server.endpoint_url).start()
    try:  # the store refuses the verdict write
        proxy.add(Rule("PUT", "/_gate.json", "status", status=403, code="AccessDenied",
                       times=None))
        cli("gate persist refused", "gate", "--run-id", "loki-ok", "--store", cfg.url,
            "--endpoint-url", proxy.endpoint_url, "--max-attempts", "2")
    finally:
        proxy.stop()
    (closed_port,) = free_ports(1)
    cli("store unreachable", "run", "--run-id", "loki-unreachable", "--cohort-size", "2",
        "--store", cfg.url, "--endpoint-url", f"http://127.0.0.1:{closed_port}",
        "--max-attempts", "1")
    code, whole, killed = _interrupted_run("loki-interrupted", flags)
    codes["interrupted"] = code
    stderr.append(whole)
    return Runs(stderr, killed, codes)


# Which runs each alert must fire for, with the labels it groups by (the rule's own labels
# aside). The interrupted run's log ends with s43_run_failed, so S43GateOutcomeMissing fires
# only on the log a SIGKILL would have left (test below).
EXPECTED: dict[str, list[dict[str, str]]] = {
    "S43PredictionPersistFailed": [{"run_id": "loki-predictor", "error_class": "predictor"}],
    "S43PredictionLoadFailed": [{"run_id": "loki-corrupt", "error_class": "checksum"}],
    "S43GatePersistFailed": [{"run_id": "loki-ok", "error_class": "auth"}],
    "S43GateShortfall": [
        {"run_id": "loki-predictor", "expected": "2", "cohort_count": "0"},
        {"run_id": "loki-corrupt", "expected": "3", "cohort_count": "2"},
        {"run_id": "loki-deleted", "expected": "3", "cohort_count": "2"}],
    "S43GateFailedWithoutShortfall": [{"run_id": "loki-noledger", "expected": "3",
                                       "cohort_count": "3"}],
    "S43RunFailed": [
        {"run_id": "loki-unreachable", "command": "run", "error_class": "unreachable"},
        {"run_id": "loki-interrupted", "command": "run", "error_class": "interrupted"}],
    "S43GateOutcomeMissing": [],
}
STREAM = {"app": "s43-ray"}


def fired(rule: dict[str, Any], lines: list[str]) -> tuple[list[dict[str, str]], Evaluator]:
    evaluator = Evaluator(STREAM, lines)
    result = evaluator.eval(Parser(rule["expr"]).parse())
    labels = [{k: v for k, v in key if k not in STREAM} for key in result]
    return sorted(labels, key=lambda d: sorted(d.items())), evaluator


def _sorted(items: list[dict[str, str]]) -> list[dict[str, str]]:
    return sorted(items, key=lambda d: sorted(d.items()))


def test_the_failing_runs_failed_as_intended(runs: Runs) -> None:
    assert runs.codes == {
        "run loki-ok": 0, "run loki-corrupt": 0, "run loki-deleted": 0, "run loki-noledger": 0,
        "predictor raises": 1, "gate corrupt": 1, "gate deleted": 1, "gate without ledger": 1,
        "gate persist refused": 3, "store unreachable": 3, "interrupted": 130}


def test_every_rule_is_tested_here() -> None:
    assert sorted(rule["alert"] for rule in parse_rules()) == sorted(EXPECTED)


@pytest.mark.parametrize("alert", sorted(EXPECTED))
def test_alert_fires_for_exactly_the_runs_it_should(runs: Runs, alert: str) -> None:
    (rule,) = [r for r in parse_rules() if r["alert"] == alert]
    got, _ = fired(rule, runs.lines)
    assert got == _sorted(EXPECTED[alert])


@pytest.mark.parametrize("alert", sorted(EXPECTED))
def test_every_event_and_field_a_rule_selects_on_is_really_emitted(runs: Runs,
                                                                   alert: str) -> None:
    (rule,) = [r for r in parse_rules() if r["alert"] == alert]
    tree = Parser(rule["expr"]).parse()
    emitted = runs.events()
    by_name: dict[str, list[dict[str, Any]]] = {}
    for record in emitted:
        by_name.setdefault(record["event"], []).append(record)
    _, evaluator = fired(rule, runs.lines)
    for lr in log_ranges(tree):
        names = selected_events(lr)
        assert names, f"{alert}: a query selects no event by name"
        for name in names:
            assert name in ev.EVENT_NAMES, f"{alert}: {name} is not an event s43_ray emits"
            assert by_name.get(name), f"{alert}: no {name} event in the real runs"
            line_filters = [st.value for st in lr.stages if st.kind == "line"]
            assert any(name in f or re.search(f, name) for f in line_filters), \
                f"{alert}: the line filter {line_filters} drops {name}"
            params = {path for st in lr.stages if st.kind == "json"
                      for path in st.params.values()}
            for record in by_name[name]:
                missing = params - set(record)
                assert not missing, f"{alert}: {name} lacks {sorted(missing)}: {record}"
                for path in params:
                    assert not isinstance(record[path], (list, dict)), (alert, name, path)
        for st in lr.stages:
            if st.kind == "string" and st.label not in {"event", "__error__"}:
                path = next(p for s in lr.stages if s.kind == "json"
                            for lbl, p in s.params.items() if lbl == st.label)
                matching = [r for n in names for r in by_name[n]]
                assert any(isinstance(r[path], str) and re.fullmatch(
                    st.value if st.op == "=~" else re.escape(st.value), r[path])
                    for r in matching), f"{alert}: no real {names} with {path} {st.op} " \
                                        f"{st.value!r}"
                if st.label == "severity":  # failures are always severity=error
                    assert {r["severity"] for r in matching} == {st.value}, (alert, names)
    for name, uses in evaluator.uses.items():
        for use in uses:
            for record in by_name.get(name, []):
                value = record.get(use.field)
                if use.needs == "number":
                    assert isinstance(value, (int, float)) and not isinstance(value, bool), \
                        f"{alert}: {name}.{use.field} must be a JSON number: {value!r}"
                elif use.needs == "string":
                    assert isinstance(value, str), \
                        f"{alert}: {name}.{use.field} must be a JSON string: {value!r}"


def test_gate_outcome_missing_fires_for_a_run_whose_driver_died(runs: Runs) -> None:
    (rule,) = [r for r in parse_rules() if r["alert"] == "S43GateOutcomeMissing"]
    others = [text for text in runs.stderr if "loki-interrupted" not in text]
    killed = [line for text in [*others, runs.killed] for line in text.splitlines()]
    assert not [line for line in runs.killed.splitlines()
                if ev.RUN_FAILED in line or ev.GATE_OUTCOME in line]

    got, _ = fired(rule, killed)

    assert got == [{"run_id": "loki-interrupted"}]
    # ... and not once the same run logs an end (here s43_run_failed, interrupted)
    assert fired(rule, runs.lines)[0] == []


def test_passing_runs_fire_no_alert(runs: Runs) -> None:
    passing = [runs.stderr[0]]  # `run loki-ok`: passed
    assert '"status":"passed"' in passing[0]
    for rule in parse_rules():
        got, _ = fired(rule, [line for text in passing for line in text.splitlines()])
        assert got == [], rule["alert"]


def test_the_parser_reads_what_the_rules_mean() -> None:
    """Pin the parse of one expression, so a parser bug cannot make every test vacuous."""
    (rule,) = [r for r in parse_rules() if r["alert"] == "S43GateShortfall"]
    tree = Parser(rule["expr"]).parse()
    assert tree.kind == "compare" and tree.op == ">" and tree.number == 0
    agg = tree.args[0]
    assert agg.kind == "vector" and agg.func == "max"
    assert agg.by == ("run_id", "expected", "cohort_count")
    (lr,) = log_ranges(tree)
    assert lr.func == "max_over_time" and lr.selector == STREAM and lr.window == "5m"
    kinds = [(st.kind, st.label, st.op, st.value) for st in lr.stages]
    assert kinds == [("line", "", "|=", "s43_gate_outcome"), ("json", "", "", None),
                     ("error", "", "=", ""), ("string", "event", "=", "s43_gate_outcome"),
                     ("number", "shortfall", ">", 0.0), ("unwrap", "shortfall", "", None)]
    line = json.dumps({"event": "s43_gate_outcome", "run_id": "r", "shortfall": 2,
                       "expected": 5, "cohort_count": 3})
    assert Evaluator(STREAM, [line, "not json", line.replace(": 2", ": 0")]).eval(tree) == {
        frozenset({"run_id": "r", "expected": "5", "cohort_count": "3"}.items()): 2.0}
