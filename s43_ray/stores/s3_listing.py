"""ListObjectsV2, page by page: the one loop behind :meth:`S3Store.list` (every key under a
prefix) and :meth:`S3Store.list_dirs` (the folders under it, ``Delimiter='/'``).

Both go through the store's shared boto3 client (its retry policy and retry log), are timed as
``list`` requests by :mod:`.hooks`, and have botocore's exceptions translated by the store's
own ``fail`` (:func:`.s3.translate`, the table of :mod:`.s3_errors`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import SseKeyRequired, StoreError
from . import hooks

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# What a failed request becomes: the store's translation of botocore's exception.
Fail = Callable[[Exception], "StoreError | SseKeyRequired"]


def list_pages(client: S3Client, *, bucket: str, prefix: str, page_size: int, fail: Fail,
               delimiter: str | None = None) -> Iterator[dict[str, Any]]:
    """Each page of ``ListObjectsV2`` under ``prefix`` (at most ``page_size`` entries, keys
    and common prefixes together), following continuation tokens to the last page."""
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if token:
            kwargs["ContinuationToken"] = token
        with hooks.request("list"):
            try:
                page: dict[str, Any] = dict(client.list_objects_v2(**kwargs))
            except (ClientError, BotoCoreError) as exc:
                raise fail(exc) from exc
        yield page
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return


def common_prefixes(pages: Iterator[dict[str, Any]]) -> Iterator[str]:
    """The ``CommonPrefixes`` of every page, in the order the store sends them (key order)."""
    for page in pages:
        for common in page.get("CommonPrefixes") or []:
            name = common.get("Prefix")
            if name:
                yield str(name)
