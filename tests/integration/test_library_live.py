"""The public API on the real SeaweedFS server and a real Ray cluster: the example script as a
user runs it, persist from ``@ray.remote`` tasks, the reads refusing a tampered member, and
``run_cohort`` with a predictor function."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import ray

import s43_ray
from s43_ray.config import StoreConfig
from s43_ray.errors import ChecksumMismatch
from s43_ray.events import GATE_OUTCOME, RUN_STARTED, EventLog
from s43_ray.stores.local_s3 import LocalS3

pytestmark = [pytest.mark.s3]

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = [f"m{i:05d}" for i in range(6)]


@ray.remote
def pod(run: s43_ray.Run, member: str) -> s43_ray.PredictionRef:
    rng = np.random.default_rng(int(member[1:]))
    return run.persist(member, {"predictions": rng.random(50, dtype=np.float32),
                                "embedding": rng.random((50, 3), dtype=np.float32)})


@pytest.fixture
def api_store(store_cfg: StoreConfig) -> s43_ray.Store:
    return s43_ray.open_store(store_cfg.url, endpoint_url=store_cfg.endpoint_url,
                              max_attempts=2)


@pytest.fixture
def gated(ray_cluster: None, api_store: s43_ray.Store) -> s43_ray.Run:
    run = api_store.start_run("api-1", members=MEMBERS)
    refs = [pod.remote(run, m) for m in run]  # ObjectRefs: gate() fetches them
    verdict = run.gate(refs)
    assert verdict.passed, verdict.reason
    return run


def flip_a_byte(store: s43_ray.Store, key: str) -> None:
    client = store.client()
    body, info = client.get(key)
    data = bytearray(body)
    data[len(data) // 2] ^= 0xFF
    client.put(key, bytes(data), metadata=dict(info.metadata))


def test_the_example_runs_as_a_user_runs_it(s3_server: LocalS3, prefix: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "library_quickstart.py"),
         "--store", f"s3://{s3_server.bucket}/{prefix}", "--endpoint-url",
         s3_server.endpoint_url, "--members", "5"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=240,
        stdin=subprocess.DEVNULL)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["passed"] is True and result["run_cohort"]["passed"] is True
    assert result["table_rows"] == result["dataset_rows"] == 5 * 1_000
    assert "gate: passed 5/5" in proc.stdout


def test_persist_in_tasks_then_read_the_cohort_back(gated: s43_ray.Run) -> None:
    table = gated.read_table()
    dataset = gated.read_dataset().to_arrow_refs()
    rows = sum(t.num_rows for t in ray.get(dataset))

    assert table.num_rows == rows == 6 * 50
    assert table.column_names == ["member", "predictions", "embedding"]
    assert sorted(set(table.column("member").to_pylist())) == MEMBERS
    loaded = gated.load("m00004")
    mine = table.filter(pc.equal(table.column("member"), "m00004"))
    assert np.array_equal(mine.column("predictions").to_numpy(), loaded["predictions"])
    assert np.array_equal(mine.column("embedding").combine_chunks().to_numpy_ndarray(),
                          loaded["embedding"])


def test_every_read_refuses_a_tampered_member(gated: s43_ray.Run) -> None:
    flip_a_byte(gated.store, gated.key("m00002"))

    with pytest.raises(ChecksumMismatch):
        gated.load("m00002")
    with pytest.raises(ChecksumMismatch, match="m00002"):
        gated.read_table()
    dataset = gated.read_dataset()  # lazy: each member is verified as it is read
    with pytest.raises(Exception, match="m00002") as err:
        dataset.materialize()
    assert "no longer matches its passed verdict" in str(err.value)
    assert gated.load("m00001")  # the others still load


def test_reads_refuse_once_the_verdict_is_no_longer_the_latest(gated: s43_ray.Run,
                                                               api_store: s43_ray.Store) -> None:
    again = api_store.start_run("api-1", members=MEMBERS)
    assert again.attempt == 2

    with pytest.raises(s43_ray.GateFailed, match="attempt 2 started after"):
        gated.read_table()
    with pytest.raises(s43_ray.GateFailed, match="attempt 2 started after"):
        gated.read_dataset()


def test_run_cohort_takes_a_predictor_function(ray_cluster: None,
                                               api_store: s43_ray.Store) -> None:
    scale = 3.0

    def predictor(run_id: str, member: str, rows: int) -> dict[str, np.ndarray]:
        return {"predictions": np.full(rows, scale, dtype=np.float32)}  # a closure, by value

    events = EventLog(stream=open(os.devnull, "w"))  # noqa: SIM115
    summary = s43_ray.run_cohort(api_store, "fn-1", MEMBERS[:3], predictor=predictor,
                                 rows=20, events=events)

    assert summary.passed and summary.cohort_count == 3
    assert {e["run_id"] for e in events.records} == {"fn-1"}  # given once, carried by all
    assert events.named(RUN_STARTED)[0]["predictor"].endswith("<locals>.predictor")
    assert events.named(GATE_OUTCOME)[0]["status"] == "passed"
    table = api_store.open_run("fn-1").read_table()
    assert table.column("predictions").to_pylist() == [scale] * 60


def test_two_drivers_claiming_one_run_id_with_different_cohorts(
        api_store: s43_ray.Store) -> None:
    results: list[object] = []

    def claim(members: list[str]) -> None:
        try:
            results.append(api_store.start_run("race-1", members=members))
        except s43_ray.InputError as exc:
            results.append(exc)

    threads = [threading.Thread(target=claim, args=(MEMBERS[:k],)) for k in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    runs = [r for r in results if isinstance(r, s43_ray.Run)]
    refused = [r for r in results if isinstance(r, s43_ray.InputError)]
    assert len(runs) == 1 and len(refused) == 1
    assert "different cohort" in str(refused[0])
