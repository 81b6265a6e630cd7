"""``s43-ray runs`` and ``s43-ray report`` without ``--run-id`` on a folder store (pure: no
Ray, no S3): output, exit codes, flags."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest
from made_runs import MEMBERS, make_run

from s43_ray.cli.main import build_parser, main
from s43_ray.config import EnvDefaults, FileStoreConfig
from s43_ray.stores.file import FileStore

STORE_FLAGS = {"--store", "--endpoint-url", "--region", "--addressing-style", "--s3-checksum",
               "--max-attempts", "--local-dir", "--sse", "--sse-c-key-file", "--json", "--events",
               "-h", "--help"}


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _parser(command: str) -> argparse.ArgumentParser:
    parser = build_parser(EnvDefaults())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: argparse.ArgumentParser = sub.choices[command]
    return found


@pytest.fixture
def root(tmp_path: Path) -> Path:
    cfg = FileStoreConfig(root=str(tmp_path))
    fstore = FileStore(cfg)
    make_run(fstore, cfg, "r-old", "2026-12-01T10:00:00.000Z")
    make_run(fstore, cfg, "r-new", "2026-12-02T10:00:00.000Z", persisted=MEMBERS[:2])
    return tmp_path


def test_runs_flags_are_pinned() -> None:
    assert {o for a in _parser("runs")._actions for o in a.option_strings} == \
        STORE_FLAGS | {"--limit"}


@pytest.mark.parametrize("command", ["runs", "report"])
def test_every_flag_says_what_it_does(command: str) -> None:
    silent = [a.option_strings for a in _parser(command)._actions
              if a.option_strings and not a.help]
    assert silent == []


def test_runs_prints_a_table_newest_first(root: Path) -> None:
    code, out, err = _run("runs", "--store", f"file://{root}")

    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"2 runs under s43-predictions/ in file://{root}, newest "
                               "first")
    assert lines[1].split()[:3] == ["created", "run", "id"]
    assert lines[2].split()[1:4] == ["r-new", "FAILED", "2/3"]
    assert lines[3].split()[1:4] == ["r-old", "PASSED", "3/3"]


def test_runs_json_is_the_last_line_of_stdout(root: Path) -> None:
    code, out, err = _run("runs", "--store", f"file://{root}", "--json", "--limit", "1")

    assert code == 0, err
    listing = json.loads(out.strip().splitlines()[-1])
    assert listing["command"] == "runs" and listing["total"] == 2 and listing["older"] == 1
    assert [(r["run_id"], r["status"]) for r in listing["runs"]] == [("r-new", "failed")]
    assert "(+1 older run;" in err  # the human listing goes to stderr with --json


def test_report_without_a_run_id_lists_the_runs(root: Path) -> None:
    code, out, err = _run("report", "--store", f"file://{root}", "--json")

    assert code == 0, err
    listing = json.loads(out.strip().splitlines()[-1])
    assert listing["command"] == "report" and listing["limit"] == 50
    assert [r["run_id"] for r in listing["runs"]] == ["r-new", "r-old"]


def test_an_empty_store_says_so_and_exits_0(tmp_path: Path) -> None:
    code, out, err = _run("runs", "--store", f"file://{tmp_path}")

    assert code == 0, err
    assert out.strip() == f"no runs under s43-predictions/ in file://{tmp_path}"


def test_a_store_that_is_not_there_exits_3(tmp_path: Path) -> None:
    code, out, err = _run("runs", "--store", f"file://{tmp_path}/absent", "--json")

    assert code == 3
    assert json.loads(out.strip().splitlines()[-1])["exit_code"] == 3
    assert "does not exist" in err


@pytest.mark.parametrize(("limit", "named"), [("-1", "limit -1 is out of range"),
                                              ("lots", "limit 'lots' is not an integer")])
def test_a_bad_limit_exits_2(tmp_path: Path, limit: str, named: str) -> None:
    code, out, err = _run("runs", "--store", f"file://{tmp_path}", "--limit", limit, "--json")

    assert code == 2 and named in err
    assert json.loads(out.strip().splitlines()[-1])["command"] == "runs"
