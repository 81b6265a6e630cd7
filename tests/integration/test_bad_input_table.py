"""The bad-input table: every command, every kind of input. Each row exits 2 (3 for a store
that cannot be reached or refuses) with one line naming the value and what was expected, no
traceback, and nothing written to the store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import CliResult, keys_under

from s43_ray.config import StoreConfig
from s43_ray.stores.local_s3 import free_ports
from s43_ray.stores.s3 import S3Store

Cli = Callable[..., CliResult]
# Three attempts: not the store fixture's two, so the CLI builds its own S3 client and picks up
# the credentials a row puts in the environment (clients are cached per configuration).
S = ["--store", "STORE", "--endpoint-url", "ENDPOINT", "--max-attempts", "3"]
RUN = ["run", "--run-id", "bad-input", "--cohort-size", "2", "--rows", "100"]

# (id, argv, environment, exit code, what the error line must name)
TABLE: list[tuple[str, list[str], dict[str, str | None], int, str]] = [
    ("run-id-dotdot", ["run", "--run-id", "../x", *S], {}, 2, "'../x'"),
    ("run-id-too-long", ["run", "--run-id", "r" * 201, *S], {}, 2, "201 characters"),
    ("run-id-space", ["gate", "--run-id", "bad id", "--expected", "2", *S], {}, 2, "'bad id'"),
    ("cohort-size-0", ["run", "--cohort-size", "0", *S], {}, 2, "cohort size 0"),
    ("cohort-size-huge", ["run", "--cohort-size", "100001", *S], {}, 2, "100001"),
    ("rows-0", [*RUN[:5], "--rows", "0", *S], {}, 2, "rows 0"),
    ("rows-text", [*RUN[:5], "--rows", "many", *S], {}, 2, "'many'"),
    ("format", [*RUN, "--format", "parquet", *S], {}, 2, "'parquet'"),
    ("gate-format", ["gate", "--run-id", "x", "--format", "csv", *S], {}, 2, "'csv'"),
    ("gate-expected-0", ["gate", "--run-id", "x", "--expected", "0", *S], {}, 2, "expected 0"),
    ("members-dup", ["run", "--members", "a,b,a", *S], {}, 2, "'a'"),
    ("store-scheme", [*RUN, "--store", "gs://bucket/p"], {}, 2, "'gs://bucket/p'"),
    ("store-bucket", [*RUN, "--store", "s3://Upper_Case/p"], {}, 2, "'Upper_Case'"),
    ("store-file-relative", [*RUN, "--store", "file:relative/dir"], {}, 2, "relative"),
    ("endpoint-scheme", [*RUN, "--store", "STORE", "--endpoint-url", "ftp://h:1"], {}, 2,
     "'ftp://h:1'"),
    ("endpoint-port", [*RUN, "--store", "STORE", "--endpoint-url", "http://127.0.0.1:99999"],
     {}, 2, "bad port"),
    ("endpoint-no-store", [*RUN, "--endpoint-url", "ENDPOINT"], {"S43_STORE": None}, 2,
     "without --store"),
    ("predictor-module", [*RUN, "--predictor", "no_such_module:f", *S], {}, 2,
     "no_such_module"),
    ("predictor-function", [*RUN, "--predictor", "s43_ray.predict:nope", *S], {}, 2, "nope"),
    ("predictor-syntax", [*RUN, "--predictor", "not a path", *S], {}, 2, "'not a path'"),
    ("stall-timeout", [*RUN, "--stall-timeout", "0", *S], {}, 2, "stall timeout 0"),
    ("resume-no-run-id", ["run", "--resume", *S], {}, 2, "--resume was given without --run-id"),
    ("resume-unknown", [*RUN, "--resume", *S], {}, 2, "has no record"),
    ("env-max-attempts", [*RUN, "--store", "STORE", "--endpoint-url", "ENDPOINT"],
     {"S43_S3_MAX_ATTEMPTS": "lots"}, 2, "'lots'"),
    ("env-s3-checksum", [*RUN, *S], {"S43_S3_CHECKSUM": "md5"}, 2, "S43_S3_CHECKSUM='md5'"),
    ("smoke-nodes", ["smoke", "--nodes", "1"], {}, 2, "nodes 1"),
    ("smoke-file-store", ["smoke", "--store", "file:///tmp"], {}, 2, "expected an S3 store"),
    ("credentials-profile", [*RUN, *S], {"AWS_PROFILE": "no-such-profile",
                                         "AWS_ACCESS_KEY_ID": None,
                                         "AWS_SECRET_ACCESS_KEY": None}, 2,
     "'no-such-profile'"),
    ("credentials-wrong-secret", [*RUN, *S], {"AWS_SECRET_ACCESS_KEY": "wrong-secret-xyz"}, 3,
     "access denied"),
    ("credentials-none", [*RUN, *S], {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None},
     3, "no credentials"),
    ("store-closed-port", [*RUN, "--store", "STORE", "--endpoint-url", "CLOSED"], {}, 3,
     "CLOSED"),
    ("store-wrong-host", [*RUN, "--store", "STORE", "--endpoint-url",
                          "http://s43-no-such-host.invalid:9000"], {}, 3,
     "http://s43-no-such-host.invalid:9000"),
    ("store-no-bucket", [*RUN, "--store", "s3://s43-no-such-bucket/p", "--endpoint-url",
                         "ENDPOINT"], {}, 3, "s43-no-such-bucket"),
    ("gate-unreachable", ["gate", "--run-id", "x", "--expected", "2", "--store", "STORE",
                          "--endpoint-url", "CLOSED", "--max-attempts", "1"], {}, 3, "CLOSED"),
]


@pytest.mark.parametrize(("argv", "env", "code", "named"), [row[1:] for row in TABLE],
                         ids=[row[0] for row in TABLE])
def test_bad_input(cli: Cli, store_cfg: StoreConfig, store: S3Store,
                   monkeypatch: pytest.MonkeyPatch, argv: list[str],
                   env: dict[str, str | None], code: int, named: str) -> None:
    closed = f"http://127.0.0.1:{free_ports(1)[0]}"
    subst = {"STORE": store_cfg.url, "ENDPOINT": str(store_cfg.endpoint_url), "CLOSED": closed}
    named = subst.get(named, named)
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    result = cli(*[subst.get(a, a) for a in argv], "--json")
    monkeypatch.undo()

    assert result.code == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("{")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("s43-ray: error: ")
    assert named in lines[0], lines[0]
    assert "expected" in lines[0] or code == 3, lines[0]
    assert result.summary == {**result.summary, "status": "error", "exit_code": code}
    assert keys_under(store, store_cfg.prefix + "/") == []  # nothing written
    for value in ("wrong-secret-xyz", "s43-test-secret"):
        assert value not in result.stderr and value not in result.stdout


def test_the_table_covers_every_command_and_kind_of_input() -> None:
    assert len(TABLE) >= 15
    assert {row[1][0] for row in TABLE} == {"run", "gate", "smoke"}
    kinds = {row[0].split("-")[0] for row in TABLE}
    assert {"run", "cohort", "rows", "format", "store", "endpoint", "predictor",
            "credentials"} <= kinds


def test_a_file_store_that_is_not_mounted_writes_nothing(cli: Cli, tmp_path: Path) -> None:
    result = cli(*RUN, "--store", f"file://{tmp_path}/absent", "--json")
    assert result.code == 3
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_store_fails_within_the_default_retry_budget(
        cli: Cli, store_cfg: StoreConfig) -> None:
    """Five attempts with botocore's capped exponential backoff: seconds, never minutes."""
    import time

    closed = f"http://127.0.0.1:{free_ports(1)[0]}"
    t0 = time.monotonic()
    result = cli(*RUN, "--store", store_cfg.url, "--endpoint-url", closed, "--json")
    elapsed = time.monotonic() - t0
    assert result.code == 3
    assert result.summary["error_class"] == "unreachable" and closed in result.stderr
    assert elapsed < 60, f"took {elapsed:.1f}s"
