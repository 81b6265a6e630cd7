"""The ``file://`` store: a directory every node mounts (a shared volume such as NFS).

Correct only when every node sees the same directory; see :class:`FileStore`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import uuid
from collections.abc import Iterator, Mapping

from ..config import FileStoreConfig
from ..errors import (
    AccessDenied,
    InputError,
    NoSuchBucket,
    ObjectNotFound,
    StoreError,
    StoreUnreachable,
)
from .base import ObjectInfo, finished_within, precondition_failed, put_condition

# Control folders under a file store's root, outside every prefix: user metadata of each object
# (what S3 keeps in its headers), and temporary files renamed into place when complete.
FILE_META_DIR = ".s43-meta"
FILE_TMP_DIR = ".s43-tmp"
# Under FILE_TMP_DIR: the lock every conditional write holds (created by the first one).
FILE_LOCK = ".lock"


def file_etag(st: os.stat_result) -> str:
    """A file object's ETag, quoted like S3's. Every write renames a new file into place, so
    the inode (with the modification time and size) changes even when the bytes do not."""
    return f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'


def _holds_a_file(path: str) -> bool:
    """Whether any file lies under directory ``path``: stops at the first one found, so a run
    folder of 10,000 members is not read whole."""
    try:
        with os.scandir(path) as entries:
            subdirs = []
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.path)
                elif not entry.is_dir():  # a link to a directory is not followed, as by list
                    return True
    except FileNotFoundError:
        return False  # deleted while listing
    return any(_holds_a_file(d) for d in subdirs)


class FileStore:
    """:class:`Store` over a directory. Correct only when every node mounts the same directory.

    A write goes to a temporary file that is renamed into place once complete and flushed, so a
    reader sees the whole object or none of it; the object's metadata is written first, next to
    it under ``.s43-meta/``, so an object is never visible without its metadata.

    Conditional writes (``if_none_match``, ``if_match``) check and write while holding an
    exclusive ``flock`` on ``.s43-tmp/.lock``, so they are atomic against each other between
    threads, processes and nodes (on NFS the lock needs NFSv4 or lockd). Unconditional writes
    take no lock: one may land between a conditional writer's check and its write, and is then
    overwritten by it (S3 would keep the later one).
    """

    retries = 0  # no network, nothing to retry

    def __init__(self, cfg: FileStoreConfig) -> None:
        self.cfg = cfg
        # Resolved here, on the node that opens the store: a node-local path differs per node.
        resolved = os.path.expandvars(os.path.expanduser(cfg.root))
        if "$" in resolved:
            raise InputError(f"file store root {cfg.root!r} names an unset environment "
                             "variable; expected it set on every node")
        self.root = os.path.abspath(resolved)

    @property
    def url(self) -> str:
        return self.cfg.url

    def _path(self, key: str, base: str = "") -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in {"", ".", ".."} for p in parts) \
                or parts[0] in {FILE_META_DIR, FILE_TMP_DIR}:
            raise InputError(f"key {key!r} is not a plain relative key; expected a/b/c")
        return os.path.join(self.root, base, *parts)

    def _fail(self, exc: OSError, op: str, key: str) -> StoreError:
        where = f"{op} {self.url}/{key}"
        if isinstance(exc, FileNotFoundError):
            return ObjectNotFound(f"{where}: not found")
        if isinstance(exc, PermissionError):
            return AccessDenied(f"{where}: permission denied")
        return StoreError(f"{where}: {errno.errorcode.get(exc.errno or 0, 'OSError')}: "
                          f"{exc.strerror or exc}")

    def _write_atomic(self, path: str, chunks: bytes | memoryview) -> os.stat_result:
        """Write ``path`` through a renamed temporary file; the new file's stat (for its ETag:
        the rename keeps the inode, times and size)."""
        tmp_dir = os.path.join(self.root, FILE_TMP_DIR)
        os.makedirs(tmp_dir, exist_ok=True)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(tmp_dir, uuid.uuid4().hex)
        try:
            with open(tmp, "wb") as f:
                f.write(chunks)
                f.flush()
                os.fsync(f.fileno())
                st = os.fstat(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return st

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the store's write lock (one per root, shared by every node that mounts it)."""
        tmp_dir = os.path.join(self.root, FILE_TMP_DIR)
        os.makedirs(tmp_dir, exist_ok=True)
        # A descriptor of its own per call: flock excludes other descriptors, threads included.
        fd = os.open(os.path.join(tmp_dir, FILE_LOCK), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _refuse(self, key: str, path: str, if_none_match: bool, if_match: str | None,
                condition: str) -> None:
        """Raise :class:`PreconditionFailed` unless the condition holds now (lock held)."""
        try:
            st: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            st = None
        where = f"PUT {self.url}/{key}"
        if if_none_match and st is not None:
            raise precondition_failed(where, "the key already exists", condition)
        if if_match is not None:
            if st is None:
                raise precondition_failed(where, "the key does not exist", condition)
            now = file_etag(st)
            if now != if_match:
                raise precondition_failed(
                    where, f"the object changed since its ETag was read (now {now})", condition)

    def put(self, key: str, body: bytes | memoryview, *, metadata: Mapping[str, str],
            s3_checksum: str | None = None, content_type: str = "application/octet-stream",
            if_none_match: bool = False, if_match: str | None = None) -> str | None:
        """Write ``key``; returns its new ETag. With a condition, the check and the write hold
        the store's lock (see the class docstring)."""
        condition = put_condition(if_none_match, if_match)
        path = self._path(key)
        meta = json.dumps({"metadata": dict(metadata), "content_type": content_type}).encode()
        meta_path = self._path(key, FILE_META_DIR) + ".json"
        try:
            if condition is None:
                self._write_atomic(meta_path, meta)
                return file_etag(self._write_atomic(path, body))
            with self._locked():
                self._refuse(key, path, if_none_match, if_match, condition)
                self._write_atomic(meta_path, meta)
                return file_etag(self._write_atomic(path, body))
        except OSError as exc:
            raise self._fail(exc, "PUT", key) from exc

    def _metadata(self, key: str) -> dict[str, str]:
        try:
            with open(self._path(key, FILE_META_DIR) + ".json", "rb") as f:
                record = json.load(f)
        except (OSError, ValueError):
            return {}  # written by something else: the gate reports it as having no metadata
        meta = record.get("metadata") if isinstance(record, dict) else None
        return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}

    def get(self, key: str, *, size_hint: int | None = None) -> tuple[memoryview, ObjectInfo]:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                body = f.read()
                st = os.fstat(f.fileno())
        except OSError as exc:
            raise self._fail(exc, "GET", key) from exc
        return memoryview(body), ObjectInfo(key, len(body), self._metadata(key), st.st_mtime,
                                            etag=file_etag(st))

    def head(self, key: str) -> ObjectInfo:
        try:
            st = os.stat(self._path(key))
        except OSError as exc:
            raise self._fail(exc, "HEAD", key) from exc
        # No store-side checksum: verify --head downloads and checks our own.
        return ObjectInfo(key, st.st_size, self._metadata(key), st.st_mtime,
                          etag=file_etag(st))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = os.path.join(self.root, base) if base else self.root
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(top, onerror=None):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d not in {FILE_META_DIR, FILE_TMP_DIR}]
                rel_dir = ""
            for name in filenames:
                key = f"{rel_dir}/{name}" if rel_dir else name
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue  # deleted while listing
                found.append(ObjectInfo(key, st.st_size, {}, st.st_mtime,
                                        etag=file_etag(st)))
        yield from sorted(found, key=lambda o: o.key)

    def list_dirs(self, prefix: str) -> Iterator[str]:
        """The sub-directories of ``prefix``'s directory whose names start with the rest of
        ``prefix`` and that hold at least one file (an empty directory, e.g. left by deleting a
        run's objects, holds no key). Symbolic links are not followed, as :meth:`list` does."""
        base, _, start = prefix.rpartition("/")
        top = self._path(base) if base else self.root
        try:
            with os.scandir(top) as entries:
                names = sorted(e.name for e in entries if e.name.startswith(start)
                               and e.is_dir(follow_symlinks=False)
                               and (base or e.name not in {FILE_META_DIR, FILE_TMP_DIR}))
        except FileNotFoundError:
            return  # nothing under the prefix, as S3 would say
        except OSError as exc:
            raise self._fail(exc, "LIST", prefix) from exc
        for name in names:
            try:
                found = _holds_a_file(os.path.join(top, name))
            except OSError as exc:
                raise self._fail(exc, "LIST", f"{base}/{name}/" if base else f"{name}/") \
                    from exc
            if found:
                yield f"{base}/{name}/" if base else f"{name}/"

    def delete(self, key: str) -> None:
        for path in (self._path(key), self._path(key, FILE_META_DIR) + ".json"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise self._fail(exc, "DELETE", key) from exc

    def check(self) -> None:
        """The root must already exist: a missing mount must not turn into a node-local folder."""
        if not os.path.isdir(self.root):
            raise NoSuchBucket(f"file store root {self.root} does not exist or is not a "
                               "directory; expected a directory mounted on every node")
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            raise AccessDenied(f"file store root {self.root}: permission denied; expected "
                               "a directory this user can read and write")

    def probe(self, timeout: float) -> None:
        """:meth:`check` within ``timeout`` seconds: a hung mount (an NFS server gone) raises
        :class:`StoreUnreachable` instead of blocking the caller (the stuck check is left to
        finish in a daemon thread)."""
        if not finished_within(timeout, self.check):
            raise StoreUnreachable(f"file store root {self.root}: no answer within "
                                   f"{timeout:g}s (probe)")


