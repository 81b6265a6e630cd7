"""Helpers shared by the tests (imported as ``helpers``; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s43_ray.keys import CONTROL_DIRS, RunLayout
from s43_ray.ledger import Attempt, Ledger, write_ledger
from s43_ray.stores.memory import MemoryStore
from s43_ray.stores.s3 import S3Store

TEST_BUCKET = "s43-test"
ACCESS_KEY = "S43TESTACCESSKEY0001"
SECRET_KEY = "s43-test-secret-9f8e7d6c5b4a"  # recognisable, so leak scans can look for it
# Ray in tests: two CPUs, a small object store (references only), no dashboard.
RAY_NUM_CPUS = 2
RAY_OBJECT_STORE_BYTES = 80 * 1024**2

# A credential that may read and list the test bucket but not write it: a verdict that cannot
# be persisted, refused by the real server.
READONLY_ACCESS_KEY = "S43TESTREADONLY00001"
READONLY_SECRET_KEY = "s43-test-readonly-1a2b3c4d5e"
TEST_IDENTITIES: dict[str, Any] = {"identities": [
    {"name": "s43-test-admin",
     "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
     "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
    {"name": "s43-test-readonly",
     "credentials": [{"accessKey": READONLY_ACCESS_KEY, "secretKey": READONLY_SECRET_KEY}],
     "actions": [f"Read:{TEST_BUCKET}", f"List:{TEST_BUCKET}"]},
]}


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        """The JSON summary: the last line of stdout."""
        return json.loads(self.stdout.strip().splitlines()[-1])

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]


def parse_events(stderr: str) -> list[dict[str, Any]]:
    events = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def run_subprocess(argv: Sequence[str], *, env: dict[str, str] | None = None,
                   cwd: Path | None = None, timeout: float = 240) -> CliResult:
    """Run the installed ``s43-ray`` entry point as a user would."""
    exe = Path(sys.executable).parent / "s43-ray"
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([str(exe), *argv], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)
    return CliResult(proc.returncode, proc.stdout, proc.stderr, parse_events(proc.stderr))


def keys_under(store: S3Store, prefix: str) -> list[str]:
    """Member objects, ``_run.json`` and ``_gate.json`` under ``prefix``; the history folders
    (``_attempts/``, ``_ledgers/``, ``_gates/``) are left out (see :func:`control_keys_under`)."""
    return [o.key for o in store.list(prefix)
            if not any(f"/{d}/" in o.key for d in CONTROL_DIRS)]


def control_keys_under(store: S3Store, prefix: str) -> list[str]:
    """The history folders' keys under ``prefix``: attempts, ledgers, kept verdicts."""
    return [o.key for o in store.list(prefix) if any(f"/{d}/" in o.key for d in CONTROL_DIRS)]


class WatchedStderr(io.StringIO):
    """stderr of an in-process run that signals the first member persisted, and the first
    member that gave up (tests freeze or kill the store at that moment)."""

    def __init__(self) -> None:
        super().__init__()
        self.first_persisted = threading.Event()
        self.first_failed = threading.Event()

    def write(self, s: str) -> int:
        if '"s43_pred_persisted"' in s:
            self.first_persisted.set()
        if '"s43_pred_persist_failed"' in s:
            self.first_failed.set()
        return super().write(s)


def write_claimed(store: MemoryStore, layout: RunLayout, ledger: Ledger) -> None:
    """What a driver does: claim the attempt (with the ledger's token), then write its ledger."""
    if layout.attempt_key(ledger.attempt) not in store.objects:
        store.put(layout.attempt_key(ledger.attempt),
                  Attempt(layout.run_id, ledger.attempt, "first", "", "test", ledger.token)
                  .to_json(), metadata={})
    write_ledger(store, layout, ledger)
