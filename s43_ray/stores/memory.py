"""A dict-backed :class:`~s43_ray.stores.base.Store` for pure unit tests; not for production."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator, Mapping

from ..errors import ObjectNotFound
from .base import IF_NONE_MATCH, ObjectInfo, precondition_failed, put_condition

_MemoryEntry = tuple[bytes, dict[str, str], float]


class MemoryStore:
    """A dict-backed :class:`Store` for pure unit tests; not for production.

    ``objects`` maps a key to (body, metadata, time written); tests may replace entries
    directly. Each write gets a new ETag (``"<md5>-<write number>"``), an entry replaced
    directly included, so ``if_match`` sees every change, even to identical bytes."""

    def __init__(self, bucket: str = "memory") -> None:
        self.bucket = bucket
        self.objects: dict[str, _MemoryEntry] = {}
        self._etags: dict[str, tuple[_MemoryEntry, str]] = {}  # the entry an ETag was given to
        self._writes = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"memory://{self.bucket}"

    def _etag(self, key: str, entry: _MemoryEntry) -> str:
        """The ETag of ``entry`` (under the lock): a new one for an entry not seen before."""
        known = self._etags.get(key)
        if known is not None and known[0] is entry:
            return known[1]
        self._writes += 1
        etag = f'"{hashlib.md5(entry[0]).hexdigest()}-{self._writes}"'
        self._etags[key] = (entry, etag)
        return etag

    def put(self, key: str, body: bytes | memoryview, *, metadata: Mapping[str, str],
            s3_checksum: str | None = None, content_type: str = "application/octet-stream",
            if_none_match: bool = False, if_match: str | None = None) -> str | None:
        condition = put_condition(if_none_match, if_match)
        where = f"PUT {self.url}/{key}"
        entry = (bytes(body), dict(metadata), time.time())
        with self._lock:
            current = self.objects.get(key)
            if if_none_match and current is not None:
                raise precondition_failed(where, "the key already exists", IF_NONE_MATCH)
            if if_match is not None and condition is not None:
                if current is None:
                    raise precondition_failed(where, "the key does not exist", condition)
                now = self._etag(key, current)
                if now != if_match:
                    raise precondition_failed(
                        where, f"the object changed since its ETag was read (now {now})",
                        condition)
            self.objects[key] = entry
            return self._etag(key, entry)

    def _entry(self, key: str, op: str) -> tuple[_MemoryEntry, str]:
        with self._lock:
            if key not in self.objects:
                raise ObjectNotFound(f"{op} {self.url}/{key}: not found")
            entry = self.objects[key]
            return entry, self._etag(key, entry)

    def get(self, key: str, *, size_hint: int | None = None) -> tuple[memoryview, ObjectInfo]:
        (body, meta, ts), etag = self._entry(key, "GET")
        return memoryview(body), ObjectInfo(key, len(body), meta, ts, etag=etag)

    def head(self, key: str) -> ObjectInfo:
        (body, meta, ts), etag = self._entry(key, "HEAD")
        return ObjectInfo(key, len(body), meta, ts, etag=etag)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._lock:
            items = sorted((k, len(v[0]), v[2], self._etag(k, v))
                           for k, v in self.objects.items() if k.startswith(prefix))
        for key, size, ts, etag in items:
            yield ObjectInfo(key, size, {}, ts, etag=etag)

    def list_dirs(self, prefix: str) -> Iterator[str]:
        with self._lock:
            rests = [k[len(prefix):] for k in self.objects if k.startswith(prefix)]
        yield from sorted({prefix + rest.split("/", 1)[0] + "/" for rest in rests if "/" in rest})

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(key, None)
            self._etags.pop(key, None)

    def check(self) -> None:
        return None

    def probe(self, timeout: float) -> None:
        return None
