"""The store boundary: where predictions live, behind one protocol (:mod:`.base`).

:func:`open_store` is the one door from a config to a store, chosen by the URL's scheme:
``s3://`` (:mod:`.s3`), ``file://`` (:mod:`.file`). This package imports neither Ray nor the
metrics: what it records goes out through :mod:`.hooks`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..config import AnyStoreConfig, FileStoreConfig, StoreConfig
from ..errors import InputError
from .base import BatchDeletes, BucketAdmin, ObjectInfo, Store

__all__ = ["BatchDeletes", "BucketAdmin", "ObjectInfo", "Store", "open_bucket_admin",
           "open_store"]

SCHEMES = ("s3", "file")


def open_store(cfg: AnyStoreConfig) -> Store:
    """The store ``cfg`` names, by the scheme of its URL."""
    scheme = urlsplit(cfg.url).scheme
    if scheme == "s3" and isinstance(cfg, StoreConfig):
        from .s3 import S3Store

        return S3Store(cfg)
    if scheme == "file" and isinstance(cfg, FileStoreConfig):
        from .file import FileStore

        return FileStore(cfg)
    raise InputError(f"store {cfg.url!r} has no store for its scheme {scheme!r}; expected one "
                     f"of {[s + '://' for s in SCHEMES]}")


def open_bucket_admin(cfg: StoreConfig) -> BucketAdmin:
    """Bucket settings (lifecycle, encryption) of the S3 store ``cfg`` names."""
    from .s3_admin import S3BucketAdmin

    return S3BucketAdmin(cfg)
