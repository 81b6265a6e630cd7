"""Run ids, member names and the key layout ``<prefix>/<run_id>/<member>.<npz|arrow>``.

Keys are deterministic per (run, member): a retried task overwrites its own key, and a run
can be re-checked or resumed from the store alone.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from .errors import InputError, InvalidMember, InvalidRunId

# S3 allows 1024-byte keys; 200 leaves room for the prefix and member while staying readable.
MAX_RUN_ID_LEN = 200
# Airflow run ids (``manual__2026-11-28T10:00:00+00:00``) use letters, digits and ``_.:+-``;
# ``@=,~`` are kept for other schedulers. No ``/`` (it would nest prefixes), no ``\``, no spaces,
# nothing outside printable ASCII (S3 user metadata is ASCII-only).
_RUN_ID_CHARS = re.compile(r"[A-Za-z0-9_.:+\-@=,~]+")
# Member names become file names inside the run prefix; the leading ``_`` is reserved for
# control objects (``_gate.json``, ``_run.json``).
MAX_MEMBER_LEN = 128
_MEMBER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
# Zero-padded width of generated member names: m00000..m99999 stay the same names whatever
# the cohort size, and sort in member order.
MEMBER_DIGITS = 5
# Largest cohort the CLI accepts; the gate is exercised at 10,000 and the width above holds 100,000.
MAX_COHORT_SIZE = 100_000

DEFAULT_PREFIX = "s43-predictions"
GATE_OBJECT = "_gate.json"  # the latest verdict (the contract key operators read)
MANIFEST_OBJECT = "_run.json"  # the run's record, created once (If-None-Match: *)
# Control folders under a run: one object per attempt, per attempt's ledger, and per verdict.
ATTEMPTS_DIR = "_attempts"
LEDGERS_DIR = "_ledgers"
GATES_DIR = "_gates"
CONTROL_DIRS = (ATTEMPTS_DIR, LEDGERS_DIR, GATES_DIR)
EXTENSIONS = {"npz": ".npz", "arrow": ".arrow"}
# S3 refuses keys longer than 1,024 bytes (UTF-8); checked before anything starts.
MAX_KEY_BYTES = 1024
# Width of attempt numbers in control keys: 000001 sorts before 000010.
ATTEMPT_DIGITS = 6
# The longest verdict-history name: <20-char UTC stamp>-a<attempt>-<8 hex>.json
_LONGEST_CONTROL_NAME = f"{GATES_DIR}/{'0' * 20}-a{'0' * ATTEMPT_DIGITS}-{'0' * 8}.json"


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` unchanged, or raise :class:`InvalidRunId` saying what is wrong."""
    if not run_id:
        raise InvalidRunId("run id '' is empty; expected 1-200 characters such as "
                           "'manual__2026-11-28T10:00:00+00:00'")
    shown = run_id if len(run_id) <= 60 else run_id[:57] + "..."
    if len(run_id) > MAX_RUN_ID_LEN:
        raise InvalidRunId(f"run id {shown!r} is {len(run_id)} characters long; "
                           f"expected at most {MAX_RUN_ID_LEN}")
    if ".." in run_id or run_id in {"."}:
        raise InvalidRunId(f"run id {shown!r} contains '..' or is '.'; "
                           "expected a plain name, not a path")
    bad = sorted({c for c in run_id if not _RUN_ID_CHARS.fullmatch(c)})
    if bad:
        raise InvalidRunId(f"run id {shown!r} contains forbidden character(s) "
                           f"{', '.join(repr(c) for c in bad)}; "
                           "expected letters, digits and _.:+-@=,~")
    return run_id


def new_run_id(now: datetime | None = None) -> str:
    """A fresh, sortable, unique run id: ``s43__2026-11-30T07:15:54.123456+00:00__1a2b3c4d``."""
    stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"s43__{stamp.isoformat(timespec='microseconds')}__{secrets.token_hex(4)}"


def validate_member(member: str) -> str:
    """Return ``member`` unchanged, or raise :class:`InvalidMember`."""
    if not member or len(member) > MAX_MEMBER_LEN or not _MEMBER_RE.fullmatch(member):
        raise InvalidMember(f"member {member!r} is not a valid name; expected 1-{MAX_MEMBER_LEN} "
                            "letters, digits and _.- starting with a letter or digit")
    return member


def member_names(cohort_size: int) -> list[str]:
    """The stable names of a cohort of ``cohort_size`` members: m00000, m00001, ..."""
    width = max(MEMBER_DIGITS, len(str(cohort_size - 1)))
    return [f"m{i:0{width}d}" for i in range(cohort_size)]


def parse_members(text: str) -> list[str]:
    """Parse ``a,b,c``: validated, no duplicates, order kept."""
    members = [m.strip() for m in text.split(",")]
    for m in members:
        validate_member(m)
    dupes = sorted({m for m in members if members.count(m) > 1})
    if dupes:
        raise InvalidMember(f"members {text!r} name {dupes} more than once; expected unique names")
    return members


@dataclass(frozen=True)
class RunLayout:
    """Where a run's objects live: ``<prefix>/<run_id>/``."""

    prefix: str  # without leading or trailing '/'; may be '' (bucket root)
    run_id: str

    def __post_init__(self) -> None:
        validate_run_id(self.run_id)

    @property
    def run_prefix(self) -> str:
        """The listing prefix of the run, ending in '/'."""
        return f"{self.prefix}/{self.run_id}/" if self.prefix else f"{self.run_id}/"

    def member_key(self, member: str, codec: str) -> str:
        return f"{self.run_prefix}{validate_member(member)}{EXTENSIONS[codec]}"

    @property
    def gate_key(self) -> str:
        return f"{self.run_prefix}{GATE_OBJECT}"

    @property
    def manifest_key(self) -> str:
        return f"{self.run_prefix}{MANIFEST_OBJECT}"

    def classify(self, key: str) -> tuple[str, str] | None:
        """``(member, codec)`` for a member object key of this run, else None."""
        if not key.startswith(self.run_prefix):
            return None
        name = key[len(self.run_prefix):]
        for codec, ext in EXTENSIONS.items():
            if name.endswith(ext):
                member = name[: -len(ext)]
                if "/" not in member and _MEMBER_RE.fullmatch(member):
                    return member, codec
        return None

    def attempt_key(self, attempt: int) -> str:
        return f"{self.run_prefix}{ATTEMPTS_DIR}/{attempt:0{ATTEMPT_DIGITS}d}.json"

    def ledger_key(self, attempt: int) -> str:
        return f"{self.run_prefix}{LEDGERS_DIR}/{attempt:0{ATTEMPT_DIGITS}d}.json"

    def control_dir(self, name: str) -> str:
        """The listing prefix of one control folder (``_attempts/``, ``_ledgers/``, ``_gates/``)."""
        return f"{self.run_prefix}{name}/"

    def verdict_history_key(self, stamp: str, attempt: int, token: str) -> str:
        """Where one gate's verdict is kept for good: ``_gates/<stamp>-a<attempt>-<token>.json``."""
        return f"{self.run_prefix}{GATES_DIR}/{stamp}-a{attempt:0{ATTEMPT_DIGITS}d}-{token}.json"

    def is_control(self, key: str) -> bool:
        if key in (self.gate_key, self.manifest_key):
            return True
        if not key.startswith(self.run_prefix):
            return False
        folder, _, name = key[len(self.run_prefix):].partition("/")
        return folder in CONTROL_DIRS and name.endswith(".json") and "/" not in name


def check_key_lengths(prefix: str, run_id: str, members: Sequence[str], codec: str) -> None:
    """Refuse a run whose longest key would exceed S3's 1,024 bytes, before anything starts."""
    layout = RunLayout(prefix, run_id)
    longest_member = max(members, key=lambda m: len(m.encode()), default="")
    longest = max(len(layout.member_key(longest_member, codec).encode()) if members else 0,
                  len(f"{layout.run_prefix}{_LONGEST_CONTROL_NAME}".encode()))
    if longest > MAX_KEY_BYTES:
        raise InputError(f"run {run_id!r} under prefix {prefix!r}: its longest key would be "
                         f"{longest} bytes; expected at most {MAX_KEY_BYTES} (S3's limit): "
                         "use a shorter prefix, run id or member names")
