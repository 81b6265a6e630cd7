"""``s43-ray run --run-id RUN --resume``: finish a broken run without redoing what is good."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import keys_under

from s43_ray.config import StoreConfig
from s43_ray.keys import RunLayout
from s43_ray.stores.s3 import S3Store

pytestmark = [pytest.mark.ray, pytest.mark.s3]
Cli = Any
RUN = ["run", "--run-id", "resume-me", "--cohort-size", "5", "--rows", "200"]


@pytest.fixture
def finished(cli: Cli, store_args: list[str]) -> list[str]:
    first = cli(*RUN, *store_args)
    assert first.code == 0, first.stderr
    return store_args


def test_resume_recomputes_only_missing_and_invalid_members(
        cli: Cli, finished: list[str], store: S3Store, store_cfg: StoreConfig) -> None:
    layout = RunLayout(store_cfg.prefix, "resume-me")
    kept = {m: store.head(layout.member_key(m, "arrow")).last_modified
            for m in ("m00000", "m00002", "m00004")}
    store.delete(layout.member_key("m00001", "arrow"))
    body, info = store.get(layout.member_key("m00003", "arrow"))
    store.put(layout.member_key("m00003", "arrow"), bytes(body)[:-8],
              metadata=dict(info.metadata))  # truncated

    result = cli(*RUN, *finished, "--resume", "--json")
    assert result.code == 0, result.stderr
    s = result.summary
    assert s["status"] == "passed" and s["cohort_count"] == 5
    assert (s["reused"], s["computed"]) == (3, 2)
    assert sorted(e["member"] for e in result.named("s43_pred_persisted")) == ["m00001",
                                                                              "m00003"]
    (started,) = result.named("s43_run_started")
    assert started["resume"] is True and started["reused"] == 3 and started["to_compute"] == 2
    # The good members were not rewritten.
    assert {m: store.head(layout.member_key(m, "arrow")).last_modified for m in kept} == kept
    assert "resumed: 3 members reused, 2 computed" in result.stderr


def test_resuming_a_complete_run_computes_nothing(cli: Cli, finished: list[str]) -> None:
    result = cli(*RUN, *finished, "--resume", "--json")
    assert result.code == 0, result.stderr
    assert (result.summary["reused"], result.summary["computed"]) == (5, 0)
    assert result.named("s43_pred_persisted") == []


@pytest.mark.parametrize(("change", "named"), [
    (["--cohort-size", "6"], "members (5 -> 6"),
    (["--format", "npz"], "codec ('arrow' -> 'npz')"),
    (["--rows", "300"], "rows (200 -> 300)"),
    (["--predictor", "tests.predictors:slow"], "predictor"),
], ids=["cohort", "format", "rows", "predictor"])
def test_resuming_with_another_cohort_or_format_is_refused(
        cli: Cli, finished: list[str], store: S3Store, store_cfg: StoreConfig,
        change: list[str], named: str) -> None:
    before = keys_under(store, store_cfg.prefix + "/")
    result = cli(*RUN, *change, *finished, "--resume", "--json")
    assert result.code == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("s43-ray: error: cannot resume run 'resume-me': it was started "
                           "with a different cohort")
    assert named in line and "expected the same members" in line
    assert keys_under(store, store_cfg.prefix + "/") == before
