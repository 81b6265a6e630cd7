"""fanout.fan_out with Ray's calls replaced: tasks are submitted a window at a time, each
finished ObjectRef is let go, what is kept of a reference is small, and a run that gives up
names every member it did not persist, submitted or not."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import ray

from s43_ray import fanout
from s43_ray.config import StoreConfig
from s43_ray.events import EventLog
from s43_ray.fanout import CIRCUIT_OPEN, Persisted, fan_out
from s43_ray.keys import member_names
from s43_ray.outcome import Tally
from s43_ray.progress import Progress
from s43_ray.task import PersistFailure, PredictionRef, TaskSpec

SPEC = TaskSpec(store=StoreConfig(bucket="memory", prefix="p"), run_id="r1", codec="npz",
                rows=4, predictor="s43_ray.predict:default_predictor", attempt=2,
                schema="schema-digest")


class FakeRef:
    def __init__(self, member: str) -> None:
        self.member = member


class FakeRay:
    """``persist_task``, ``ray.wait``, ``ray.get`` and ``ray.cancel``: a task finishes on
    the first wait after it was submitted, unless its member is ``hung``."""

    def __init__(self, hung: Sequence[str] = ()) -> None:
        self.hung = set(hung)
        self.in_flight: set[str] = set()
        self.most_in_flight = 0
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self.options: list[dict[str, Any]] = []

    # persist_task
    def remote(self, spec: TaskSpec, member: str) -> FakeRef:
        assert spec is SPEC
        self.submitted.append(member)
        self.in_flight.add(member)
        self.most_in_flight = max(self.most_in_flight, len(self.in_flight))
        return FakeRef(member)

    def task_options(self, **opts: Any) -> FakeRay:
        self.options.append(opts)
        return self

    # ray
    def wait(self, refs: list[FakeRef], *, num_returns: int, timeout: float
             ) -> tuple[list[FakeRef], list[FakeRef]]:
        done = [r for r in refs if r.member not in self.hung][:num_returns]
        return done, [r for r in refs if r not in done]

    def get(self, refs: list[FakeRef]) -> list[PredictionRef]:
        for r in refs:
            self.in_flight.discard(r.member)
        return [_ref(r.member) for r in refs]

    def cancel(self, ref: FakeRef, force: bool = False) -> None:
        self.cancelled.append(ref.member)
        self.in_flight.discard(ref.member)


def _ref(member: str) -> PredictionRef:
    return PredictionRef(
        run_id=SPEC.run_id, member=member, key=SPEC.layout.member_key(member, "npz"),
        codec="npz", bytes=1000 + len(member), checksum=f"crc-{member}", arrays={},
        predict_seconds=0.1, encode_seconds=0.1, write_seconds=0.25, node_id="node-a",
        pid=1, s3_retries=1, attempt=0, run_attempt=SPEC.attempt, schema="schema-digest")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRay]:
    ray_fake = FakeRay()

    class Task:
        @staticmethod
        def options(**opts: Any) -> FakeRay:
            return ray_fake.task_options(**opts)

    monkeypatch.setattr(fanout, "persist_task", Task)
    monkeypatch.setattr(ray, "wait", ray_fake.wait)
    monkeypatch.setattr(ray, "get", ray_fake.get)
    monkeypatch.setattr(ray, "cancel", ray_fake.cancel)
    monkeypatch.setattr(fanout, "WAIT_BATCH", 8)
    yield ray_fake


def _events() -> EventLog:
    return EventLog(io.StringIO(), run_id=SPEC.run_id)


def test_fan_out_keeps_at_most_max_in_flight_tasks_submitted(fake: FakeRay) -> None:
    members = member_names(100)
    seen: list[str] = []
    outcomes = fan_out(SPEC, members, _events(), Progress(100, enabled=False), {"num_cpus": 1},
                       member_options=lambda m: {"name": m},
                       on_outcome=lambda m, o: seen.append(m), max_in_flight=10)

    assert fake.most_in_flight == 10
    assert fake.submitted == members and sorted(seen) == members
    assert fake.options[0] == {"num_cpus": 1, "name": members[0]}
    assert sorted(outcomes) == members
    assert all(isinstance(o, Persisted) for o in outcomes.values())


def test_what_fan_out_keeps_of_a_reference_is_its_ledger_entry_and_what_is_counted(
        fake: FakeRay) -> None:
    members = member_names(3)
    outcomes = fan_out(SPEC, members, _events(), Progress(3, enabled=False), {},
                       max_in_flight=2)

    kept = outcomes[members[1]]
    ref = _ref(members[1])
    assert isinstance(kept, Persisted)
    assert kept.member is members[1]  # the cohort's own string, not a copy
    assert (kept.key, kept.checksum, kept.bytes, kept.schema) == (
        ref.key, ref.checksum, ref.bytes, ref.schema)
    assert (kept.write_seconds, kept.node_id, kept.s3_retries, kept.attempt) == (
        ref.write_seconds, ref.node_id, ref.s3_retries, ref.attempt)
    assert not hasattr(kept, "__dict__")
    tally = Tally(outcomes.values())
    assert (tally.computed, tally.bytes, tally.nodes, tally.s3_retries) == (
        3, sum(_ref(m).bytes for m in members), {"node-a"}, 3)


def test_a_stall_fails_the_tasks_in_flight_and_the_members_never_submitted(
        fake: FakeRay) -> None:
    members = member_names(10)
    fake.hung = set(members[2:4])  # with 2 in flight, these hold the window once submitted
    events = _events()
    outcomes = fan_out(SPEC, members, events, Progress(10, enabled=False), {},
                       stall_timeout=0.0, max_in_flight=2)

    failed = {m: o for m, o in outcomes.items() if isinstance(o, PersistFailure)}
    assert sorted(failed) == members[2:]
    assert {o.error_class for o in failed.values()} == {"stalled"}
    assert sorted(fake.cancelled) == members[2:4]
    assert all("task cancelled" in failed[m].message for m in members[2:4])
    assert all("task never submitted" in failed[m].message for m in members[4:])
    assert fake.submitted == members[:4]
    assert len(events.named("s43_pred_persist_failed")) == 8


class OpenAfter:
    """A circuit that opens once ``n`` members made progress."""

    reason = "the store stopped answering"

    def __init__(self, n: int) -> None:
        self.n = n
        self.done = 0

    def progress(self) -> None:
        self.done += 1

    def failure(self, error_class: str) -> None:
        pass

    def tick(self) -> bool:
        return self.done >= self.n


def test_an_open_circuit_names_every_member_not_persisted_submitted_or_not(
        fake: FakeRay) -> None:
    members = member_names(20)
    fake.hung = {members[4]}
    events = _events()
    outcomes = fan_out(SPEC, members, events, Progress(20, enabled=False), {},
                       circuit=OpenAfter(4), max_in_flight=5)  # type: ignore[arg-type]

    (opened,) = events.named("s43_store_circuit_open")
    failed = {m: o for m, o in outcomes.items() if isinstance(o, PersistFailure)}
    assert opened["not_persisted"] == len(failed) == 16
    assert opened["members"] == sorted(failed) == members[4:]
    assert {o.error_class for o in failed.values()} == {CIRCUIT_OPEN}
    assert len(fake.submitted) < len(members)  # nothing more was scheduled
