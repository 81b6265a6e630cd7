"""Exit codes 2 (bad input, nothing written) and 3 (store unreachable), as a user sees them."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from helpers import CliResult, keys_under

from s43_ray.config import StoreConfig
from s43_ray.stores.local_s3 import free_ports
from s43_ray.stores.s3 import S3Store

Cli = Callable[..., CliResult]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line and not line.startswith("{")]


@pytest.mark.parametrize("run_id", ["../x", "a/b", "", "x" * 201, "bad\nid", "with space"],
                         ids=["dotdot", "slash", "empty", "too-long", "newline", "space"])
def test_bad_run_id_exits_2_and_writes_nothing(cli: Cli, store_args: list[str], store: S3Store,
                                               store_cfg: StoreConfig, run_id: str) -> None:
    r = cli("run", "--run-id", run_id, "--cohort-size", "2", "--rows", "100", *store_args)

    assert r.code == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    shown = run_id if len(run_id) <= 60 else run_id[:57]
    assert repr(shown).rstrip("'") in lines[0]
    assert keys_under(store, store_cfg.prefix + "/") == []


def test_bad_run_id_is_refused_by_gate_too(cli: Cli, store_args: list[str]) -> None:
    r = cli("gate", "--run-id", "../x", "--expected", "2", *store_args)

    assert r.code == 2
    assert "'../x'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(("flags", "named"), [
    (["--cohort-size", "0"], "0"),
    (["--rows", "-1"], "-1"),
    (["--format", "csv"], "csv"),
    (["--predictor", "nosuchmod:f"], "nosuchmod:f"),
    (["--predictor", "not a path"], "not a path"),
    (["--members", "a,a"], "a"),
    (["--members", "_hidden"], "_hidden"),
], ids=["cohort-0", "rows-neg", "format-csv", "predictor-missing", "predictor-bad",
        "members-dup", "members-reserved"])
def test_bad_run_flags_exit_2_and_write_nothing(cli: Cli,
                                                store_args: list[str], store: S3Store,
                                                store_cfg: StoreConfig, flags: list[str],
                                                named: str) -> None:
    r = cli("run", "--run-id", "bad-flags", "--rows", "100", *flags,
               *store_args)

    assert r.code == 2
    assert "Traceback" not in r.stderr
    errors = error_lines(r.stderr)
    assert len(errors) == 1, r.stderr
    assert named in errors[0]
    assert keys_under(store, store_cfg.prefix + "/") == []


@pytest.mark.parametrize("url", ["http://x", "s3://", "s3://B/upper", "s3://ok-bucket/a/../b"])
def test_bad_store_url_exits_2(cli: Cli, store_cfg: StoreConfig, store: S3Store,
                               url: str) -> None:
    r = cli("run", "--run-id", "bad-store", "--cohort-size", "2", "--rows", "100",
            "--store", url, "--endpoint-url", str(store_cfg.endpoint_url))

    assert r.code == 2
    assert f"{url!r}" in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert keys_under(store, store_cfg.prefix + "/") == []


def test_bad_endpoint_url_exits_2(cli: Cli, store_cfg: StoreConfig, store: S3Store) -> None:
    r = cli("run", "--run-id", "bad-endpoint", "--cohort-size", "2", "--store", store_cfg.url,
            "--endpoint-url", "ftp://127.0.0.1:1")

    assert r.code == 2
    assert "'ftp://127.0.0.1:1'" in r.stderr
    assert keys_under(store, store_cfg.prefix + "/") == []


def test_usage_error_returns_2_and_prints_json_error(cli: Cli, store_args: list[str]) -> None:
    r = cli("run", "--cohort-size", "0", "--json", *store_args)

    assert r.code == 2
    assert "cohort size 0" in r.stderr
    assert r.summary["status"] == "error" and r.summary["exit_code"] == 2


def test_closed_port_endpoint_exits_3_naming_it(cli: Cli, store_cfg: StoreConfig) -> None:
    (port,) = free_ports(1)
    endpoint = f"http://127.0.0.1:{port}"

    r = cli("run", "--run-id", "closed-port", "--cohort-size", "2", "--rows", "100",
            "--store", store_cfg.url, "--endpoint-url", endpoint, "--max-attempts", "1",
            "--json")

    assert r.code == 3
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("s43-ray: error:")]
    assert len(errors) == 1, r.stderr
    assert endpoint in errors[0]
    assert r.summary["status"] == "error" and r.summary["exit_code"] == 3
    assert r.summary["error_class"] == "unreachable"
    assert r.summary["run_id"] == "closed-port"
    (failed,) = r.named("s43_run_failed")  # what an alert on infrastructure failures sees
    assert failed["severity"] == "error" and failed["error_class"] == "unreachable"
    assert failed["run_id"] == "closed-port" and endpoint in failed["message"]


def test_gate_on_closed_port_exits_3(cli: Cli, store_cfg: StoreConfig) -> None:
    (port,) = free_ports(1)
    endpoint = f"http://127.0.0.1:{port}"

    r = cli("gate", "--run-id", "closed-port", "--expected", "2", "--store", store_cfg.url,
            "--endpoint-url", endpoint, "--max-attempts", "1")

    assert r.code == 3
    assert endpoint in r.stderr and "Traceback" not in r.stderr


def test_missing_bucket_exits_3(cli: Cli, store_cfg: StoreConfig, store: S3Store) -> None:
    r = cli("run", "--run-id", "no-bucket", "--cohort-size", "2", "--rows", "100",
            "--store", "s3://s43-no-such-bucket-here/p", "--endpoint-url",
            str(store_cfg.endpoint_url), "--max-attempts", "1", "--json")

    assert r.code == 3
    assert "s43-no-such-bucket-here" in r.stderr
    assert "Traceback" not in r.stderr
    assert r.summary["error_class"] == "no_such_bucket"


def test_other_bucket_is_used_when_named(cli: Cli, store_cfg: StoreConfig, other_bucket: str,
                                         store: S3Store) -> None:
    other = StoreConfig(bucket=other_bucket, prefix="p", endpoint_url=store_cfg.endpoint_url,
                        region="us-east-1", max_attempts=2)
    r = cli("run", "--run-id", "other-b", "--cohort-size", "2", "--rows", "100", "--json",
            "--store", other.url, "--endpoint-url", str(other.endpoint_url))

    assert r.code == 0, r.stderr
    assert keys_under(S3Store(other), "p/other-b/") == [
        "p/other-b/_gate.json", "p/other-b/_run.json", "p/other-b/m00000.arrow",
        "p/other-b/m00001.arrow"]
    assert keys_under(store, store_cfg.prefix + "/") == []


def test_wrong_secret_exits_3_without_leaking_it(cli: Cli, store_args: list[str],
                                                 store: S3Store, store_cfg: StoreConfig,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "wrong-secret-value-0123456789"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    r = cli("run", "--run-id", "wrong-secret", "--cohort-size", "2", "--rows", "100",
            "--json", *store_args[:-2], "--max-attempts", "1")
    monkeypatch.undo()

    assert r.code == 3
    assert r.summary["error_class"] == "auth"
    assert wrong not in r.stdout and wrong not in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["exit_code"] == 3
    assert keys_under(store, store_cfg.prefix + "/") == []
