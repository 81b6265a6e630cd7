"""Usage errors and bad defaults from the environment: exit 2, one line, before any work."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from s43_ray.cli.main import main


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("argv", "named"), [
    (["run", "--cohort-size", "0"], "cohort size 0"),
    (["run", "--rows", "many"], "rows 'many'"),
    (["run", "--format", "csv"], "'csv'"),
    (["run", "--cohort-size", "2", "--members", "a,b"], "not allowed with"),
    (["gate"], "--run-id"),
    (["bogus"], "bogus"),
], ids=["cohort-0", "rows-text", "format-csv", "exclusive", "gate-no-run-id", "no-such-command"])
def test_usage_error_exits_2_with_one_line_and_a_json_error(argv: list[str], named: str) -> None:
    code, out, err = _run(*argv, "--json")

    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("s43-ray: error:")
    assert named in lines[0]
    assert "Traceback" not in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "error" and summary["exit_code"] == 2


@pytest.mark.parametrize(("var", "value"), [("S43_S3_CHECKSUM", "bogus"),
                                            ("S43_S3_ADDRESSING_STYLE", "sideways"),
                                            ("S43_S3_PUT_CLIENT", "fast")])
def test_bad_setting_from_the_environment_exits_2_naming_it(
        monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    monkeypatch.setenv("S43_STORE", "s3://s43-never-contacted/p")

    code, _, err = _run("run", "--cohort-size", "1")

    assert code == 2
    assert f"{var}={value!r}" in err
    assert "expected one of" in err


def test_endpoint_without_store_is_refused_before_any_server_starts(
        tmp_path: Path) -> None:
    code, _, err = _run("run", "--endpoint-url", "http://127.0.0.1:9", "--local-dir",
                        str(tmp_path))

    assert code == 2
    assert "--endpoint-url 'http://127.0.0.1:9' was given without --store" in err
    assert not (tmp_path / "weed.log").exists()


def test_empty_member_list_is_refused_not_replaced_by_the_default() -> None:
    code, _, err = _run("run", "--members", "", "--store", "s3://s43-never-contacted/p")

    assert code == 2
    assert "member '' is not a valid name" in err


def test_an_unforeseen_error_exits_3_as_internal_with_an_event_and_a_json_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("s43_ray.cli.pipeline.run_cohort", broken)
    code, out, err = _run("run", "--run-id", "r-internal", "--store",
                          "s3://s43-never-contacted/p", "--json")

    assert code == 3
    error = json.loads(out.strip().splitlines()[-1])
    assert error == {"status": "error", "exit_code": 3, "error_class": "internal",
                     "message": "internal error: RuntimeError: boom", "command": "run",
                     "run_id": "r-internal"}
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    (failed,) = [e for e in events if e["event"] == "s43_run_failed"]
    assert failed["severity"] == "error" and failed["error_class"] == "internal"
    assert failed["run_id"] == "r-internal"
    assert "s43-ray: error: internal error: RuntimeError: boom" in err


@pytest.mark.parametrize(("argv", "env", "named"), [
    (["--max-attempts", "50"], {}, "--max-attempts 50 is not valid; expected an integer 1..20"),
    ([], {"S43_S3_MAX_ATTEMPTS": "0"}, "S43_S3_MAX_ATTEMPTS=0 is not valid"),
    ([], {"S43_S3_MAX_ATTEMPTS": "lots"}, "S43_S3_MAX_ATTEMPTS='lots' is not valid"),
    ([], {"S43_SSE": "aes"}, "S43_SSE='aes' is not valid; expected one of"),
    (["--sse", "aes"], {}, "--sse 'aes' is not valid; expected one of"),
    (["--addressing-style", "path"], {"S43_S3_ADDRESSING_STYLE": "sideways"}, None),
], ids=["flag-range", "env-range", "env-text", "env-sse", "flag-sse", "flag-beats-env"])
def test_a_setting_is_checked_once_and_named_where_it_came_from(
        monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str],
        named: str | None) -> None:
    """StoreConfig checks every value; the CLI says whether the flag or the variable gave it.
    A flag wins over its variable, so a bad variable behind a good flag is never read."""
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("S43_STORE", "s3://s43-never-contacted/p")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")

    one_try = [] if "--max-attempts" in argv or "S43_S3_MAX_ATTEMPTS" in env else [
        "--max-attempts", "1"]
    code, _, err = _run("gate", "--run-id", "r1", "--expected", "1", *one_try, *argv)

    if named is None:  # got past the settings: the closed port answers nothing (exit 3)
        assert code == 3, err
    else:
        assert code == 2 and named in err, err


@pytest.mark.parametrize(("argv", "env", "named"), [
    (["--store", "file:///tmp/s43-never-written"], {"S43_S3_CHECKSUM": "md5"},
     "S43_S3_CHECKSUM='md5'"),
    (["--store", "file:///tmp/s43-never-written"], {"AWS_ENDPOINT_URL_S3": "garbage"},
     "endpoint URL 'garbage'"),
], ids=["file-store-bad-env-setting", "file-store-bad-env-endpoint"])
def test_a_bad_setting_is_refused_whichever_store_is_named(
        monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str],
        named: str) -> None:
    for var, value in env.items():
        monkeypatch.setenv(var, value)

    code, out, err = _run("gc", *argv, "--json")

    assert code == 2 and named in err, err
    assert json.loads(out.strip().splitlines()[-1])["run_id"] == ""


def test_a_bad_variable_behind_a_good_flag_is_never_read(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setenv("S43_S3_MAX_ATTEMPTS", "abc")

    code, _, err = _run("gc", "--store", f"file://{tmp_path}", "--max-attempts", "3")

    assert code == 0, err


def test_refused_input_names_no_run_it_made_up() -> None:
    code, out, _ = _run("run", "--predictor", "no_such_module:f", "--json")
    assert code == 2 and json.loads(out.strip().splitlines()[-1])["run_id"] == ""

    code, out, _ = _run("run", "--run-id", "mine", "--predictor", "no_such_module:f", "--json")
    assert code == 2 and json.loads(out.strip().splitlines()[-1])["run_id"] == "mine"
