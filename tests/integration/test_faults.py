"""Faults injected for real: the verdict fails closed, nothing is lost, a broken run resumes.

Every fault here happens on the real SeaweedFS server and the real local Ray cluster: the
server process is killed mid-run, a worker process dies, objects are corrupted in the bucket,
a credential that cannot write is used for the verdict.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import (
    READONLY_ACCESS_KEY,
    READONLY_SECRET_KEY,
    TEST_BUCKET,
    TEST_IDENTITIES,
    CliResult,
    WatchedStderr,
    keys_under,
    parse_events,
    run_subprocess,
)

from s43_ray import codec as codecs
from s43_ray.binding import binding_metadata, schema_digest
from s43_ray.cli.main import main
from s43_ray.config import StoreConfig
from s43_ray.keys import RunLayout, member_names
from s43_ray.ledger import Ledger, LedgerEntry, claim_attempt, write_ledger
from s43_ray.manifest import RunManifest, claim_run
from s43_ray.stores.local_s3 import LocalS3
from s43_ray.stores.s3 import S3Store

pytestmark = [pytest.mark.ray, pytest.mark.s3]
Cli = Any


# --- S3 outage mid-run ------------------------------------------------------------------------



@pytest.fixture
def own_server(tmp_path: Path, ray_cluster: None) -> Iterator[dict[str, Any]]:
    """A SeaweedFS server of this test's own, which the test kills and restarts."""
    box: dict[str, Any] = {"server": LocalS3(tmp_path / "s3", bucket=TEST_BUCKET,
                                             s3_config=TEST_IDENTITIES)}
    box["server"].start()
    yield box
    box["server"].stop()


def test_s3_outage_mid_run_fails_closed_then_resume_completes(own_server: dict[str, Any],
                                                              tmp_path: Path) -> None:
    server: LocalS3 = own_server["server"]
    endpoint = server.endpoint_url
    args = ["--store", f"s3://{TEST_BUCKET}/outage", "--endpoint-url", endpoint,
            "--run-id", "outage-1", "--cohort-size", "16", "--rows", "200",
            "--predictor", "tests.predictors:slow", "--max-attempts", "2"]
    out, err = io.StringIO(), WatchedStderr()
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(
        main(["run", *args, "--json"], stdout=out, stderr=err)))
    runner.start()
    assert err.first_persisted.wait(160), err.getvalue()
    # The server crashes while members are being written ...
    assert server.proc is not None
    server.proc.kill()
    server.stop()
    # ... stays down until a member has given up, and comes back on the same data folder and
    # ports while other members are still being written (the gate then finds it up).
    assert err.first_failed.wait(60), err.getvalue()
    restarted = LocalS3(tmp_path / "s3", bucket=TEST_BUCKET, s3_config=TEST_IDENTITIES,
                        ports=server.ports)
    restarted.start()
    own_server["server"] = restarted
    assert restarted.endpoint_url == endpoint
    runner.join(180)
    assert not runner.is_alive()
    first = CliResult(codes[0], out.getvalue(), err.getvalue(), parse_events(err.getvalue()))
    assert first.code in (0, 1, 3), first.stderr
    s = first.summary
    assert s["status"] in ("passed", "failed"), first.stderr  # the gate gave a verdict
    failed = {e["member"]: e for e in first.named("s43_pred_persist_failed")}
    # Fail closed: every member not counted is named, and each one that gave up says why.
    assert s["cohort_count"] + len(s["missing"]) + len(s["invalid"]) == 16
    assert set(s["missing"]) | set(s["invalid"]) == set(failed)
    for event in failed.values():
        assert event["severity"] == "error" and endpoint in event["endpoint"]
        # Members that gave up after their retries, or that the run gave up on when the
        # store kept refusing connections (the circuit opened).
        assert event["error_class"] in ("unreachable", "store", "circuit_open")
        if event["error_class"] != "circuit_open":
            assert event["attempts"] == 2
    if s["status"] == "failed":
        assert first.code == 3  # a store failure, not a verdict on the predictions
    # Nothing counted that is not in the store and verified: an independent gate finds every
    # member the run counted. It may find more: when the circuit opened, a task cancelled
    # after its PUT had landed leaves an object the run never counted (and no ledger, so the
    # recheck cannot pass either).
    store = S3Store(restarted.store_config(prefix="outage"))
    recheck = run_subprocess(["gate", "--store", f"s3://{TEST_BUCKET}/outage",
                              "--endpoint-url", endpoint, "--run-id", "outage-1", "--json"])
    rc = recheck.summary
    members = set(member_names(16))
    counted = members - set(s["missing"]) - set(s["invalid"])
    present = members - set(rc["missing"]) - set(rc["invalid"])
    assert counted <= present, recheck.stderr
    if rc["basis"] == "ledger":
        assert present == counted, recheck.stderr
    else:
        assert rc["status"] == "failed" and recheck.code == 1, recheck.stderr
    # --resume keeps what is good and computes only what is missing.
    out2, err2 = io.StringIO(), io.StringIO()
    code = main(["run", *args, "--resume", "--json"], stdout=out2, stderr=err2)
    resumed = CliResult(code, out2.getvalue(), err2.getvalue(), parse_events(err2.getvalue()))
    assert resumed.code == 0, resumed.stderr
    r = resumed.summary
    assert r["cohort_count"] == 16 and r["status"] == "passed"
    assert r["reused"] == len(present) and r["computed"] == 16 - len(present)
    persisted = {e["member"] for e in resumed.named("s43_pred_persisted")}
    assert persisted == members - present
    assert len(keys_under(store, "outage/outage-1/")) == 18


# --- worker death -----------------------------------------------------------------------------

def test_a_killed_worker_is_retried_by_ray_and_counted(cli: Cli, store_args: list[str],
                                                       prefix: str) -> None:
    run_id = f"dies-once-{os.getpid()}-{prefix.rsplit('-', 1)[-1]}"
    result = cli("run", *store_args, "--run-id", run_id, "--cohort-size", "3", "--rows", "100",
                 "--predictor", "tests.predictors:dies_once", "--json")
    assert result.code == 0, result.stderr
    s = result.summary
    assert s["cohort_count"] == 3 and s["task_retries"] == 1
    persisted = {e["member"]: e for e in result.named("s43_pred_persisted")}
    assert persisted["m00001"]["attempt"] == 1 and persisted["m00000"]["attempt"] == 0
    assert result.named("s43_pred_persist_failed") == []


# --- corrupt objects --------------------------------------------------------------------------

class _Trap:
    """Unpickling this creates a file: proof that nothing was ever unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def _pickled_npz(trap: Path) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, predictions=np.array([_Trap(str(trap))], dtype=object), allow_pickle=True)
    return buf.getvalue()


def test_corrupt_objects_are_invalid_with_their_error_class(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig,
        tmp_path: Path) -> None:
    ran = cli("run", *store_args, "--run-id", "corrupt", "--cohort-size", "7", "--rows", "300",
              "--format", "npz")
    assert ran.code == 0, ran.stderr
    layout = RunLayout(store_cfg.prefix, "corrupt")

    def key(i: int) -> str:
        return layout.member_key(f"m0000{i}", "npz")

    def rewrite(i: int, body: bytes, meta: dict[str, str] | None = None) -> None:
        _, info = store.get(key(i))
        store.put(key(i), body, metadata=dict(meta if meta is not None else info.metadata))

    original = bytes(store.get(key(0))[0])
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    rewrite(0, bytes(flipped))  # one byte flipped, metadata kept
    rewrite(1, bytes(store.get(key(1))[0])[:500])  # truncated, metadata kept
    other = codecs.encode({"predictions": np.zeros(10, np.float32)}, "arrow")
    rewrite(2, bytes(other.payload), codecs.object_metadata(other, "arrow"))  # other codec
    rewrite(3, b"")  # zero bytes
    trap = tmp_path / "unpickled"
    evil = _pickled_npz(trap)
    binding = {k: v for k, v in store.head(key(4)).metadata.items() if k in
               ("s43-run", "s43-member", "s43-attempt", "s43-schema")}
    rewrite(4, evil, {codecs.META_CODEC: "npz", codecs.META_CHECKSUM: codecs.checksum(evil),
                      codecs.META_BYTES: str(len(evil)), "s43-format-version": "1", **binding})

    # Against the run's ledger the pickle is refused before any decoding: its checksum is not
    # the one the task recorded.
    result = cli("gate", *store_args, "--run-id", "corrupt", "--json")
    assert result.code == 1, result.stderr
    s = result.summary
    assert s["cohort_count"] == 2 and s["status"] == "failed" and s["missing"] == []
    classes = {m: reason.split(":", 1)[0] for m, reason in s["invalid"].items()}
    assert classes == {"m00000": "checksum", "m00001": "truncated", "m00002": "codec",
                       "m00003": "truncated", "m00004": "checksum"}
    events = {e["member"]: e for e in result.named("s43_pred_load_failed")}
    assert {m: e["error_class"] for m, e in events.items()} == classes
    assert all(e["severity"] == "error" and e["key"] == key(int(m[-1]))
               for m, e in events.items())
    (gate,) = result.named("s43_gate_outcome")
    assert gate["shortfall"] == 5 and gate["severity"] == "error"
    # With no s43 history at all (no record, attempt or ledger: objects put there by hand, named
    # by --expected alone) each object is checked against its own metadata: the pickle gets as
    # far as the decoder, which refuses it.
    for control in (layout.manifest_key, layout.ledger_key(1), layout.attempt_key(1)):
        store.delete(control)
    bare = cli("gate", *store_args, "--run-id", "corrupt", "--expected", "7", "--format", "npz",
               "--json")
    assert bare.code == 1, bare.stderr
    assert bare.summary["basis"] == "metadata"
    assert bare.summary["invalid"]["m00004"].startswith("unsafe_payload: "), bare.summary
    assert not trap.exists()  # nothing was ever unpickled


def test_foreign_and_stale_keys_are_unexpected_and_never_counted(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    ran = cli("run", *store_args, "--run-id", "stale", "--cohort-size", "2", "--rows", "100")
    assert ran.code == 0, ran.stderr
    layout = RunLayout(store_cfg.prefix, "stale")
    good, _ = store.get(layout.member_key("m00000", "arrow"))
    _, info = store.get(layout.member_key("m00000", "arrow"))
    stray = [layout.member_key("m00002", "arrow"),  # a member from a bigger, older cohort
             layout.run_prefix + "notes.txt", layout.run_prefix + "_gate.json.bak",
             layout.run_prefix + "sub/m00000.arrow"]
    for k in stray:
        store.put(k, bytes(good), metadata=dict(info.metadata))
    result = cli("gate", *store_args, "--run-id", "stale", "--json")
    assert result.code == 0, result.stderr
    s = result.summary
    assert s["cohort_count"] == 2 == s["expected"]
    assert sorted(s["unexpected"]) == sorted(stray)
    (acquire,) = result.named("s43_acquire_outcome")
    assert acquire["unexpected"] == 4 and acquire["keys"] == 2


# --- the verdict cannot be written --------------------------------------------------------------

def test_a_verdict_the_store_refuses_is_an_error_event_and_still_printed(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    ran = cli("run", *store_args, "--run-id", "readonly", "--cohort-size", "2", "--rows", "100")
    assert ran.code == 0, ran.stderr
    layout = RunLayout(store_cfg.prefix, "readonly")
    before = bytes(store.get(layout.gate_key)[0])
    result = run_subprocess(["gate", *store_args, "--run-id", "readonly", "--json"],
                            env={"AWS_ACCESS_KEY_ID": READONLY_ACCESS_KEY,
                                 "AWS_SECRET_ACCESS_KEY": READONLY_SECRET_KEY})
    assert result.code == 3, result.stderr
    (failed,) = result.named("s43_gate_persist_failed")
    assert failed["severity"] == "error" and failed["error_class"] == "auth"
    assert failed["key"] == layout.gate_key and failed["status"] == "passed"
    s = result.summary  # the verdict is still printed, and says it was not persisted
    assert s["status"] == "passed" and s["cohort_count"] == 2 and s["gate_persisted"] is False
    assert "verdict NOT persisted" in result.stderr
    assert "Traceback" not in result.stderr
    assert bytes(store.get(layout.gate_key)[0]) == before  # the old verdict is untouched


# --- load -------------------------------------------------------------------------------------

def test_a_1000_member_cohort_passes_with_nothing_lost(cli: Cli, store_args: list[str],
                                                      store: S3Store,
                                                      store_cfg: StoreConfig) -> None:
    result = cli("run", *store_args, "--run-id", "load-1000", "--cohort-size", "1000",
                 "--rows", "20", "--json")
    assert result.code == 0, result.stderr[-2000:]
    s = result.summary
    assert s["cohort_count"] == 1000 and s["missing"] == [] and s["invalid"] == {}
    assert len(result.named("s43_pred_persisted")) == 1000
    keys = keys_under(store, RunLayout(store_cfg.prefix, "load-1000").run_prefix)
    assert len(keys) == 1002  # 1000 members, the manifest and the verdict


def test_the_gate_over_10000_members_completes(cli: Cli, store_args: list[str],
                                               store: S3Store, store_cfg: StoreConfig) -> None:
    layout = RunLayout(store_cfg.prefix, "load-10k")
    encoded = codecs.encode({"predictions": np.arange(16, dtype=np.float32)}, "arrow")
    payload, meta = bytes(encoded.payload), codecs.object_metadata(encoded, "arrow")
    digest = schema_digest(encoded.arrays)
    members = member_names(10_000)
    # The run as a driver leaves it: its record, attempt 1, the objects bound to it, the ledger.
    claim_run(store, layout, RunManifest.new("load-10k", tuple(members), "arrow", 16,
                                             "tests:by-hand"))
    claimed = claim_attempt(store, layout, "first")
    attempt = claimed.number
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda m: store.put(
            layout.member_key(m, "arrow"), payload,
            metadata={**meta, **binding_metadata("load-10k", m, attempt, digest)},
            s3_checksum=encoded.s3_checksum), members))
    write_ledger(store, layout, Ledger("load-10k", attempt, "arrow", entries={
        m: LedgerEntry(layout.member_key(m, "arrow"), encoded.checksum, encoded.nbytes, digest,
                       attempt) for m in members}, cohort=tuple(members), token=claimed.token))
    result = cli("gate", *store_args, "--run-id", "load-10k", "--json")
    assert result.code == 0, result.stderr[-2000:]
    s = result.summary
    assert s["cohort_count"] == 10_000 and s["read_latency_s"]["n"] == 10_000
    (acquire,) = result.named("s43_acquire_outcome")
    assert acquire["listed"] == 10_003  # ten LIST pages: members, record, attempt, ledger
    verdict = json.loads(bytes(store.get(layout.gate_key)[0]))
    assert verdict["cohort_count"] == 10_000 and len(verdict["checks"]) == 10_000
