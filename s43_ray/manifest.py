"""What a run was started with, stored next to its data as ``<prefix>/<run_id>/_run.json``.

It lets ``gate`` re-check a run from the store alone (the member list and format come from
here), and refuses to mix two different cohorts under one run id.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from . import __version__
from .codec import CODECS, Codec
from .errors import CodecMismatch, InputError, ObjectNotFound, S43Error
from .events import rfc3339_now
from .keys import RunLayout, validate_member
from .store import Store

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class RunManifest:
    run_id: str
    members: tuple[str, ...]
    codec: Codec
    rows: int
    predictor: str
    created_at: str = ""
    s43_version: str = __version__
    manifest_version: int = MANIFEST_VERSION

    @classmethod
    def new(cls, run_id: str, members: tuple[str, ...], codec: Codec, rows: int,
            predictor: str) -> RunManifest:
        return cls(run_id, tuple(members), codec, rows, predictor, created_at=rfc3339_now())

    def differences(self, other: RunManifest) -> list[str]:
        """What differs in the cohort definition (members, format, rows, predictor)."""
        out = []
        if self.members != other.members:
            gone = sorted(set(self.members) - set(other.members))
            new = sorted(set(other.members) - set(self.members))
            out.append(f"members ({len(self.members)} -> {len(other.members)}; "
                       f"dropped {gone[:5]}, added {new[:5]})")
        for name in ("codec", "rows", "predictor"):
            if getattr(self, name) != getattr(other, name):
                out.append(f"{name} ({getattr(self, name)!r} -> {getattr(other, name)!r})")
        return out

    def to_json(self) -> bytes:
        record: dict[str, Any] = asdict(self)
        record["members"] = list(self.members)
        return json.dumps(record, indent=1).encode()

    @classmethod
    def from_json(cls, body: bytes | memoryview) -> RunManifest:
        try:
            data = json.loads(bytes(body))
            codec = data["codec"]
            if codec not in CODECS:
                raise ValueError(f"codec {codec!r}")
            members = tuple(validate_member(str(m)) for m in data["members"])
            if len(set(members)) != len(members):
                raise ValueError("duplicate member names")
            return cls(run_id=str(data["run_id"]), members=members, codec=codec,
                       rows=int(data["rows"]), predictor=str(data["predictor"]),
                       created_at=str(data.get("created_at", "")),
                       s43_version=str(data.get("s43_version", "")),
                       manifest_version=int(data.get("manifest_version", 0)))
        except (ValueError, KeyError, TypeError, S43Error) as exc:
            raise CodecMismatch(f"run manifest is not valid: {exc}") from exc


def read_manifest(store: Store, layout: RunLayout) -> RunManifest | None:
    try:
        body, _ = store.get(layout.manifest_key)
    except ObjectNotFound:
        return None
    return RunManifest.from_json(body)


def write_manifest(store: Store, layout: RunLayout, manifest: RunManifest) -> None:
    store.put(layout.manifest_key, manifest.to_json(), metadata={"s43-kind": "manifest"},
              content_type="application/json")


def claim_run(store: Store, layout: RunLayout, manifest: RunManifest, *,
              write: bool = True) -> RunManifest:
    """Record the manifest, or check a re-triggered run asks for the same cohort.
    Returns the stored manifest, or ``manifest`` itself when the run is new. With
    ``write=False`` only the check is made (to refuse bad input before any work)."""
    existing = read_manifest(store, layout)
    if existing is None:
        if write:
            write_manifest(store, layout, manifest)
        return manifest
    diff = existing.differences(manifest)
    if diff:
        raise InputError(f"run {layout.run_id!r} already exists in {store.url} with a different "
                         f"cohort: {'; '.join(diff)}; expected the same cohort or a new --run-id")
    return existing
