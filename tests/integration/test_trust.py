"""A verdict that cannot be wrong: every case an adversary tried, on the real SeaweedFS server
and a real Ray cluster. Each test names the attack and asserts what the operator sees."""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import (
    TEST_BUCKET,
    TEST_IDENTITIES,
    CliResult,
    WatchedStderr,
    control_keys_under,
    keys_under,
    parse_events,
)
from predictors import FAIL_MARKERS_DIR

from s43_ray import codec
from s43_ray.binding import binding_metadata
from s43_ray.cli.main import main
from s43_ray.config import StoreConfig
from s43_ray.gate import gate_from_store
from s43_ray.keys import RunLayout, member_names
from s43_ray.ledger import claim_attempt, read_ledger
from s43_ray.manifest import read_manifest
from s43_ray.ops.report import report_run
from s43_ray.predict import default_predictor
from s43_ray.stores.local_s3 import LocalS3
from s43_ray.stores.s3 import S3Store
from s43_ray.verdicts import save_verdict

Cli = Callable[..., CliResult]


def run(cli: Cli, store_args: list[str], run_id: str, *extra: str) -> CliResult:
    return cli("run", "--run-id", run_id, "--json", *store_args, *extra)


def gate(cli: Cli, store_args: list[str], run_id: str, *extra: str) -> CliResult:
    return cli("gate", "--run-id", run_id, "--json", *store_args, *extra)


def copy_object(store: S3Store, src: str, dst: str) -> None:
    """What `aws s3 cp` does: the body and the metadata, onto another key."""
    body, info = store.get(src)
    store.put(dst, bytes(body), metadata=dict(info.metadata))


def latest_verdict(store: S3Store, layout: RunLayout) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(bytes(store.get(layout.gate_key)[0]))
    return record


# --- 1. two drivers, one run id ----------------------------------------------------------------

def test_a_second_driver_with_another_cohort_is_refused_naming_the_holder_and_writes_nothing(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    first = run(cli, store_args, "R1", "--cohort-size", "4", "--rows", "1000")
    assert first.code == 0, first.stderr
    layout = RunLayout(store_cfg.prefix, "R1")
    before = {o.key: o.etag for o in store.list(layout.run_prefix)}

    second = run(cli, store_args, "R1", "--cohort-size", "4", "--rows", "2000")

    assert second.code == 2, second.stderr
    line = second.stderr.strip().splitlines()[-1]
    assert "rows (1000 -> 2000)" in line and "held by" in line and "pid" in line
    assert {o.key: o.etag for o in store.list(layout.run_prefix)} == before  # nothing written
    assert gate(cli, store_args, "R1").code == 0
    assert run(cli, store_args, "R1", "--cohort-size", "4", "--rows", "2000",
               "--resume").code == 2


def test_two_drivers_racing_with_different_cohorts_one_wins_the_other_writes_nothing(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    results: dict[str, CliResult] = {}
    barrier = threading.Barrier(2)

    def driver(rows: str) -> None:
        barrier.wait()
        results[rows] = run(cli, store_args, "race", "--cohort-size", "6", "--rows", rows)

    threads = [threading.Thread(target=driver, args=(rows,)) for rows in ("1000", "2000")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    codes = sorted(r.code for r in results.values())
    assert codes == [0, 2], {k: (r.code, r.stderr[-500:]) for k, r in results.items()}
    winner = next(rows for rows, r in results.items() if r.code == 0)
    loser = next(r for r in results.values() if r.code == 2)
    assert "held by" in loser.stderr and loser.named("s43_run_started") == []
    layout = RunLayout(store_cfg.prefix, "race")
    record = read_manifest(store, layout)
    assert record is not None and record.rows == int(winner)
    # Every object is the winner's: its rows, its one attempt.
    for key in keys_under(store, layout.run_prefix):
        if key.endswith(".arrow"):
            body, info = store.get(key)
            assert info.metadata["s43-attempt"] == "1"
            assert codec.decode(body, "arrow")["predictions"].shape == (int(winner),)
    assert [k.rsplit("/", 1)[-1] for k in control_keys_under(store, layout.run_prefix)
            if "/_attempts/" in k] == ["000001.json"]
    assert gate(cli, store_args, "race").code == 0


def test_two_drivers_of_the_same_cohort_are_two_attempts_and_the_latest_verdict_is_honest(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    results: list[CliResult] = []
    barrier = threading.Barrier(2)

    def driver() -> None:
        barrier.wait()
        results.append(run(cli, store_args, "twins", "--cohort-size", "6", "--rows", "500"))

    threads = [threading.Thread(target=driver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert sorted(r.summary["attempt"] for r in results) == [1, 2], [r.stderr for r in results]
    for r in results:  # each driver's exit code is its own verdict's
        assert r.code in (0, 1), r.stderr
        assert (r.code == 0) == (r.summary["status"] == "passed")
    # Member writes are fenced: attempt 1 can neither replace what attempt 2 wrote nor land a
    # late write over it (it is refused, ``superseded``), and attempt 2 replaces whatever
    # attempt 1 wrote first. So the newer attempt passes, whatever the interleaving.
    newer = next(r for r in results if r.summary["attempt"] == 2)
    assert newer.code == 0, newer.stderr
    older = next(r for r in results if r.summary["attempt"] == 1)
    if older.code == 1:
        assert all(v.split(":")[0] in ("wrong_attempt", "not_in_ledger")
                   for v in older.summary["invalid"].values()), older.summary
        assert all(e["error_class"] == "superseded"
                   for e in older.named("s43_pred_persist_failed")), older.stderr
    layout = RunLayout(store_cfg.prefix, "twins")
    latest = latest_verdict(store, layout)
    assert latest["attempt"] == 2, [r.summary for r in results]  # never an older attempt's
    assert latest["status"] == "passed"
    assert len([k for k in control_keys_under(store, layout.run_prefix) if "/_gates/" in k]) == 2
    rep = report_run(store, RunLayout(store_cfg.prefix, "twins"))
    assert rep.status == "passed" and not rep.verdict_problems, rep.human()
    again = gate(cli, store_args, "twins")
    assert again.code == 0, again.stderr


# --- 2, 3. swapped and substituted objects -----------------------------------------------------

@pytest.mark.parametrize("verify", ["full", "head"])
def test_a_member_object_copied_onto_another_members_key_is_invalid(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig,
        verify: str) -> None:
    assert run(cli, store_args, "swap", "--cohort-size", "4", "--rows", "100").code == 0
    layout = RunLayout(store_cfg.prefix, "swap")
    copy_object(store, layout.member_key("m00001", "arrow"), layout.member_key("m00000", "arrow"))

    r = gate(cli, store_args, "swap", "--verify", verify)

    assert r.code == 1, r.stderr
    assert list(r.summary["invalid"]) == ["m00000"]
    assert r.summary["invalid"]["m00000"].startswith("wrong_member: ")
    (failed,) = r.named("s43_pred_load_failed")
    assert failed["member"] == "m00000" and failed["error_class"] == "wrong_member"
    assert latest_verdict(store, layout)["status"] == "failed"


def test_an_object_from_another_run_is_invalid(cli: Cli, store_args: list[str],
                                                store: S3Store, store_cfg: StoreConfig) -> None:
    for run_id in ("run-a", "run-b"):
        assert run(cli, store_args, run_id, "--cohort-size", "3", "--rows", "100").code == 0
    a, b = RunLayout(store_cfg.prefix, "run-a"), RunLayout(store_cfg.prefix, "run-b")
    copy_object(store, a.member_key("m00002", "arrow"), b.member_key("m00002", "arrow"))

    r = gate(cli, store_args, "run-b", "--verify", "head")

    assert r.code == 1 and r.summary["invalid"]["m00002"].startswith("wrong_run: ")


def _substitute(store: S3Store, key: str, body: bytes, metadata: dict[str, str],
                crc: str) -> None:
    store.put(key, body, metadata=metadata, s3_checksum=crc)


@pytest.mark.parametrize("verify", ["full", "head"])
def test_substituted_content_with_forged_metadata_is_invalid(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig,
        verify: str) -> None:
    run_id = f"subst-{verify}"
    assert run(cli, store_args, run_id, "--cohort-size", "3", "--rows", "10000").code == 0
    layout = RunLayout(store_cfg.prefix, run_id)
    key = layout.member_key("m00000", "arrow")
    original = store.head(key).metadata
    # A valid record of 1,000 rows with other arrays, its own checksum, the s43 binding copied.
    fake = codec.encode(default_predictor("another-run", "m00000", 1000), "arrow")
    meta = {**codec.object_metadata(fake, "arrow"),
            **binding_metadata(run_id, "m00000", int(original["s43-attempt"]),
                               original["s43-schema"])}
    _substitute(store, key, bytes(fake.payload), meta, fake.s3_checksum)

    r = gate(cli, store_args, run_id, "--verify", verify)

    assert r.code == 1, r.stderr
    assert r.summary["invalid"]["m00000"].startswith("checksum: ")
    assert "ledger" in r.summary["invalid"]["m00000"]
    assert latest_verdict(store, layout)["status"] == "failed"


@pytest.mark.parametrize("claimed", ["own", "ledger"])
def test_random_bytes_with_a_matching_store_checksum_fail_head_verification(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig,
        claimed: str) -> None:
    run_id = f"random-{claimed}"
    assert run(cli, store_args, run_id, "--cohort-size", "3", "--rows", "1000").code == 0
    layout = RunLayout(store_cfg.prefix, run_id)
    key = layout.member_key("m00001", "arrow")
    info = store.head(key)
    junk = os.urandom(info.size)
    own = codec.checksum(junk)
    meta = dict(info.metadata)
    if claimed == "own":  # metadata and CRC header agree with the junk, not with the ledger
        meta["s43-checksum"] = own
    _substitute(store, key, junk, meta, own.split(":", 1)[1])

    r = gate(cli, store_args, run_id, "--verify", "head")

    assert r.code == 1, r.stderr
    assert r.summary["invalid"]["m00001"].startswith("checksum: ")


# --- 4. a re-triggered run never counts the last run's object ---------------------------------

def test_a_retriggered_run_whose_member_fails_does_not_count_the_old_object(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    predictor = ("--predictor", "tests.predictors:fails_when_marked")
    assert run(cli, store_args, "again", "--cohort-size", "4", "--rows", "100",
               *predictor).code == 0
    os.makedirs(FAIL_MARKERS_DIR, exist_ok=True)
    marker = Path(FAIL_MARKERS_DIR) / "again__m00002"
    marker.write_text("fail")
    try:
        r = run(cli, store_args, "again", "--cohort-size", "4", "--rows", "100", *predictor)
    finally:
        marker.unlink()

    assert r.code == 1, r.stderr
    s = r.summary
    assert s["attempt"] == 2 and list(s["persist_failed"]) == ["m00002"]
    assert s["status"] == "failed" and s["cohort_count"] == 3
    assert s["invalid"]["m00002"].startswith("not_in_ledger: ")
    assert "its task failed" in s["invalid"]["m00002"]
    # ... and from the store alone it stays failed.
    assert gate(cli, store_args, "again", "--verify", "head").code == 1
    resumed = run(cli, store_args, "again", "--cohort-size", "4", "--rows", "100", *predictor,
                  "--resume")
    # An explicit --resume reuses every verified object of the run, whichever attempt wrote
    # it (attempt 1's m00002 is vouched for by attempt 1's ledger), and says so in its ledger.
    assert resumed.code == 0, resumed.stderr
    assert resumed.summary["attempt"] == 3 and resumed.summary["reused"] == 4
    ledger = read_ledger(store, RunLayout(store_cfg.prefix, "again"), 3)
    assert ledger is not None and ledger.entries["m00002"].attempt == 1
    assert {ledger.entries[m].attempt for m in ("m00000", "m00001", "m00003")} == {2}


# --- 5. a gate over part of a cohort -----------------------------------------------------------

def test_a_gate_naming_part_of_the_cohort_is_refused_and_the_verdict_kept(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    assert run(cli, store_args, "part", "--cohort-size", "4", "--rows", "100").code == 0
    layout = RunLayout(store_cfg.prefix, "part")
    store.delete(layout.member_key("m00003", "arrow"))
    assert gate(cli, store_args, "part").code == 1
    failed_verdict = bytes(store.get(layout.gate_key)[0])

    subset = gate(cli, store_args, "part", "--members", "m00000,m00001")
    bigger = gate(cli, store_args, "part", "--expected", "5")

    assert subset.code == 2 and "records 4" in subset.stderr
    assert bigger.code == 2 and "--expected 5 differs" in bigger.stderr
    assert bytes(store.get(layout.gate_key)[0]) == failed_verdict


# --- 6. report recomputes instead of believing -------------------------------------------------

def test_report_catches_a_verdict_whose_status_was_edited_to_passed(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    assert run(cli, store_args, "forged", "--cohort-size", "4", "--rows", "100").code == 0
    layout = RunLayout(store_cfg.prefix, "forged")
    store.delete(layout.member_key("m00001", "arrow"))
    assert gate(cli, store_args, "forged").code == 1
    record = latest_verdict(store, layout)
    record["status"] = "passed"
    store.put(layout.gate_key, json.dumps(record).encode(), metadata={})

    r = cli("report", "--run-id", "forged", "--json", *store_args)

    assert r.code == 1, r.stdout
    assert r.summary["status"] == "inconsistent"
    assert any("claims 'passed'" in p for p in r.summary["verdict_problems"])
    human = cli("report", "--run-id", "forged", *store_args).stdout
    assert "INCONSISTENT" in human and "PASSED 3/4" not in human.split("claims")[0]


def test_report_catches_a_verdict_copied_from_another_run(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    for run_id in ("orig", "other"):
        assert run(cli, store_args, run_id, "--cohort-size", "3", "--rows", "100").code == 0
    orig, other = RunLayout(store_cfg.prefix, "orig"), RunLayout(store_cfg.prefix, "other")
    store.delete(other.member_key("m00000", "arrow"))
    copy_object(store, orig.gate_key, other.gate_key)

    r = cli("report", "--run-id", "other", "--json", *store_args)

    assert r.code == 1
    assert any("names run 'orig'" in p for p in r.summary["verdict_problems"])


def test_every_verdict_is_kept_and_the_latest_is_the_newest_attempt(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    assert run(cli, store_args, "kept", "--cohort-size", "2", "--rows", "100").code == 0
    assert gate(cli, store_args, "kept").code == 0
    assert gate(cli, store_args, "kept", "--verify", "head").code == 0
    layout = RunLayout(store_cfg.prefix, "kept")

    kept = [k for k in control_keys_under(store, layout.run_prefix) if "/_gates/" in k]

    assert len(kept) == 3
    latest = latest_verdict(store, layout)
    assert latest["verify"] == "head" and latest["attempt"] == 1
    assert all(c["checksum"].startswith("crc64nvme:") for c in latest["checks"])


# --- 7. a hung store ---------------------------------------------------------------------------

@pytest.fixture
def hung_server(tmp_path: Path, ray_cluster: None) -> Iterator[LocalS3]:
    """A SeaweedFS server of this test's own, which the test freezes (SIGSTOP) and thaws."""
    server = LocalS3(tmp_path / "s3", bucket=TEST_BUCKET, s3_config=TEST_IDENTITIES)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            os.kill(server.proc.pid, 18)  # SIGCONT, so that stop() can end it
        server.stop()




def test_a_hung_store_fails_the_run_fast_naming_every_member_then_resume_completes(
        hung_server: LocalS3) -> None:
    import signal
    import time

    args = ["--store", f"s3://{TEST_BUCKET}/hung", "--endpoint-url", hung_server.endpoint_url,
            "--run-id", "hung-1", "--cohort-size", "16", "--rows", "200",
            "--predictor", "tests.predictors:slow"]
    out, err = io.StringIO(), WatchedStderr()
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(
        main(["run", *args, "--json"], stdout=out, stderr=err)))
    runner.start()
    assert err.first_persisted.wait(160), err.getvalue()
    assert hung_server.proc is not None
    os.kill(hung_server.proc.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    runner.join(240)
    waited = time.monotonic() - frozen_at
    assert not runner.is_alive(), "the run did not give up on a hung store"
    result = CliResult(codes[0], out.getvalue(), err.getvalue(), parse_events(err.getvalue()))

    assert result.code == 3, result.stderr[-3000:]
    assert waited < 150, waited  # about two minutes at most, with the default timeouts
    (opened,) = result.named("s43_store_circuit_open")
    assert opened["severity"] == "error" and opened["error_class"] == "unreachable"
    s = result.summary
    done = {e["member"] for e in result.named("s43_pred_persisted")}
    assert set(s["persist_failed"]) == {f"m{i:05d}" for i in range(16)} - done
    assert all(v.startswith(("circuit_open", "unreachable", "timeout"))
               for v in s["persist_failed"].values())
    assert "--resume" in s["reason"] and s["status"] == "failed"
    (stopped,) = result.named("s43_run_failed")
    assert stopped["error_class"] == "unreachable"

    # The gate on the hung store answers within the same bound.
    gate_out, gate_err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    code = main(["gate", "--store", f"s3://{TEST_BUCKET}/hung", "--endpoint-url",
                 hung_server.endpoint_url, "--run-id", "hung-1", "--json"],
                stdout=gate_out, stderr=gate_err)
    assert code == 3 and time.monotonic() - t0 < 150, gate_err.getvalue()[-2000:]
    assert "circuit open" in gate_err.getvalue()

    # Once the store is back, --resume finishes the run.
    os.kill(hung_server.proc.pid, signal.SIGCONT)
    out2, err2 = io.StringIO(), io.StringIO()
    code = main(["run", *args, "--resume", "--json"], stdout=out2, stderr=err2)
    resumed = CliResult(code, out2.getvalue(), err2.getvalue(), parse_events(err2.getvalue()))
    assert resumed.code == 0, resumed.stderr[-3000:]
    assert resumed.summary["cohort_count"] == 16
    assert resumed.summary["reused"] >= len(done)


# --- 8. bad input refused before anything starts -----------------------------------------------

def test_a_bucket_name_s3_rejects_is_bad_input(cli: Cli, s3_server: LocalS3) -> None:
    r = cli("run", "--store", "s3://bücket/p", "--endpoint-url", s3_server.endpoint_url,
            "--json")
    assert r.code == 2 and "'ü'" in r.stderr and r.named("s43_run_started") == []


def test_keys_longer_than_s3_allows_are_refused_before_anything_starts(cli: Cli) -> None:
    # The endpoint does not even exist: exit 2 proves nothing was contacted or started.
    r = cli("run", "--store", f"s3://{TEST_BUCKET}/{'p' * 1000}", "--endpoint-url",
            "http://127.0.0.1:9", "--json")
    assert r.code == 2, r.stderr
    assert "expected at most 1024" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name, returned", [("returns_list", "list"),
                                            ("returns_none", "NoneType")])
def test_a_predictor_returning_the_wrong_type_is_named(cli: Cli, store_args: list[str],
                                                       name: str, returned: str) -> None:
    r = run(cli, store_args, f"wrong-{name}", "--cohort-size", "2", "--rows", "10",
            "--predictor", f"tests.predictors:{name}")
    assert r.code == 1
    failed = r.named("s43_pred_persist_failed")
    assert {f["error_class"] for f in failed} == {"predictor"}
    assert all(f"returned {returned}" in f["message"] and "expected a dict" in f["message"]
               for f in failed)
    assert np.all([v.startswith("predictor: ") for v in r.summary["persist_failed"].values()])


# --- found by the adversarial review -----------------------------------------------------------

def test_a_run_that_lost_its_record_is_gated_against_its_ledgers_cohort(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    # An age-based lifecycle rule expires _run.json first (it is the oldest object of a run).
    assert run(cli, store_args, "lost", "--cohort-size", "4", "--rows", "100").code == 0
    layout = RunLayout(store_cfg.prefix, "lost")
    for key in (layout.manifest_key, layout.member_key("m00002", "arrow"),
                layout.member_key("m00003", "arrow")):
        store.delete(key)

    smaller = gate(cli, store_args, "lost", "--expected", "2")
    whole = gate(cli, store_args, "lost")
    rerun = run(cli, store_args, "lost", "--cohort-size", "2", "--rows", "100")
    rep = cli("report", "--run-id", "lost", "--json", *store_args)

    assert smaller.code == 2 and "differs from the 4 members" in smaller.stderr
    assert whole.code == 1 and whole.summary["missing"] == ["m00002", "m00003"]
    assert rerun.code == 2 and "no record" in rerun.stderr and "new --run-id" in rerun.stderr
    assert rep.code == 1 and rep.summary["missing"] == ["m00002", "m00003"]


def test_a_verdict_from_a_host_whose_clock_is_ahead_does_not_hide_a_later_failure(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    assert run(cli, store_args, "skew", "--cohort-size", "3", "--rows", "100").code == 0
    layout = RunLayout(store_cfg.prefix, "skew")
    ahead = replace(gate_from_store(store, layout, members=member_names(3), codec="arrow"),
                    finished_at="2099-01-01T00:00:00.000Z")
    assert save_verdict(store, layout, ahead).latest  # a gate on a host a lifetime ahead
    store.delete(layout.member_key("m00001", "arrow"))

    r = gate(cli, store_args, "skew")

    assert r.code == 1
    assert latest_verdict(store, layout)["status"] == "failed"
    assert r.summary["verdict_latest"] is True


def test_a_passing_gate_whose_verdict_could_not_become_the_latest_does_not_report_a_pass(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    assert run(cli, store_args, "pinned", "--cohort-size", "2", "--rows", "100").code == 0
    layout = RunLayout(store_cfg.prefix, "pinned")
    body, info = store.get(layout.gate_key)
    # _gate.json now holds a newer attempt's verdict (a failing one), written meanwhile.
    store.put(layout.gate_key, bytes(body), metadata={**info.metadata, "s43-attempt": "99",
                                                      "s43-status": "failed"})

    r = gate(cli, store_args, "pinned")
    human = cli("gate", "--run-id", "pinned", *store_args).stdout

    assert r.code == 1 and r.summary["status"] == "failed"
    assert r.summary["cohort_count"] == 2 and r.summary["verdict_latest"] is False
    assert "superseded: this gate passed" in r.summary["reason"]
    assert "holds attempt 99's verdict (failed)" in r.summary["reason"]
    assert "/_gates/" in r.summary["verdict_key"]
    assert "(kept; " in human and "_gate.json holds a newer" in human
    (persisted,) = r.named("s43_gate_persisted")
    assert persisted["severity"] == "warning" and persisted["latest"] is False


def test_a_ledger_of_an_attempt_nobody_claimed_is_refused(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    assert run(cli, store_args, "unclaimed", "--cohort-size", "2", "--rows", "100").code == 0
    layout = RunLayout(store_cfg.prefix, "unclaimed")
    record = json.loads(bytes(store.get(layout.ledger_key(1))[0]))
    record["attempt"] = 2
    store.put(layout.ledger_key(2), json.dumps(record).encode(), metadata={})

    r = gate(cli, store_args, "unclaimed")

    assert r.code == 1 and "never claimed" in r.stderr
    assert latest_verdict(store, layout)["attempt"] == 1


def test_a_newer_attempt_that_left_no_ledger_fails_gate_and_report_until_resumed(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    assert run(cli, store_args, "newer", "--cohort-size", "2", "--rows", "100").code == 0
    layout = RunLayout(store_cfg.prefix, "newer")
    claim_attempt(store, layout, "rerun")  # a second driver started, and died before its ledger

    rep = cli("report", "--run-id", "newer", "--json", *store_args)
    g = gate(cli, store_args, "newer")

    assert rep.code == 1 and rep.summary["status"] == "stale"
    assert all("attempt 2 ran after the verdict" in m["changed"] for m in rep.summary["members"])
    assert g.code == 1 and g.summary["basis"] == "no_ledger"
    assert "newest attempt (2) left no ledger" in g.summary["reason"]
    assert "--resume" in g.summary["reason"]
    resumed = run(cli, store_args, "newer", "--cohort-size", "2", "--rows", "100", "--resume")
    assert resumed.code == 0 and resumed.summary["attempt"] == 3
    assert cli("report", "--run-id", "newer", *store_args).code == 0


def test_a_verdict_whose_checks_are_not_a_list_is_inconsistent_not_a_crash(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    assert run(cli, store_args, "nochecks", "--cohort-size", "2", "--rows", "100").code == 0
    layout = RunLayout(store_cfg.prefix, "nochecks")
    for value in (None, 5):
        record = latest_verdict(store, layout)
        record["checks"] = value
        store.put(layout.gate_key, json.dumps(record).encode(),
                  metadata=dict(store.head(layout.gate_key).metadata))

        rep = cli("report", "--run-id", "nochecks", "--json", *store_args)

        assert rep.code == 1 and rep.summary["status"] == "inconsistent", rep.stderr
        assert "internal" not in rep.stderr


def test_a_resume_after_an_attempt_record_was_deleted_takes_a_fresh_number(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    flags = ("--cohort-size", "2", "--rows", "100")
    assert run(cli, store_args, "renumber", *flags).code == 0
    assert run(cli, store_args, "renumber", *flags, "--resume").code == 0  # attempt 2
    layout = RunLayout(store_cfg.prefix, "renumber")
    store.delete(layout.attempt_key(2))

    assert gate(cli, store_args, "renumber").code == 1  # ledger 2: attempt never claimed
    again = run(cli, store_args, "renumber", *flags, "--resume")

    assert again.code == 0, again.stderr
    assert again.summary["attempt"] == 3
