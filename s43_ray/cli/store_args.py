"""The store flags every ``s43-ray`` subcommand takes, and their one road to a config:
flags, else the environment (:class:`~s43_ray.config.EnvDefaults`), else the defaults of
:class:`~s43_ray.config.StoreConfig`, which checks every value itself. A bad value exits 2
naming where it came from: ``--addressing-style 'x'`` or ``S43_S3_ADDRESSING_STYLE='x'``.

``--store`` is parsed once, into a :class:`StoreTarget`, before anything starts; with neither
``--store`` nor ``S43_STORE`` the embedded local server is started for the length of the
command.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

from ..config import (
    ADDRESSING_STYLES,
    ENV_ADDRESSING,
    ENV_ENDPOINT,
    ENV_LOCAL_DIR,
    ENV_MAX_ATTEMPTS,
    ENV_PUT_CLIENT,
    ENV_REGION,
    ENV_S3_CHECKSUM,
    ENV_SSE,
    ENV_SSE_C_KEY,
    ENV_STORE,
    MAX_ATTEMPTS_RANGE,
    S3_CHECKSUMS,
    SSE_MODES,
    AnyStoreConfig,
    EnvDefaults,
    FileStoreConfig,
    PutClient,
    Secret,
    SseMode,
    StoreConfig,
    env_max_attempts,
    is_file_url,
    load_sse_c_key,
    parse_file_url,
    parse_store_url,
    validate_endpoint,
)
from ..errors import InputError, InvalidSetting
from ..keys import DEFAULT_PREFIX
from ..stores.local_s3 import LocalS3, default_data_dir

T = TypeVar("T")
_DEFAULTS = StoreConfig(bucket="defaults")  # StoreConfig's own defaults, read, never used


def store_flags(p: argparse.ArgumentParser) -> None:
    """``--store`` and the S3 client settings; ``--json`` and ``--events``. Flags default to
    None: :func:`store_target` and :func:`open_config` fill them from the environment."""
    g = p.add_argument_group("store")
    g.add_argument("--store", metavar="s3://BUCKET/PREFIX",
                   help=f"where predictions go (env {ENV_STORE}): s3://BUCKET/PREFIX, or "
                        "file:///DIR on a volume every node mounts; default: the embedded "
                        "local server")
    g.add_argument("--endpoint-url", metavar="URL",
                   help=f"S3 endpoint, e.g. https://s3.fr-par.scw.cloud (env {ENV_ENDPOINT})")
    g.add_argument("--region", help=f"S3 region (env {ENV_REGION})")
    g.add_argument("--addressing-style", choices=ADDRESSING_STYLES,
                   help=f"S3 addressing (env {ENV_ADDRESSING}; default "
                        f"{_DEFAULTS.addressing_style})")
    g.add_argument("--s3-checksum", choices=S3_CHECKSUMS,
                   help="send CRC64NVME checksum headers (default) or none, for stores that "
                        f"reject them (env {ENV_S3_CHECKSUM})")
    lo, hi = MAX_ATTEMPTS_RANGE
    g.add_argument("--max-attempts", type=int, metavar="N",
                   help=f"S3 attempts per request, first included, {lo}..{hi} (env "
                        f"{ENV_MAX_ATTEMPTS}; default {_DEFAULTS.max_attempts})")
    g.add_argument("--sse", choices=SSE_MODES,
                   help=f"encryption at rest (env {ENV_SSE}): none, sse-c (a customer key on "
                        "every request), bucket-default (the bucket's default encryption); "
                        "default sse-c when a key is given, else none")
    g.add_argument("--sse-c-key-file", metavar="PATH",
                   help="the SSE-C key: base64 of 32 bytes, or 32 raw bytes (or env "
                        f"{ENV_SSE_C_KEY}, base64); never printed")
    g.add_argument("--local-dir", metavar="DIR",
                   help=f"data folder of the embedded server (env {ENV_LOCAL_DIR}; default "
                        f"{default_data_dir()})")
    p.add_argument("--json", action="store_true",
                   help="print one JSON summary as the last line of stdout")
    p.add_argument("--events", choices=("debug", "info", "warning", "error"), default=None,
                   help="lowest event severity written to stderr (default: info, or warning "
                        "when stderr is a terminal)")


@dataclass(frozen=True)
class StoreTarget:
    """What ``--store`` (or ``S43_STORE``) names, parsed once: an S3 bucket and prefix, a
    shared folder, or nothing (the embedded server)."""

    url: str | None
    bucket: str | None = None
    prefix: str = DEFAULT_PREFIX
    root: str | None = None  # a file store's directory

    @property
    def embedded(self) -> bool:
        return self.url is None


def store_target(args: argparse.Namespace, env: EnvDefaults, *,
                 bucket: str | None = None) -> StoreTarget:
    """Parse the store URL; ``bucket`` (``--bucket B``) stands for ``s3://B/<default prefix>``
    and must agree with ``--store`` when both are given."""
    url = args.store or env.store
    if bucket is not None:
        if url is not None and not is_file_url(url) and parse_store_url(url)[0] != bucket:
            raise InputError(f"--bucket {bucket!r} differs from --store {url!r}; expected "
                             "one of them, or the same bucket")
        url = url or f"s3://{bucket}/{DEFAULT_PREFIX}"
    if url is None:
        return StoreTarget(None)
    if is_file_url(url):
        return StoreTarget(url, root=parse_file_url(url))
    bucket_name, prefix = parse_store_url(url)
    return StoreTarget(url, bucket=bucket_name, prefix=prefix)


@contextlib.contextmanager
def open_config(target: StoreTarget, args: argparse.Namespace, env: EnvDefaults, *,
                wait: bool = True) -> Iterator[tuple[AnyStoreConfig, LocalS3 | None]]:
    """The config ``target`` names with every setting resolved, and the embedded server for
    the length of the block when it is the one used (``wait=False``: started, not yet
    answering; its user calls ``server.ready()`` first)."""
    sources: dict[str, str] = {}

    def pick(field: str, flag: str, value: T | None, env_name: str,
             env_value: Callable[[], T | None], default: T) -> T:
        if value is not None:
            sources[field] = flag
            return value
        from_env = env_value()  # read only when the flag is absent: the flag wins
        if from_env is not None:
            sources[field] = f"env:{env_name}"
            return from_env
        return default

    addressing = pick("addressing_style", "--addressing-style", args.addressing_style,
                      ENV_ADDRESSING, lambda: env.addressing_style, _DEFAULTS.addressing_style)
    checksum = pick("s3_checksum", "--s3-checksum", args.s3_checksum, ENV_S3_CHECKSUM,
                    lambda: env.s3_checksum, _DEFAULTS.s3_checksum)
    put_client: str = pick("put_client", "", None, ENV_PUT_CLIENT, lambda: env.put_client,
                           str(_DEFAULTS.put_client))  # checked by StoreConfig, like the rest
    attempts = pick("max_attempts", "--max-attempts", args.max_attempts, ENV_MAX_ATTEMPTS,
                    lambda: env_max_attempts(env.max_attempts), _DEFAULTS.max_attempts)
    sse, key = _encryption(args, env, sources)

    def settle(cfg: StoreConfig) -> StoreConfig:
        return _named(sources, lambda: dataclasses.replace(
            cfg, addressing_style=addressing, s3_checksum=checksum,
            put_client=cast(PutClient, put_client),  # StoreConfig refuses any other value
            max_attempts=attempts, sse=sse, sse_c_key=key))

    # Every setting is checked before anything starts, whichever store is named (a bad
    # variable is refused with a file store too, as it would be on the next S3 run).
    settle(_DEFAULTS)
    endpoint = args.endpoint_url or env.endpoint_url
    if endpoint:
        validate_endpoint(endpoint)
    if target.root is not None:
        if sse != "none":
            raise InputError(f"--sse {sse} does not apply to the file store {target.url!r}; "
                             "expected --sse none (encrypt the volume itself)")
        if args.endpoint_url:
            raise InputError(f"--endpoint-url {args.endpoint_url!r} does not apply to the file "
                             f"store {target.url!r}; expected no --endpoint-url")
        yield FileStoreConfig(root=target.root), None
        return
    if target.bucket is not None:
        region = args.region or env.region
        yield settle(_named(sources, lambda: StoreConfig(
            bucket=target.bucket or "", prefix=target.prefix, endpoint_url=endpoint,
            region=region))), None
        return
    if args.endpoint_url:  # given on the command line (an endpoint from the env is ignored)
        raise InputError(f"--endpoint-url {args.endpoint_url!r} was given without --store; "
                         "expected --store s3://BUCKET/PREFIX too")
    with LocalS3(args.local_dir or env.local_dir, wait=wait) as server:
        yield settle(server.store_config()), server


def _named(sources: dict[str, str], build: Callable[[], T]) -> T:
    """``build()``, with a refused setting named as the user gave it."""
    try:
        return build()
    except InvalidSetting as exc:
        source = sources.get(exc.field, "")
        if source.startswith("env:"):
            raise InputError(f"{source[4:]}={exc.value!r} is not valid; expected "
                             f"{exc.expected}") from None
        if source:
            raise InputError(f"{source} {exc.value!r} is not valid; expected "
                             f"{exc.expected}") from None
        raise


def _encryption(args: argparse.Namespace, env: EnvDefaults, sources: dict[str, str]
                ) -> tuple[SseMode, Secret | None]:
    """The SSE mode and the customer key (checked, never shown) from flags and environment."""
    mode = args.sse or env.sse  # checked by StoreConfig, which names its source
    sources["sse"] = "--sse" if args.sse else f"env:{ENV_SSE}"
    key: Secret | None = None
    if args.sse_c_key_file:
        try:
            raw = Path(args.sse_c_key_file).read_bytes()
        except OSError as exc:
            raise InputError(f"--sse-c-key-file {args.sse_c_key_file!r} cannot be read "
                             f"({exc.strerror or exc}); expected a readable key file") from None
        key = load_sse_c_key(raw, f"--sse-c-key-file {args.sse_c_key_file!r}")
        if mode not in (None, "sse-c"):
            raise InputError(f"--sse-c-key-file was given with --sse {mode}; expected "
                             "--sse sse-c (or no --sse)")
    elif env.sse_c_key is not None and mode in (None, "sse-c"):
        key = load_sse_c_key(env.sse_c_key.value, ENV_SSE_C_KEY)
    sse = mode or ("sse-c" if key else "none")
    if sse == "sse-c" and key is None:
        raise InputError(f"--sse sse-c needs the customer key; expected {ENV_SSE_C_KEY} "
                         "(base64 of 32 bytes) or --sse-c-key-file PATH")
    return cast(SseMode, sse), key  # StoreConfig checks it, naming the source
