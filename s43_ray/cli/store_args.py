"""What every ``s43-ray`` subcommand shares: the argument parser's rules and the store flags.

Usage errors are one line and exit 2; ``--store`` (and the embedded default), encryption and
the S3 client settings are read the same way by every command that touches the store.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from ..config import (
    ADDRESSING_STYLES,
    S3_CHECKSUMS,
    SSE_MODES,
    AnyStoreConfig,
    EnvDefaults,
    FileStoreConfig,
    Secret,
    StoreConfig,
    is_file_url,
    load_sse_c_key,
    parse_file_url,
    parse_store_url,
    validate_endpoint,
)
from ..errors import InputError
from ..stores.local_s3 import LocalS3

_INVALID_CHOICE = re.compile(r"argument ([^:]+): invalid choice: (.+) \(choose from (.+)\)")


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        choice = _INVALID_CHOICE.fullmatch(message)
        if choice:  # argparse's wording, made to name the value and what was expected
            flag, value, allowed = choice.groups()
            message = f"{flag} {value} is not valid; expected one of {allowed}"
        raise UsageError(message)


class UsageError(InputError):
    """A command line argparse refused."""


def int_in(name: str, lo: int, hi: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {text!r} is not an integer; "
                                             f"expected {lo}..{hi}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{name} {value} is out of range; expected {lo}..{hi}")
        return value
    return parse


def store_flags(p: argparse.ArgumentParser, env: EnvDefaults) -> None:
    g = p.add_argument_group("store")
    g.add_argument("--store", default=env.store, metavar="s3://BUCKET/PREFIX",
                   help="where predictions go (env S43_STORE): s3://BUCKET/PREFIX, or "
                        "file:///DIR on a volume every node mounts; default: the embedded "
                        "local server")
    p.set_defaults(env_endpoint_url=env.endpoint_url)
    g.add_argument("--endpoint-url", default=None, metavar="URL",
                   help="S3 endpoint, e.g. https://s3.fr-par.scw.cloud (env AWS_ENDPOINT_URL_S3)")
    g.add_argument("--region", default=env.region, help="S3 region (env AWS_REGION)")
    g.add_argument("--addressing-style", default=env.addressing_style, choices=ADDRESSING_STYLES,
                   help="S3 addressing (env S43_S3_ADDRESSING_STYLE; default path)")
    g.add_argument("--s3-checksum", default=env.s3_checksum, choices=S3_CHECKSUMS,
                   help="send CRC64NVME checksum headers (default) or none, for stores that "
                        "reject them (env S43_S3_CHECKSUM)")
    g.add_argument("--max-attempts", default=env.max_attempts, type=int_in("max attempts", 1, 20),
                   help="S3 attempts per request, first included (env S43_S3_MAX_ATTEMPTS)")
    g.add_argument("--sse", default=env.sse, metavar="|".join(SSE_MODES),
                   help="encryption at rest (env S43_SSE): none, sse-c (a customer key on every "
                        "request), bucket-default (the bucket's default encryption); default "
                        "sse-c when a key is given, else none")
    g.add_argument("--sse-c-key-file", metavar="PATH",
                   help="the SSE-C key: base64 of 32 bytes, or 32 raw bytes (or env "
                        "S43_SSE_C_KEY, base64); never printed")
    p.set_defaults(env_sse_c_key=env.sse_c_key)
    g.add_argument("--local-dir", default=env.local_dir, metavar="DIR",
                   help="data folder of the embedded server (env S43_LOCAL_S3_DIR; default "
                        "~/.cache/s43_ray/seaweedfs)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON summary as the last line of stdout")
    p.add_argument("--events", choices=("debug", "info", "warning", "error"), default=None,
                   help="lowest event severity written to stderr (default: info, or warning "
                        "when stderr is a terminal)")


@contextlib.contextmanager
def store_config(args: argparse.Namespace) -> Iterator[AnyStoreConfig]:
    """The configured store, or the embedded local server for the length of the command."""
    with store_and_server(args) as (cfg, _):
        yield cfg


@contextlib.contextmanager
def store_and_server(args: argparse.Namespace
                     ) -> Iterator[tuple[AnyStoreConfig, LocalS3 | None]]:
    """:func:`store_config`, and the embedded server when it is the one used."""
    endpoint = args.endpoint_url or args.env_endpoint_url
    if endpoint:
        validate_endpoint(endpoint)
    # Defaults from the environment bypass argparse's choices: check them here.
    for value, allowed, env in ((args.addressing_style, ADDRESSING_STYLES,
                                 "S43_S3_ADDRESSING_STYLE"),
                                (args.s3_checksum, S3_CHECKSUMS, "S43_S3_CHECKSUM")):
        if value not in allowed:
            raise InputError(f"{env}={value!r} is not valid; expected one of {list(allowed)}")
    sse, key = encryption(args)
    common: dict[str, Any] = {"addressing_style": args.addressing_style,
                              "s3_checksum": args.s3_checksum, "max_attempts": args.max_attempts,
                              "sse": sse, "sse_c_key": key}
    if args.store and is_file_url(args.store):
        if sse != "none":
            raise InputError(f"--sse {sse} does not apply to the file store {args.store!r}; "
                             "expected --sse none (encrypt the volume itself)")
        if args.endpoint_url:
            raise InputError(f"--endpoint-url {args.endpoint_url!r} does not apply to the file "
                             f"store {args.store!r}; expected no --endpoint-url")
        yield FileStoreConfig(root=parse_file_url(args.store)), None
        return
    if args.store:
        bucket, prefix = parse_store_url(args.store)
        yield StoreConfig(bucket=bucket, prefix=prefix, endpoint_url=endpoint,
                          region=args.region, **common), None
        return
    if args.endpoint_url:  # given on the command line (an endpoint from the env is ignored)
        raise InputError(f"--endpoint-url {args.endpoint_url!r} was given without --store; "
                         "expected --store s3://BUCKET/PREFIX too")
    with LocalS3(args.local_dir) as server:
        yield server.store_config(**common), server


def encryption(args: argparse.Namespace) -> tuple[str, Secret | None]:
    """The SSE mode and the customer key (checked, never shown) from flags and environment."""
    if args.sse is not None and args.sse not in SSE_MODES:
        raise InputError(f"--sse/S43_SSE {args.sse!r} is not valid; expected one of "
                         f"{list(SSE_MODES)}")
    key: Secret | None = None
    if args.sse_c_key_file:
        try:
            raw = Path(args.sse_c_key_file).read_bytes()
        except OSError as exc:
            raise InputError(f"--sse-c-key-file {args.sse_c_key_file!r} cannot be read "
                             f"({exc.strerror or exc}); expected a readable key file") from None
        key = load_sse_c_key(raw, f"--sse-c-key-file {args.sse_c_key_file!r}")
        if args.sse not in (None, "sse-c"):
            raise InputError(f"--sse-c-key-file was given with --sse {args.sse}; expected "
                             "--sse sse-c (or no --sse)")
    elif args.env_sse_c_key is not None and args.sse in (None, "sse-c"):
        key = load_sse_c_key(args.env_sse_c_key.value, "S43_SSE_C_KEY")
    sse = args.sse or ("sse-c" if key else "none")
    if sse == "sse-c" and key is None:
        raise InputError("--sse sse-c needs the customer key; expected S43_SSE_C_KEY (base64 of "
                         "32 bytes) or --sse-c-key-file PATH")
    return sse, key
