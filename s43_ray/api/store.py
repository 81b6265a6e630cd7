"""Stores as a library user holds them: :func:`open_store` (a URL), :func:`local_store` (the
embedded server), and :class:`Store`, which starts and opens runs.

A :class:`Store` is its configuration and nothing else: it pickles in a few hundred bytes, so
Ray ships it (and the :class:`~s43_ray.api.run.Run` objects that hold it) to tasks; each
process opens its own client on first use and reuses it (the clients are cached per config).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from ..circuit import Circuit, WatchedStore, watched
from ..codec import CODECS, DEFAULT_CODEC, ArraySpec, Codec
from ..config import (
    AnyStoreConfig,
    FileStoreConfig,
    Secret,
    StoreConfig,
    env_defaults,
    env_max_attempts,
    is_file_url,
    load_sse_c_key,
    parse_file_url,
    parse_store_url,
)
from ..errors import InputError, InvalidSetting
from ..keys import (
    DEFAULT_PREFIX,
    MAX_COHORT_SIZE,
    RunLayout,
    check_key_lengths,
    new_run_id,
    validate_member,
    validate_run_id,
)
from ..ledger import AttemptKind, claim_attempt, latest_ledger
from ..manifest import RunManifest, check_run, claim_run, read_manifest
from ..ops.runs import RunListing, list_runs
from ..predict import array_specs
from ..stores import open_store as open_client
from ..stores.base import Store as Client
from ..stores.local_s3 import LocalS3
from .run import LIBRARY_PREDICTOR, Run

__all__ = ["Store", "local_store", "open_store"]


class Store:
    """Where cohorts live: an S3 bucket and prefix (``s3://bucket/prefix``), or a folder every
    node mounts (``file:///shared``). Build it with :func:`open_store` or :func:`local_store`.

    >>> store = open_store("s3://my-bucket/s43-predictions")       # doctest: +SKIP
    >>> run = store.start_run("exp-42", members=["m0", "m1"])       # doctest: +SKIP
    """

    def __init__(self, config: AnyStoreConfig, *,
                 ready: Callable[[], None] | None = None) -> None:
        """``ready``: for a server still starting (the embedded one), what waits until it
        answers; called once, before this process first uses the store."""
        if not isinstance(config, (StoreConfig, FileStoreConfig)):
            raise InputError(f"Store({config!r}): expected a StoreConfig or FileStoreConfig "
                             "(or use s43_ray.open_store(url))")
        self._config = config
        self._ready = ready

    # -- what it is ----------------------------------------------------------------------------
    @property
    def config(self) -> AnyStoreConfig:
        """The frozen, picklable settings (credentials only for the embedded server, hidden)."""
        return self._config

    @property
    def url(self) -> str:
        """``s3://bucket/prefix`` or ``file:///dir``."""
        return self._config.url

    @property
    def prefix(self) -> str:
        """The key prefix every run lives under (``s43-predictions`` by default)."""
        return self._config.prefix

    @property
    def endpoint(self) -> str:
        """The S3 endpoint as messages name it (``AWS S3`` for AWS's own)."""
        return self._config.display_endpoint

    def __repr__(self) -> str:
        where = "" if isinstance(self._config, FileStoreConfig) else f", endpoint={self.endpoint!r}"
        return f"Store({self.url!r}{where})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Store) and other._config == self._config

    def __hash__(self) -> int:
        return hash(self._config)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Store, (self._config,))

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: clients are per process and cached per config. Kept so a store
        can be used in ``with`` like other resources (the embedded one: :func:`local_store`)."""

    @property
    def starting(self) -> bool:
        """Whether the server is still starting (see :meth:`wait_ready`)."""
        return self._ready is not None

    def wait_ready(self) -> None:
        """Wait until a server still starting answers (a no-op for any other store)."""
        if self._ready is not None:
            self._ready()
            self._ready = None

    def client(self) -> Client:
        """This process's client for the store (the low-level protocol of
        :mod:`s43_ray.stores.base`)."""
        self.wait_ready()
        return open_client(self._config)

    def check(self) -> None:
        """Raise :class:`~s43_ray.errors.StoreError` (``StoreUnreachable``, ``NoSuchBucket``,
        ``AccessDenied``) unless the store answers; a store that hangs fails within the
        circuit's window (about a minute and a half)."""
        client = self.client()
        breaker = Circuit.for_store(client)
        watched(breaker, WatchedStore(client, breaker).check, what=f"checking {self.url}")

    def layout(self, run_id: str) -> RunLayout:
        """The keys of run ``run_id`` in this store."""
        return RunLayout(self.prefix, run_id)

    # -- runs ------------------------------------------------------------------------------
    def start_run(self, run_id: str | None = None, *, members: Sequence[str],
                  codec: Codec = DEFAULT_CODEC,
                  schema: Mapping[str, tuple[Any, Sequence[int]]] | None = None) -> Run:
        """Claim run ``run_id`` (default: a fresh sortable id) for the cohort ``members`` and
        start an attempt of it; the returned :class:`Run` persists members from any Ray task.

        The claim is atomic (``If-None-Match: *``): of two drivers starting one run id, one
        creates its record; the other joins it as a new attempt when it asks for the same
        cohort, and is refused (:class:`~s43_ray.errors.InputError`, naming the holder)
        otherwise. ``schema`` (``{name: (dtype, shape)}``), when given, is recorded: a member
        with other arrays is refused on persist and at the gate."""
        run_id = validate_run_id(run_id) if run_id is not None else new_run_id()
        cohort = check_cohort(run_id, members)
        if codec not in CODECS:
            raise InputError(f"codec {codec!r} is not valid; expected one of {list(CODECS)}")
        check_key_lengths(self.prefix, run_id, cohort, codec)
        declared = _schema(schema)
        wanted = RunManifest.new(run_id, cohort, codec, 0, LIBRARY_PREDICTOR, declared)
        client = self.client()
        breaker = Circuit.for_store(client)
        wstore = WatchedStore(client, breaker)
        layout = self.layout(run_id)
        watched(breaker, wstore.check, what=f"checking {self.url}")
        watched(breaker, lambda: check_run(wstore, layout, wanted),
                what=f"reading {layout.manifest_key}")
        claim = watched(breaker, lambda: claim_run(wstore, layout, wanted),
                        what=f"claiming {layout.manifest_key}")
        kind: AttemptKind = "first" if claim.created else "rerun"
        attempt = watched(breaker, lambda: claim_attempt(wstore, layout, kind),
                          what=f"claiming an attempt of run {run_id!r}")
        return Run(self, run_id, claim.record.members, claim.record.codec,
                   schema_digest=claim.record.schema_digest, attempt=attempt.number,
                   token=attempt.token, created_at=claim.record.created_at)

    def open_run(self, run_id: str, *, members: Sequence[str] | None = None) -> Run:
        """An existing run, from its record (or, if the record was lost, its latest ledger):
        to gate it again, load members, or read the verified cohort. ``members`` names the
        cohort of a run that has neither (it must agree with them otherwise). A run opened
        here persists nothing: :meth:`start_run` starts an attempt."""
        run_id = validate_run_id(run_id)
        client = self.client()
        breaker = Circuit.for_store(client)
        wstore = WatchedStore(client, breaker)
        layout = self.layout(run_id)
        record = watched(breaker, lambda: read_manifest(wstore, layout),
                         what=f"reading {layout.manifest_key}")
        if record is not None:
            _agree(run_id, self.url, record.members, members)
            return Run(self, run_id, record.members, record.codec,
                       schema_digest=record.schema_digest, created_at=record.created_at)
        ledger = watched(breaker, lambda: latest_ledger(wstore, layout),
                         what=f"reading {layout.run_prefix}_ledgers/")
        if ledger is not None:
            _agree(run_id, self.url, ledger.members, members)
            return Run(self, run_id, tuple(ledger.members), ledger.codec)
        if members is None:
            raise InputError(f"run {run_id!r} has no record in {self.url}; expected the id of "
                             "a run started earlier, or members=[...] naming its cohort")
        cohort = check_cohort(run_id, members)
        return Run(self, run_id, cohort, DEFAULT_CODEC)

    def runs(self, *, limit: int | None = None) -> list[RunListing]:
        """The runs under this store's prefix, newest first, each with its latest verdict as
        recomputed from its checks (a verdict that claims more than its checks prove is shown
        as not passed)."""
        return list_runs(self.client(), self.prefix, limit=limit)


def check_cohort(run_id: str, members: Sequence[str] | str) -> tuple[str, ...]:
    """``members`` as a run's cohort: a sequence of 1..MAX_COHORT_SIZE unique valid names, or
    :class:`InputError` naming what is wrong."""
    if isinstance(members, str) or not isinstance(members, Sequence):
        raise InputError(f"run {run_id!r}: members {members!r} is not valid; expected a list "
                         "of member names")
    cohort = tuple(validate_member(str(m)) for m in members)
    if not 1 <= len(cohort) <= MAX_COHORT_SIZE:
        raise InputError(f"run {run_id!r}: {len(cohort)} members; expected 1..{MAX_COHORT_SIZE}")
    if len(set(cohort)) != len(cohort):
        twice = sorted(m for m, n in Counter(cohort).items() if n > 1)
        raise InputError(f"run {run_id!r}: members {twice[:5]} are named twice; expected "
                         "unique names")
    return cohort


def _agree(run_id: str, url: str, recorded: Sequence[str], given: Sequence[str] | None) -> None:
    if given is not None and sorted(given) != sorted(recorded):
        raise InputError(f"run {run_id!r} in {url} records {len(recorded)} members; members= "
                         f"names {len(given)} others; expected the run's own, or no members=")


def _schema(schema: Mapping[str, tuple[Any, Sequence[int]]] | None
            ) -> dict[str, ArraySpec] | None:
    if schema is None:
        return None
    try:
        return array_specs(schema)
    except Exception as exc:  # a user's declaration may be wrong in any way
        raise InputError(f"schema {schema!r} is not valid ({type(exc).__name__}: {exc}); "
                         "expected {name: (dtype, shape)}") from exc


def open_store(url: str, *, endpoint_url: str | None = None, sse: str | None = None,
               sse_c_key: str | None = None, region: str | None = None,
               addressing_style: str | None = None, s3_checksum: str | None = None,
               max_attempts: int | None = None) -> Store:
    """The store at ``url``: ``s3://bucket/prefix`` (default prefix ``s43-predictions``) or
    ``file:///dir`` (a folder every node mounts).

    Settings not given come from the environment as for the CLI (``AWS_ENDPOINT_URL_S3``,
    ``AWS_REGION``, ``S43_SSE``, ``S43_SSE_C_KEY``...), else the defaults; credentials come
    from the standard AWS chain in every process. ``sse``: ``none``, ``sse-c`` (with
    ``sse_c_key``, base64 of 32 bytes) or ``bucket-default``. Nothing is contacted here:
    :meth:`Store.check` does. A bad value raises :class:`~s43_ray.errors.InputError` naming
    it."""
    if not isinstance(url, str):
        raise InputError(f"store url {url!r} is not valid; expected s3://BUCKET/PREFIX or "
                         "file:///DIR")
    env = env_defaults()
    if is_file_url(url):
        given = {"endpoint_url": endpoint_url, "sse": sse, "sse_c_key": sse_c_key,
                 "region": region, "addressing_style": addressing_style,
                 "s3_checksum": s3_checksum, "max_attempts": max_attempts}
        extra = sorted(k for k, v in given.items() if v is not None and v != "none")
        if extra:
            raise InputError(f"{', '.join(extra)} do not apply to the file store {url!r}; "
                             "expected none of them (encrypt the volume itself)")
        return Store(FileStoreConfig(root=parse_file_url(url)))
    bucket, prefix = parse_store_url(url)
    key_text = sse_c_key if sse_c_key is not None else (
        env.sse_c_key.value if env.sse_c_key is not None else None)
    mode = sse or env.sse or ("sse-c" if key_text else "none")
    key = load_sse_c_key(key_text, "sse_c_key") if key_text and mode == "sse-c" else None
    try:
        return Store(_s3_config(bucket, prefix, endpoint_url or env.endpoint_url,
                                region or env.region, addressing_style or env.addressing_style,
                                s3_checksum or env.s3_checksum, env.put_client,
                                max_attempts if max_attempts is not None
                                else env_max_attempts(env.max_attempts)
                                or StoreConfig.max_attempts, mode, key))
    except InvalidSetting as exc:  # named as the caller passed it
        raise InputError(f"{exc.field}={exc.value!r} is not valid; expected {exc.expected}"
                         ) from None


def _s3_config(bucket: str, prefix: str, endpoint_url: str | None, region: str | None,
               addressing_style: str | None, s3_checksum: str | None, put_client: str | None,
               max_attempts: int, sse: str, sse_c_key: Secret | None) -> StoreConfig:
    return StoreConfig(
        bucket=bucket, prefix=prefix, endpoint_url=endpoint_url, region=region,
        addressing_style=addressing_style or "path",  # type: ignore[arg-type]
        s3_checksum=s3_checksum or "crc64nvme",  # type: ignore[arg-type]
        put_client=put_client or "auto",  # type: ignore[arg-type]
        max_attempts=max_attempts, sse=sse, sse_c_key=sse_c_key)  # type: ignore[arg-type]


@contextlib.contextmanager
def local_store(data_dir: str | Path | None = None, *, prefix: str = DEFAULT_PREFIX
                ) -> Iterator[Store]:
    """The embedded S3 server (SeaweedFS on 127.0.0.1, started here, stopped on exit) as a
    :class:`Store`: what the CLI uses when given no ``--store``. For one machine: a local Ray
    cluster's workers reach it; a remote cluster's do not."""
    with LocalS3(data_dir, wait=False) as server:  # it comes up while the caller goes on
        yield Store(server.store_config(prefix), ready=server.ready)
