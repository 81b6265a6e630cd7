"""A conditional create whose first try landed but whose answer was lost.

The store's retry sends the request again and the store refuses it (412): the object it would
create is already there, because it wrote it. Before, that refusal failed the run (a passed run
exiting 3 without ``_gate.json``, its ledger refused); now the writer reads the key back and
accepts an object that is its own body, byte for byte. Anything else there is still refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from s43_ray.errors import PreconditionFailed
from s43_ray.gate import Verdict
from s43_ray.keys import RunLayout
from s43_ray.ledger import Ledger, LedgerEntry, claim_attempt, write_ledger
from s43_ray.stores.base import create_once, precondition_failed
from s43_ray.stores.memory import MemoryStore
from s43_ray.verdicts import save_verdict

RUN = "manual__2026-12-01T10:00:00+00:00"
LAYOUT = RunLayout("p", RUN)


class LostAnswers(MemoryStore):
    """Every conditional create lands, then reports the refusal its retry would get."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    def put(self, key: str, body: bytes | memoryview, *, metadata: Mapping[str, str],
            if_none_match: bool = False, **kw: Any) -> str | None:
        etag = super().put(key, body, metadata=metadata, if_none_match=if_none_match, **kw)
        if if_none_match:
            self.lost += 1
            raise precondition_failed(f"PUT {self.url}/{key}", "the key already exists",
                                      "If-None-Match: *")
        return etag


def _ledger(attempt: int) -> Ledger:
    entry = LedgerEntry(LAYOUT.member_key("m00000", "npz"), "crc64nvme:AAAAAAAAAAA=", 10,
                        "s1:" + "0" * 32, attempt)
    return Ledger(RUN, attempt, "npz", {"m00000": entry}, cohort=("m00000",), token="t0k3n",
                  written_at="2026-12-01T10:50:12.345Z")


def test_create_once_accepts_its_own_landed_write_and_refuses_anyone_elses() -> None:
    store = LostAnswers()
    create_once(store, "k", b"mine", metadata={})
    assert store.lost == 1 and store.objects["k"][0] == b"mine"

    with pytest.raises(PreconditionFailed, match="already exists"):
        create_once(store, "k", b"theirs", metadata={})
    assert store.objects["k"][0] == b"mine"


def test_a_ledger_whose_answer_was_lost_is_written_not_refused() -> None:
    store = LostAnswers()

    write_ledger(store, LAYOUT, _ledger(1))

    assert store.lost == 1
    assert store.objects[LAYOUT.ledger_key(1)][0] == _ledger(1).to_json()


def test_an_attempt_claim_whose_answer_was_lost_keeps_its_number() -> None:
    """Before, the refusal moved the claim on to the next number and left an orphan record."""
    store = LostAnswers()

    attempt = claim_attempt(store, LAYOUT, "run")

    assert attempt.number == 1
    assert [k for k in store.objects if "/_attempts/" in k] == [LAYOUT.attempt_key(1)]


def test_a_verdict_whose_history_answer_was_lost_still_becomes_the_latest() -> None:
    store = LostAnswers()
    verdict = Verdict(run_id=RUN, store="memory://memory", codec="npz", expected=1,
                      cohort_count=1, status="passed", reason="r", missing=[], invalid={},
                      unexpected=[], attempt=1, started_at="2026-12-01T10:50:12.345Z",
                      finished_at="2026-12-01T10:50:12.345Z", token="abcd0123")

    saved = save_verdict(store, LAYOUT, verdict)

    assert saved.latest
    assert store.objects[saved.history_key][0] == verdict.to_json()
    assert store.objects[LAYOUT.gate_key][0] == verdict.to_json()


def test_another_drivers_ledger_under_the_key_is_still_refused() -> None:
    store = MemoryStore()
    write_ledger(store, LAYOUT, _ledger(1))

    with pytest.raises(PreconditionFailed):
        write_ledger(store, LAYOUT, Ledger(**{**_ledger(1).__dict__, "token": "other"}))
