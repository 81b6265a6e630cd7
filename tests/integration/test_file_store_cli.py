"""``--store file:///DIR``: a shared folder as the store, on the session's real Ray cluster.

On one machine every Ray node sees the same folder, which is exactly when a file store is
correct (a shared volume such as NFS). The smoke shows what happens when nodes do not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from s43_ray.keys import RunLayout

pytestmark = [pytest.mark.ray]
Cli = Any


def test_run_then_gate_through_a_shared_folder(cli: Cli, tmp_path: Path) -> None:
    url = f"file://{tmp_path}"
    run = cli("run", "--store", url, "--run-id", "shared-1", "--cohort-size", "3", "--rows",
              "500", "--format", "npz", "--json")
    assert run.code == 0, run.stderr
    assert run.summary["store"] == url and run.summary["cohort_count"] == 3
    layout = RunLayout("s43-predictions", "shared-1")
    for member in ("m00000", "m00001", "m00002"):
        assert (tmp_path / layout.member_key(member, "npz")).stat().st_size > 0
    verdict = json.loads((tmp_path / layout.gate_key).read_text())
    assert verdict["status"] == "passed" and verdict["cohort_count"] == 3
    # The gate re-checks from the folder alone, with the manifest the run recorded there.
    gate = cli("gate", "--store", url, "--run-id", "shared-1", "--verify", "head", "--json")
    assert gate.code == 0, gate.stderr
    assert gate.summary["cohort_count"] == 3 and gate.summary["codec"] == "npz"
    # A member deleted from the folder is named missing.
    (tmp_path / layout.member_key("m00001", "npz")).unlink()
    again = cli("gate", "--store", url, "--run-id", "shared-1", "--json")
    assert again.code == 1
    assert again.summary["missing"] == ["m00001"]


def test_a_file_store_whose_folder_is_missing_exits_3_writing_nothing(cli: Cli,
                                                                    tmp_path: Path) -> None:
    root = tmp_path / "not-mounted"
    result = cli("run", "--store", f"file://{root}", "--cohort-size", "2", "--json")
    assert result.code == 3
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("s43-ray: error: file store root") and "does not exist" in line
    assert not root.exists()


def test_endpoint_url_with_a_file_store_is_refused(cli: Cli, tmp_path: Path) -> None:
    result = cli("run", "--store", f"file://{tmp_path}", "--endpoint-url",
                 "http://127.0.0.1:9000", "--json")
    assert result.code == 2
    assert "does not apply to the file store" in result.stderr
    assert list(tmp_path.iterdir()) == []
