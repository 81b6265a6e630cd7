"""The project's metrics, scraped over HTTP from a Ray node's metrics export port.

A Ray head of this module's own (``ray start --head --block``, loopback, free ports, its own
short temp dir, token auth, ``--metrics-export-port``), with metrics reported every 500 ms
(``RAY_metrics_report_interval_ms``). Drivers run in subprocesses: the pytest process may
already be connected to the session's Ray cluster. Starting and stopping the head (by PID,
never ``ray stop``) is ``tests/ray_heads.py``'s, shared with the job-submit test.

Ray 2.60 exports a gauge only when it is set and drops it ~2 report intervals later, so a
thread scrapes every 250 ms while the driver runs and keeps every value it saw.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import parse_events
from prometheus_client.parser import text_string_to_metric_families
from ray_heads import VENV_BIN, RayHead, running_head, start_head, wait_ready

from s43_ray import metrics
from s43_ray.config import StoreConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
# Workers and drivers report to their node's agent this often (Ray's default is 10 s).
REPORT_INTERVAL_MS = 500
HEAD_START_TIMEOUT_S = 90.0
SCRAPE_TIMEOUT_S = 30.0  # Ray exports with a delay: wait this long for the series
SCRAPE_EVERY_S = 0.25  # below the ~2 s a gauge stays exported at this report interval
DRIVER_TIMEOUT_S = 180.0

Labels = frozenset[tuple[str, str]]
# Labels Ray adds to every series of a user metric (besides the metric's own tags).
RAY_LABELS = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId",
              "otel_scope_name"}


def _wait_ready(head: RayHead) -> None:
    def probe() -> bool:
        with socket.create_connection(("127.0.0.1", head.ports["gcs"]), timeout=1):
            pass
        with urllib.request.urlopen(head.metrics_url, timeout=2) as resp:
            return bool(resp.status == 200)

    wait_ready(head, probe, what="Ray head", timeout=HEAD_START_TIMEOUT_S)


@pytest.fixture(scope="module")
def metrics_head(aws_env: dict[str, str]) -> Iterator[RayHead]:
    """A Ray head with a metrics export port, of this module's own. Its environment is the
    pods' environment (S3 credentials from aws_env included); drivers run with it too."""
    head = start_head(dashboard=False,
                      extra_env={"RAY_metrics_report_interval_ms": str(REPORT_INTERVAL_MS)})
    with running_head(head):
        _wait_ready(head)
        yield head


# --- scraping ---------------------------------------------------------------------------------

def scrape(url: str) -> dict[tuple[str, Labels], float]:
    """Every ``s43`` sample on the endpoint: (sample name, labels) -> value."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("ray_s43_"):
                out[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return out


@dataclass
class Scraper:
    """Scrapes in a thread; keeps the last value of each series and the highest seen."""

    url: str
    last: dict[tuple[str, Labels], float] = field(default_factory=dict)
    highest: dict[tuple[str, Labels], float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def once(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            got = scrape(self.url)
            with self._lock:
                self.last.update(got)
                for key, value in got.items():
                    self.highest[key] = max(value, self.highest.get(key, value))

    def __enter__(self) -> Scraper:
        def loop() -> None:
            while not self._stop.is_set():
                self.once()
                self._stop.wait(SCRAPE_EVERY_S)
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def total(self, name: str, **labels: str) -> float:
        """Sum of the last values of every series of ``name`` whose labels include ``labels``."""
        return self._sum(self.last, name, labels)

    def peak(self, name: str, **labels: str) -> float:
        """Like :meth:`total`, of the highest value each series had (gauges come and go)."""
        return self._sum(self.highest, name, labels)

    def _sum(self, source: Mapping[tuple[str, Labels], float], name: str,
             labels: Mapping[str, str]) -> float:
        want = set(labels.items())
        with self._lock:
            return sum(v for (n, lbl), v in source.items() if n == name and want <= lbl)

    def series(self, name: str, **labels: str) -> list[dict[str, str]]:
        want = set(labels.items())
        with self._lock:
            return [dict(lbl) for (n, lbl) in self.last if n == name and want <= lbl]


def wait_until(check: Callable[[], list[str]], scraper: Scraper) -> list[str]:
    """Poll ``check`` (it lists what is still missing) for up to SCRAPE_TIMEOUT_S."""
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    missing = check()
    while missing and time.monotonic() < deadline:
        time.sleep(0.5)
        missing = check()
    return missing


def run_driver(head: RayHead, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), head.gcs_address],
                          env=head.env, cwd=REPO_ROOT, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=DRIVER_TIMEOUT_S)


# --- the module's functions, called in a Ray task: the export path works now -------------------

RUN_ID = "manual__2026-11-28T10:00:00+00:00"  # an Airflow run id as a label value

RECORDING_DRIVER = f"""
import sys
import ray
from s43_ray import metrics
from s43_ray.errors import AccessDenied
from s43_ray.stores import hooks

@ray.remote
def pod():
    metrics.watch_stores()  # as the persist and gate tasks do
    metrics.record_s3("put", "arrow", 0.02, 1234)  # the 0.025 bucket
    metrics.record_s3("GetObject", "npz", 0.7, 1000)  # botocore's name; the 1.0 bucket
    metrics.record_s3("list", "none", 0.004)
    metrics.record_s3_error("GET", "checksum")  # the store's name
    metrics.record_retry("PutObject")
    metrics.record_retry("put")
    metrics.record_gate("failed")
    metrics.record_cohort("{RUN_ID}", 4, 3, "s3://b/p")
    try:
        with hooks.request("head", metadata={{"s43-codec": "arrow"}}):
            raise LookupError("no error_class: latency only")
    except LookupError:
        pass
    try:
        with hooks.request("delete"):
            raise AccessDenied("DELETE s3://b/k: access denied")
    except AccessDenied:
        pass
    return ray.get_runtime_context().get_worker_id()

ray.init(address=sys.argv[1], logging_level="WARNING")
print("WORKER", ray.get(pod.remote()))
metrics.record_gate("passed")  # from the driver too: it reports to the head's agent
print("DRIVER", ray.get_runtime_context().get_worker_id())
ray.shutdown()  # flushes the driver's metrics
"""


def test_metrics_recorded_in_a_ray_task_are_exported_on_the_metrics_port(
        metrics_head: RayHead) -> None:
    with Scraper(metrics_head.metrics_url) as scraper:
        proc = run_driver(metrics_head, RECORDING_DRIVER)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        ids = dict(line.split() for line in proc.stdout.splitlines()
                   if line.startswith(("WORKER ", "DRIVER ")))
        worker, driver = ids["WORKER"], ids["DRIVER"]
        hist = metrics.EXPORTED_NAMES[metrics.S3_REQUEST_SECONDS]

        def expect() -> dict[str, bool]:
            w = {"WorkerId": worker}
            return {
                f"{hist}_bucket put arrow le=0.01": scraper.total(
                    f"{hist}_bucket", operation="put", codec="arrow", le="0.01", **w) == 0,
                f"{hist}_bucket put arrow le=0.025": scraper.total(
                    f"{hist}_bucket", operation="put", codec="arrow", le="0.025", **w) == 1,
                f"{hist}_bucket get npz le=1.0": scraper.total(
                    f"{hist}_bucket", operation="get", codec="npz", le="1.0", **w) == 1,
                f"{hist}_bucket get npz le=+Inf": scraper.total(
                    f"{hist}_bucket", operation="get", codec="npz", le="+Inf", **w) == 1,
                f"{hist}_count list none": scraper.total(
                    f"{hist}_count", operation="list", codec="none", **w) == 1,
                f"{hist}_count head arrow": scraper.total(
                    f"{hist}_count", operation="head", codec="arrow", **w) == 1,
                "write bytes": scraper.total("ray_s43_s3_write_bytes_total", codec="arrow",
                                             **w) == 1234,
                "read bytes": scraper.total("ray_s43_s3_read_bytes_total", codec="npz",
                                            **w) == 1000,
                "errors": scraper.total("ray_s43_s3_errors_total", operation="get",
                                        error_class="checksum", **w) == 1,
                "error of a store call": scraper.total(
                    "ray_s43_s3_errors_total", operation="delete", error_class="auth", **w) == 1,
                f"{hist}_count delete none": scraper.total(
                    f"{hist}_count", operation="delete", codec="none", **w) == 1,
                "retries": scraper.total("ray_s43_s3_retries_total", operation="put",
                                         **w) == 2,
                "gate failed (task)": scraper.total("ray_s43_gate_outcomes_total",
                                                    status="failed", **w) == 1,
                "gate passed (driver)": scraper.total("ray_s43_gate_outcomes_total",
                                                      status="passed", WorkerId=driver) == 1,
                "cohort expected": scraper.peak("ray_s43_cohort_expected_members",
                                                run_id=RUN_ID, store="s3://b/p", **w) == 4,
                "cohort counted": scraper.peak("ray_s43_cohort_counted_members",
                                               run_id=RUN_ID, store="s3://b/p", **w) == 3,
            }

        missing = wait_until(lambda: [k for k, ok in expect().items() if not ok], scraper)
    assert not missing, (missing, sorted(n for n, _ in scraper.last))
    # Every 15 buckets plus +Inf, labelled as Ray prints floats; Ray's labels on every series.
    les = {s["le"] for s in scraper.series(f"{hist}_bucket", WorkerId=worker)}
    assert les == {repr(b) for b in metrics.S3_LATENCY_BUCKETS} | {"+Inf"}
    for labels in scraper.series(f"{hist}_count", WorkerId=worker):
        assert set(labels) >= RAY_LABELS, labels
        assert set(labels) - RAY_LABELS - {"otel_scope_schema_url", "otel_scope_version"} == {
            "operation", "codec"}, labels
        assert labels["Component"] == "core_worker" and labels["NodeAddress"] == "127.0.0.1"


# --- a real cohort through `s43-ray run --address`: needs the calls wired into the project ------

def _store_flags(cfg: StoreConfig) -> list[str]:
    return ["--store", cfg.url, "--endpoint-url", str(cfg.endpoint_url), "--max-attempts", "2"]


def _deltas(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def test_s43_ray_run_exports_s3_and_cohort_metrics_on_the_metrics_port(
        metrics_head: RayHead, store_cfg: StoreConfig) -> None:
    run_id = "metrics__2026-11-30T10:00:00+00:00"
    hist = "ray_s43_s3_request_seconds"
    queries = {  # name -> (sample, labels, highest)
        "put arrow": (f"{hist}_count", {"operation": "put", "codec": "arrow"}),
        "get arrow": (f"{hist}_count", {"operation": "get", "codec": "arrow"}),
        "list": (f"{hist}_count", {"operation": "list"}),
        "written": ("ray_s43_s3_write_bytes_total", {"codec": "arrow"}),
        "read": ("ray_s43_s3_read_bytes_total", {"codec": "arrow"}),
        "gate passed": ("ray_s43_gate_outcomes_total", {"status": "passed"}),
    }
    with Scraper(metrics_head.metrics_url) as scraper:
        scraper.once()
        before = {k: scraper.total(n, **lbl) for k, (n, lbl) in queries.items()}
        proc = subprocess.run(
            [str(VENV_BIN / "s43-ray"), "run", "--address", metrics_head.gcs_address,
             "--run-id", run_id, "--cohort-size", "4", "--rows", "1000", "--json",
             *_store_flags(store_cfg)],
            env=metrics_head.env, cwd=REPO_ROOT, capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=DRIVER_TIMEOUT_S)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        assert summary["cohort_count"] == 4
        assert parse_events(proc.stderr), "no events: not the s43-ray under test?"

        def expect() -> dict[str, bool]:
            d = _deltas({k: scraper.total(n, **lbl) for k, (n, lbl) in queries.items()}, before)
            return {
                "4 PUTs of arrow members": d["put arrow"] == 4,
                "4 GETs of arrow members (full verify)": d["get arrow"] == 4,
                "the gate's LIST": d["list"] >= 1,
                "bytes written = summary": d["written"] == summary["bytes_written"],
                "bytes read = summary": d["read"] == summary["bytes_read"],
                "one passed gate": d["gate passed"] == 1,
                "cohort expected 4": scraper.peak("ray_s43_cohort_expected_members",
                                                  run_id=run_id) == 4,
                "cohort counted 4": scraper.peak("ray_s43_cohort_counted_members",
                                                 run_id=run_id) == 4,
            }

        missing = wait_until(lambda: [k for k, ok in expect().items() if not ok], scraper)
    assert not missing, (f"s43 series missing or wrong after {SCRAPE_TIMEOUT_S:.0f}s: "
                         f"{missing}; s43 series seen: {sorted({n for n, _ in scraper.last})}")
