"""``s43-ray runs`` (and ``report`` without ``--run-id``) on real runs, on the session's real
SeaweedFS server and local Ray cluster; and ``S3Store.list_dirs``, the delimiter listing it
stands on: paginated, retried and classified like ``list``."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator

import pytest
from faults import FaultProxy, Rule
from helpers import CliResult

import s43_ray.stores.s3 as store_module
from s43_ray.cli.main import main
from s43_ray.config import StoreConfig
from s43_ray.errors import AccessDenied, NoSuchBucket
from s43_ray.stores.local_s3 import LocalS3
from s43_ray.stores.s3 import S3Store

Cli = Callable[..., CliResult]


def _run(cli: Cli, store_args: list[str], run_id: str) -> None:
    r = cli("run", "--run-id", run_id, "--cohort-size", "2", "--rows", "10", *store_args)
    assert r.code == 0, r.stderr


@pytest.mark.ray
@pytest.mark.s3
def test_runs_lists_real_runs_newest_first_with_their_verdicts_recomputed(
        cli: Cli, store_args: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    empty = cli("runs", *store_args)
    assert empty.code == 0, empty.stderr
    assert empty.stdout.strip() == f"no runs under {store_cfg.prefix}/ in {store_cfg.url}"

    base = f"{store_cfg.prefix}/"
    _run(cli, store_args, "runs-ok")
    _run(cli, store_args, "runs-failed")
    store.delete(f"{base}runs-failed/m00001.arrow")
    assert cli("gate", "--run-id", "runs-failed", *store_args).code == 1
    _run(cli, store_args, "runs-forged")
    store.delete(f"{base}runs-forged/m00000.arrow")
    assert cli("gate", "--run-id", "runs-forged", *store_args).code == 1
    # Someone edits the failed verdict to claim a pass, metadata and all.
    gate_key = f"{base}runs-forged/_gate.json"
    body, _ = store.get(gate_key)
    record = json.loads(bytes(body))
    record.update(status="passed", cohort_count=2, missing=[], shortfall=0, reason="fine")
    meta = dict(store.head(gate_key).metadata, **{"s43-status": "passed"})
    store.put(gate_key, json.dumps(record).encode(), metadata=meta,
              content_type="application/json")

    listed = cli("runs", *store_args, "--json")

    assert listed.code == 0, listed.stderr
    s = listed.summary
    assert s["command"] == "runs" and s["total"] == 3 and s["older"] == 0
    assert s["store"] == store_cfg.url and s["prefix"] == store_cfg.prefix
    runs = {r["run_id"]: r for r in s["runs"]}
    assert [r["run_id"] for r in s["runs"]] == ["runs-forged", "runs-failed", "runs-ok"]
    assert [r["created_at"] for r in s["runs"]] == sorted(
        (r["created_at"] for r in s["runs"]), reverse=True)
    ok = runs["runs-ok"]
    assert (ok["status"], ok["cohort_count"], ok["expected"], ok["members"]) == (
        "passed", 2, 2, 2)
    assert ok["codec"] == "arrow" and ok["attempt"] == 1 and ok["notes"] == []
    assert ok["finished_at"].endswith("Z") and ok["created_at"] <= ok["finished_at"]
    failed = runs["runs-failed"]
    assert (failed["status"], failed["cohort_count"], failed["expected"]) == ("failed", 1, 2)
    assert "m00001" in failed["note"]
    forged = runs["runs-forged"]
    assert forged["status"] == "inconsistent" and forged["claimed"] == "passed"
    assert "edited or forged?" in forged["note"]
    # The human table, on stderr with --json and on stdout without.
    human = cli("runs", *store_args)
    assert human.code == 0
    lines = human.stdout.splitlines()
    assert lines[0].startswith(f"3 runs under {store_cfg.prefix}/ in {store_cfg.url}")
    assert [ln.split()[1:4] for ln in lines[2:5]] == [
        ["runs-forged", "INCONSISTENT", "1/2"], ["runs-failed", "FAILED", "1/2"],
        ["runs-ok", "PASSED", "2/2"]]
    assert "PASSED" not in lines[2]
    assert lines[0] in listed.stderr

    cut = cli("runs", *store_args, "--limit", "1", "--json")
    assert cut.code == 0
    assert [r["run_id"] for r in cut.summary["runs"]] == ["runs-forged"]
    assert cut.summary["older"] == 2 and "(+2 older runs;" in cut.stderr

    report = cli("report", *store_args, "--json")
    assert report.code == 0, report.stderr
    assert report.summary["command"] == "report"
    assert report.summary["runs"] == s["runs"]


@pytest.mark.s3
def test_runs_on_a_bucket_that_does_not_exist_exits_3(s3_server: LocalS3) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["runs", "--store", "s3://s43-absent-bucket/p", "--endpoint-url",
                 s3_server.endpoint_url, "--max-attempts", "1", "--json"], stdout=out,
                stderr=err)

    assert code == 3
    assert json.loads(out.getvalue().strip().splitlines()[-1])["error_class"] == \
        "no_such_bucket"


# --- S3Store.list_dirs --------------------------------------------------------------------------


@pytest.mark.s3
def test_list_dirs_paginates_and_never_lists_the_keys_inside(
        store: S3Store, store_cfg: StoreConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    base = f"{store_cfg.prefix}/dirs/"
    folders = [f"{base}run{i}/" for i in range(5)]
    for folder in folders:
        for name in ("a.arrow", "b.arrow", "_gates/x.json"):
            store.put(folder + name, b"x", metadata={})
    store.put(f"{base}loose.txt", b"x", metadata={})
    store.put(f"{store_cfg.prefix}/dirs-sibling/run9/a", b"x", metadata={})
    calls: list[dict[str, object]] = []

    def count(params: dict[str, object], **_: object) -> None:
        calls.append(dict(params))

    client = S3Store(store_cfg).client  # the shared per-config client
    client.meta.events.register("provide-client-params.s3.ListObjectsV2", count)
    monkeypatch.setattr(store_module, "LIST_PAGE_SIZE", 2)
    try:
        listed = list(store.list_dirs(base))
    finally:
        client.meta.events.unregister("provide-client-params.s3.ListObjectsV2", count)

    assert listed == folders
    assert [c["MaxKeys"] for c in calls] == [2, 2, 2]  # 5 folders and a key, 2 a page
    assert all(c["Delimiter"] == "/" and c["Prefix"] == base for c in calls)
    assert list(store.list_dirs(f"{store_cfg.prefix}/nothing-here/")) == []
    assert list(store.list_dirs(f"{base}run0/")) == [f"{base}run0/_gates/"]


@pytest.fixture
def proxy(s3_server: LocalS3) -> Iterator[FaultProxy]:
    p = FaultProxy(s3_server.endpoint_url).start()
    yield p
    p.stop()


@pytest.mark.s3
def test_list_dirs_is_retried_and_classified_like_list(
        store: S3Store, store_cfg: StoreConfig, proxy: FaultProxy) -> None:
    store.put(f"{store_cfg.prefix}/r1/a", b"x", metadata={})
    via_proxy = S3Store(StoreConfig(bucket=store_cfg.bucket, prefix=store_cfg.prefix,
                                    endpoint_url=proxy.endpoint_url, max_attempts=3))
    bucket_path = f"/{store_cfg.bucket}"
    proxy.add(Rule("GET", bucket_path, "status", 503, "SlowDown", times=1))

    assert list(via_proxy.list_dirs(f"{store_cfg.prefix}/")) == [f"{store_cfg.prefix}/r1/"]
    assert proxy.count("GET", bucket_path) == 2 and via_proxy.retries >= 1

    proxy.add(Rule("GET", bucket_path, "status", 403, "AccessDenied", times=None))
    before = proxy.count("GET", bucket_path)
    with pytest.raises(AccessDenied) as info:
        list(via_proxy.list_dirs(f"{store_cfg.prefix}/"))
    assert f"LIST s3://{store_cfg.bucket}/{store_cfg.prefix}/" in str(info.value)
    assert proxy.endpoint_url in str(info.value)
    assert proxy.count("GET", bucket_path) == before + 1  # a refusal is not retried

    absent = S3Store(StoreConfig(bucket="s43-absent-bucket", prefix="p",
                                 endpoint_url=store_cfg.endpoint_url, max_attempts=1))
    with pytest.raises(NoSuchBucket, match="s43-absent-bucket"):
        list(absent.list_dirs("p/"))
