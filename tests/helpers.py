"""Helpers shared by the tests (imported as ``helpers``; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s43_ray.store import S3Store


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
    return [o.key for o in store.list(prefix)]
