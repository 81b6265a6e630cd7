"""``s43_ray.ops.runs``: the runs under a prefix, newest first, each verdict recomputed (pure:
in-memory and folder stores, no Ray, no S3). Runs are made as a driver makes them: the record
claimed, an attempt claimed, members persisted, the ledger written, the gate saved."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from made_runs import MEMBERS, ROWS, make_run

from s43_ray.circuit import Circuit, CircuitConfig, WatchedStore
from s43_ray.config import FileStoreConfig, StoreConfig
from s43_ray.errors import StoreUnreachable
from s43_ray.keys import RunLayout
from s43_ray.ledger import claim_attempt
from s43_ray.ops.runs import list_runs, runs_report
from s43_ray.predict import DEFAULT_PREDICTOR
from s43_ray.stores.base import Store
from s43_ray.stores.file import FileStore
from s43_ray.stores.memory import MemoryStore
from s43_ray.task import TaskSpec, persist_member

PREFIX = "p"
TINY = CircuitConfig(probe_after=0.05, probe_interval=0.05, probe_timeout=0.1, probes=2)
MEM_CFG = StoreConfig(bucket="memory", prefix=PREFIX)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def _gate(store: MemoryStore, layout: RunLayout) -> dict[str, object]:
    record: dict[str, object] = json.loads(store.objects[layout.gate_key][0])
    return record


def _rewrite(store: MemoryStore, key: str, record: object) -> None:
    _, meta, ts = store.objects[key]
    store.objects[key] = (json.dumps(record).encode(), meta, ts)


# --- list_dirs: the folders under a prefix, never the keys inside them ----------------------

KEYS = ["p/a/x", "p/a/y/z", "p/b/1", "p/loose", "pp/d/1", "q/c/_gates/v.json"]


def _file_store(root: Path) -> FileStore:
    return FileStore(FileStoreConfig(root=str(root)))


@pytest.fixture(params=["memory", "file"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    s: Store = MemoryStore() if request.param == "memory" else _file_store(tmp_path)
    for key in KEYS:
        s.put(key, b"x", metadata={})
    return s


@pytest.mark.parametrize(("prefix", "folders"), [
    ("p/", ["p/a/", "p/b/"]),
    ("", ["p/", "pp/", "q/"]),
    ("p", ["p/", "pp/"]),
    ("p/a", ["p/a/"]),
    ("p/a/", ["p/a/y/"]),
    ("q/", ["q/c/"]),
    ("q/c/", ["q/c/_gates/"]),
    ("nothing/", []),
    ("p/b/", []),
], ids=["runs", "root", "partial-root", "partial", "nested", "control-only", "control",
        "absent", "only-keys"])
def test_list_dirs_names_the_folders_under_a_prefix_in_key_order(
        any_store: Store, prefix: str, folders: list[str]) -> None:
    assert list(any_store.list_dirs(prefix)) == folders


def test_the_file_store_lists_no_empty_folder_nor_its_own_control_folders(
        tmp_path: Path) -> None:
    fstore = _file_store(tmp_path)
    fstore.put("p/run1/m.npz", b"x", metadata={"a": "b"})
    fstore.put("p/run2/m.npz", b"x", metadata={})
    (tmp_path / "p" / "empty" / "_gates").mkdir(parents=True)
    fstore.delete("p/run2/m.npz")  # a run gc deleted: its folder stays, with nothing in it

    assert list(fstore.list_dirs("p/")) == ["p/run1/"]
    assert list(fstore.list_dirs("")) == ["p/"]  # not .s43-meta/ nor .s43-tmp/
    assert (tmp_path / ".s43-meta").is_dir()


def test_the_watched_store_tells_the_circuit_of_folder_listings() -> None:
    class Unreachable(MemoryStore):
        def list_dirs(self, prefix: str) -> Iterator[str]:
            raise StoreUnreachable(f"LIST {self.url}/{prefix}: unreachable")

    inner = MemoryStore()
    inner.put("p/r1/a", b"x", metadata={})
    circuit = Circuit(lambda timeout: None)
    circuit.failure("unreachable")

    assert list(WatchedStore(inner, circuit).list_dirs("p/")) == ["p/r1/"]
    assert circuit.consecutive_failures == 0  # an answer is progress
    with pytest.raises(StoreUnreachable):
        list(WatchedStore(Unreachable(), circuit).list_dirs("p/"))
    assert circuit.consecutive_failures == 1


# --- list_runs --------------------------------------------------------------------------------


def test_runs_are_listed_newest_first_by_their_records_created_at(store: MemoryStore) -> None:
    # Names sort the other way round from creation: the record's time decides, not the name.
    make_run(store, MEM_CFG, "a-newest", "2026-12-03T10:00:00.000Z")
    make_run(store, MEM_CFG, "b-oldest", "2026-12-01T10:00:00.000Z")
    make_run(store, MEM_CFG, "c-middle", "2026-12-02T10:00:00.000Z", persisted=MEMBERS[:2])

    runs = list_runs(store, PREFIX)

    assert [r.run_id for r in runs] == ["a-newest", "c-middle", "b-oldest"]
    newest = runs[0]
    assert newest.status == "passed" and newest.claimed == "passed" and newest.notes == []
    assert (newest.cohort_count, newest.expected, newest.members) == (3, 3, 3)
    assert newest.codec == "npz" and newest.attempt == 1 and newest.latest_attempt == 1
    assert newest.created_at == "2026-12-03T10:00:00.000Z"
    assert newest.finished_at is not None and newest.finished_at.endswith("Z")


def test_a_failed_verdict_is_failed_with_its_reason(store: MemoryStore) -> None:
    make_run(store, MEM_CFG, "r-failed", "2026-12-01T10:00:00.000Z", persisted=MEMBERS[:2])

    (run,) = list_runs(store, PREFIX)

    assert run.status == "failed" and run.claimed == "failed"
    assert (run.cohort_count, run.expected) == (2, 3)
    assert "m00002" in run.note and "missing" in run.note


def test_a_run_without_a_verdict_says_so(store: MemoryStore) -> None:
    make_run(store, MEM_CFG, "r-nogate", "2026-12-01T10:00:00.000Z", gate=False)

    (run,) = list_runs(store, PREFIX)

    assert run.status == "no_verdict" and run.claimed is None
    assert run.cohort_count is None and run.finished_at is None and run.attempt is None
    assert run.members == 3 and run.latest_attempt == 1
    assert "no verdict (attempt 1 claimed)" in run.note
    assert "s43-ray gate --run-id r-nogate" in run.note


def test_a_forged_gate_claiming_passed_is_not_passed(store: MemoryStore) -> None:
    layout = make_run(store, MEM_CFG, "r-forged", "2026-12-01T10:00:00.000Z",
                      persisted=MEMBERS[:2])
    record = _gate(store, layout)
    assert record["status"] == "failed"
    record.update(status="passed", cohort_count=3, missing=[], shortfall=0, reason="all good")
    _rewrite(store, layout.gate_key, record)

    (run,) = list_runs(store, PREFIX)

    assert run.status == "inconsistent" and run.claimed == "passed"
    assert "claims 'passed' but its own checks do not prove it" in run.note
    assert (run.cohort_count, run.expected) == (2, 3)  # from its checks, not its claim


def test_a_forged_gate_whose_checks_are_forged_too_is_not_passed(store: MemoryStore) -> None:
    layout = make_run(store, MEM_CFG, "r-forged2", "2026-12-01T10:00:00.000Z",
                      persisted=MEMBERS[:2])
    record = _gate(store, layout)
    checks = record["checks"]
    assert isinstance(checks, list)
    for check in checks:
        check.update(status="ok", checksum=check.get("checksum") or "crc64nvme:AAAAAAAAAAA=")
    record.update(status="passed", cohort_count=3, missing=[], shortfall=0)
    _rewrite(store, layout.gate_key, record)

    (run,) = list_runs(store, PREFIX)

    assert run.status == "inconsistent" and run.claimed == "passed"
    assert "'m00002'" in run.note and "ledger" in run.note


def test_a_gate_written_by_hand_on_a_run_that_never_gated_is_not_passed(
        store: MemoryStore) -> None:
    layout = make_run(store, MEM_CFG, "r-handmade", "2026-12-01T10:00:00.000Z", gate=False)
    store.put(layout.gate_key, json.dumps({
        "run_id": "r-handmade", "status": "passed", "expected": 3, "cohort_count": 3,
        "checks": [{"member": m, "status": "ok"} for m in MEMBERS], "attempt": 1,
        "finished_at": "2026-12-01T10:00:05.000Z"}).encode(), metadata={})

    (run,) = list_runs(store, PREFIX)

    assert run.status == "inconsistent" and run.claimed == "passed"
    assert run.finished_at == "2026-12-01T10:00:05.000Z"


def test_a_verdict_that_is_not_json_is_no_verdict_and_says_why(store: MemoryStore) -> None:
    layout = make_run(store, MEM_CFG, "r-garbled", "2026-12-01T10:00:00.000Z")
    store.put(layout.gate_key, b"{not json", metadata={})

    (run,) = list_runs(store, PREFIX)

    assert run.status == "no_verdict" and "_gate.json is not JSON" in run.note


def test_a_newer_attempt_after_the_verdict_is_noted(store: MemoryStore) -> None:
    layout = make_run(store, MEM_CFG, "r-rerun", "2026-12-01T10:00:00.000Z")
    claim_attempt(store, layout, "rerun")  # a re-run that has not gated (yet)

    (run,) = list_runs(store, PREFIX)

    assert run.status == "passed" and run.attempt == 1 and run.latest_attempt == 2
    assert "attempt 2 began after this verdict (attempt 1)" in run.note


def test_limit_keeps_the_newest_and_counts_the_others(store: MemoryStore) -> None:
    for day in (1, 2, 3, 4):
        make_run(store, MEM_CFG, f"r-day{day}", f"2026-12-0{day}T10:00:00.000Z")

    report = runs_report(store, PREFIX, limit=2)

    assert [r.run_id for r in report.runs] == ["r-day4", "r-day3"]
    assert (report.total, report.older, report.limit) == (4, 2, 2)
    assert "(+2 older runs; --limit N shows more, --limit 0 all)" in report.human()
    assert [r.run_id for r in list_runs(store, PREFIX)] == ["r-day4", "r-day3", "r-day2",
                                                            "r-day1"]
    assert len(list_runs(store, PREFIX, limit=0)) == 4  # 0: every run


def test_a_run_without_a_record_is_placed_by_its_newest_object(store: MemoryStore) -> None:
    make_run(store, MEM_CFG, "r-dec1", "2026-12-01T10:00:00.000Z")
    make_run(store, MEM_CFG, "r-dec3", "2026-12-03T10:00:00.000Z")
    # Objects only (a lost record, or a run gated with --members): written on 2 December.
    dec2 = 1_764_669_600.0  # 2025-12-02T10:00:00Z
    spec = TaskSpec(store=MEM_CFG, run_id="r-objects", codec="npz", rows=ROWS,
                    predictor=DEFAULT_PREDICTOR)
    for m in MEMBERS:
        persist_member(store, spec, m)
    for key, (body, meta, _) in list(store.objects.items()):
        if "/r-objects/" in key:
            store.objects[key] = (body, meta, dec2)
    for key, (body, meta, _) in list(store.objects.items()):
        if "/r-dec" in key:  # the records' times decide for them, not their objects'
            store.objects[key] = (body, meta, dec2 - 86_400)

    runs = list_runs(store, PREFIX)

    assert [r.run_id for r in runs] == ["r-dec3", "r-dec1", "r-objects"]  # 2025 < 2026
    loose = runs[2]
    assert loose.created_at is None and loose.status == "no_verdict"
    assert loose.newest_object_at == "2025-12-02T10:00:00.000Z"
    assert "no record (_run.json): placed by its newest object" in loose.note


def test_an_empty_store_says_there_are_no_runs(store: MemoryStore) -> None:
    report = runs_report(store, PREFIX)

    assert report.runs == [] and report.total == 0 and report.exit_code == 0
    assert report.human() == "no runs under p/ in memory://memory"
    record = json.loads(report.to_json())
    assert record["runs"] == [] and record["command"] == "runs" and record["total"] == 0


def test_folders_that_are_no_run_ids_are_ignored_and_counted(store: MemoryStore) -> None:
    make_run(store, MEM_CFG, "r-ok", "2026-12-01T10:00:00.000Z")
    store.put("p/not a run/x", b"x", metadata={})
    store.put("elsewhere/r-other/_run.json", b"{}", metadata={})

    report = runs_report(store, PREFIX)

    assert [r.run_id for r in report.runs] == ["r-ok"]
    assert report.ignored == ["not a run"] and report.total == 1
    assert "ignored 1 folder whose name is not a run id: not a run" in report.human()


def test_a_run_deleted_since_the_listing_is_left_out(store: MemoryStore) -> None:
    class Ghosts(MemoryStore):
        def list_dirs(self, prefix: str) -> Iterator[str]:
            yield from super().list_dirs(prefix)
            yield f"{prefix}r-gone/"

    ghosts = Ghosts()
    make_run(ghosts, MEM_CFG, "r-here", "2026-12-01T10:00:00.000Z")

    assert [r.run_id for r in list_runs(ghosts, PREFIX)] == ["r-here"]


def test_the_table_and_the_json_say_the_same(store: MemoryStore) -> None:
    make_run(store, MEM_CFG, "r-pass", "2026-12-02T10:00:00.123Z")
    make_run(store, MEM_CFG, "r-fail", "2026-12-01T10:00:00.000Z", persisted=MEMBERS[:1])

    report = runs_report(store, PREFIX)
    lines = report.human().splitlines()

    assert lines[0].startswith("2 runs under p/ in memory://memory, newest first")
    assert lines[1].split() == ["created", "run", "id", "verdict", "cohort", "members",
                                "codec", "attempt", "finished", "note"]
    assert lines[2].split()[:7] == ["2026-12-02T10:00:00Z", "r-pass", "PASSED", "3/3", "3",
                                    "npz", "1"]
    finished = lines[2].split()[7]  # to the second in the table
    assert finished.endswith("Z") and "." not in finished and len(finished) == 20
    assert lines[3].split()[:7] == ["2026-12-01T10:00:00Z", "r-fail", "FAILED", "1/3", "3",
                                    "npz", "1"]
    record = json.loads(report.to_json())
    assert [r["run_id"] for r in record["runs"]] == ["r-pass", "r-fail"]
    assert record["runs"][1]["status"] == "failed" and record["runs"][1]["cohort_count"] == 1
    assert record["runs"][1]["note"] == "; ".join(record["runs"][1]["notes"])
    assert set(record) == {"command", "store", "prefix", "total", "shown", "older", "limit",
                           "runs", "ignored", "exit_code", "version"}


def test_runs_on_the_folder_store_as_on_memory(tmp_path: Path) -> None:
    cfg = FileStoreConfig(root=str(tmp_path))
    fstore = FileStore(cfg)
    make_run(fstore, cfg, "r-one", "2026-12-01T10:00:00.000Z")
    make_run(fstore, cfg, "r-two", "2026-12-02T10:00:00.000Z", persisted=MEMBERS[:2])

    runs = list_runs(fstore, cfg.prefix)

    assert [(r.run_id, r.status) for r in runs] == [("r-two", "failed"), ("r-one", "passed")]


# --- a store that stops answering -----------------------------------------------------------


class HangingStore(MemoryStore):
    """Answers nothing once frozen: the folder listing blocks, and so does the probe."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__()
        self.release = release

    def list_dirs(self, prefix: str) -> Iterator[str]:
        self.release.wait(30)
        yield from super().list_dirs(prefix)

    def probe(self, timeout: float) -> None:
        self.release.wait(timeout)
        raise StoreUnreachable(f"LIST {self.url}: no answer within {timeout}s (probe)")


def test_runs_on_a_store_that_stopped_answering_fail_fast() -> None:
    release = threading.Event()
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreUnreachable) as err:
            runs_report(HangingStore(release), PREFIX, circuit=TINY)
        assert time.monotonic() - t0 < 10  # the listing alone would block for 30 s
        assert "circuit open" in str(err.value) and "runs under p/" in str(err.value)
    finally:
        release.set()
