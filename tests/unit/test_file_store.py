"""The ``file://`` store: a directory every node mounts (pure: no Ray, no S3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from s43_ray import codec as codecs
from s43_ray.config import FileStoreConfig, is_file_url, parse_file_url
from s43_ray.errors import InputError, InvalidStoreUrl, NoSuchBucket, ObjectNotFound
from s43_ray.gate import run_gate
from s43_ray.keys import member_names
from s43_ray.predict import default_predictor
from s43_ray.stores import open_store
from s43_ray.stores.file import FILE_META_DIR, FILE_TMP_DIR, FileStore
from s43_ray.stores.s3 import S3Store
from s43_ray.task import PredictionRef, TaskSpec, persist_member


@pytest.fixture
def fstore(tmp_path: Path) -> FileStore:
    return FileStore(FileStoreConfig(root=str(tmp_path)))


@pytest.mark.parametrize(("url", "root"), [
    ("file:///mnt/shared", "/mnt/shared"),
    ("file:///mnt/shared/", "/mnt/shared"),
    ("file://localhost/mnt/nfs/s43", "/mnt/nfs/s43"),
    ("file:///$TMPDIR/s43", "$TMPDIR/s43"),
    ("file:///~/s43", "~/s43"),
])
def test_file_urls_parse_to_their_directory(url: str, root: str) -> None:
    assert is_file_url(url)
    assert parse_file_url(url) == root


@pytest.mark.parametrize(("url", "why"), [
    ("file://otherhost/x", "not a file store URL"),
    ("file:relative/dir", "relative path"),
    ("file:///", "filesystem root"),
    ("file:///mnt/../etc", "'..'"),
    ("file:///mnt/x?q=1", "not a file store URL"),
])
def test_bad_file_urls_are_refused_naming_the_value(url: str, why: str) -> None:
    with pytest.raises(InvalidStoreUrl) as info:
        parse_file_url(url)
    assert url in str(info.value) and why in str(info.value)
    assert "expected" in str(info.value)


def test_round_trip_keeps_bytes_and_metadata(fstore: FileStore, tmp_path: Path) -> None:
    fstore.put("p/run/m0.npz", b"payload", metadata={"s43-codec": "npz"})
    body, info = fstore.get("p/run/m0.npz")
    assert bytes(body) == b"payload"
    assert info.metadata == {"s43-codec": "npz"} and info.size == 7
    head = fstore.head("p/run/m0.npz")
    assert head.size == 7 and head.metadata == {"s43-codec": "npz"}
    assert head.s3_checksum is None  # no store-side checksum: verify --head downloads
    assert (tmp_path / "p" / "run" / "m0.npz").read_bytes() == b"payload"
    assert os.listdir(tmp_path / FILE_TMP_DIR) == []  # renamed into place, nothing left over


def test_memoryview_bodies_are_written_whole(fstore: FileStore) -> None:
    fstore.put("p/r/m", memoryview(b"0123456789")[2:8], metadata={})
    assert bytes(fstore.get("p/r/m")[0]) == b"234567"


def test_list_is_sorted_by_key_scoped_to_the_prefix_and_hides_control_folders(
        fstore: FileStore) -> None:
    for key in ("p/run/m2", "p/run/m1", "p/run/sub/x", "p/runner/m0", "q/run/m0"):
        fstore.put(key, b"x", metadata={})
    assert [o.key for o in fstore.list("p/run/")] == ["p/run/m1", "p/run/m2", "p/run/sub/x"]
    assert [o.key for o in fstore.list("p/run")] == ["p/run/m1", "p/run/m2", "p/run/sub/x",
                                                      "p/runner/m0"]
    assert all(FILE_META_DIR not in o.key and FILE_TMP_DIR not in o.key
               for o in fstore.list(""))
    assert list(fstore.list("absent/")) == []


def test_missing_objects_raise_not_found_and_delete_is_idempotent(fstore: FileStore) -> None:
    with pytest.raises(ObjectNotFound, match="p/r/absent"):
        fstore.get("p/r/absent")
    with pytest.raises(ObjectNotFound):
        fstore.head("p/r/absent")
    fstore.put("p/r/m", b"x", metadata={"a": "b"})
    fstore.delete("p/r/m")
    fstore.delete("p/r/m")
    assert list(fstore.list("p/")) == []


def test_foreign_files_have_no_metadata(fstore: FileStore, tmp_path: Path) -> None:
    (tmp_path / "p" / "r").mkdir(parents=True)
    (tmp_path / "p" / "r" / "stray.txt").write_bytes(b"hi")
    assert fstore.head("p/r/stray.txt").metadata == {}


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", f"{FILE_META_DIR}/x"])
def test_keys_that_escape_or_touch_control_folders_are_refused(fstore: FileStore,
                                                              key: str) -> None:
    with pytest.raises(InputError, match="not a plain relative key"):
        fstore.put(key, b"x", metadata={})


def test_a_missing_root_is_not_created(tmp_path: Path) -> None:
    """A missing mount must not silently become a node-local folder (the bug itself)."""
    root = tmp_path / "not-mounted"
    store = FileStore(FileStoreConfig(root=str(root)))
    with pytest.raises(NoSuchBucket, match=r"not-mounted.*expected a directory mounted"):
        store.check()
    assert not root.exists()


def test_a_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "a-file"
    root.write_bytes(b"")
    with pytest.raises(NoSuchBucket, match="is not a directory"):
        FileStore(FileStoreConfig(root=str(root))).check()


def test_the_root_resolves_environment_variables_where_it_is_opened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S43_TEST_POD", str(tmp_path / "pod-a"))
    store = FileStore(FileStoreConfig(root="$S43_TEST_POD/s43"))
    assert store.root == str(tmp_path / "pod-a" / "s43")
    monkeypatch.delenv("S43_TEST_POD")
    with pytest.raises(InputError, match="unset environment variable"):
        FileStore(FileStoreConfig(root="$S43_TEST_POD/s43"))


def test_open_store_picks_the_implementation(tmp_path: Path) -> None:
    assert isinstance(open_store(FileStoreConfig(root=str(tmp_path))), FileStore)
    from s43_ray.config import StoreConfig
    assert isinstance(open_store(StoreConfig(bucket="b", endpoint_url="http://127.0.0.1:1")),
                      S3Store)


def test_a_cohort_persisted_to_a_shared_folder_passes_the_gate(tmp_path: Path) -> None:
    cfg = FileStoreConfig(root=str(tmp_path))
    store = FileStore(cfg)
    spec = TaskSpec(cfg, "manual__2026-11-28T10:00:00+00:00", "arrow", 100,
                    "s43_ray.predict:default_predictor")
    refs = [persist_member(store, spec, m) for m in member_names(3)]
    assert all(isinstance(r, PredictionRef) for r in refs)
    verdict = run_gate(store, spec.layout, members=member_names(3),
                       codec="arrow", expected=None, mode="head")
    assert verdict.passed and verdict.cohort_count == 3
    # The object on disk opens with stock pyarrow and holds what the predictor produced.
    body, _ = store.get(refs[0].key)  # type: ignore[union-attr]
    arrays = codecs.decode(body, "arrow")
    expected = default_predictor(spec.run_id, "m00000", 100)
    assert all((arrays[k] == expected[k]).all() for k in expected)


def test_a_flipped_byte_on_disk_fails_the_gate(tmp_path: Path) -> None:
    cfg = FileStoreConfig(root=str(tmp_path))
    store = FileStore(cfg)
    spec = TaskSpec(cfg, "r1", "npz", 50, "s43_ray.predict:default_predictor")
    ref = persist_member(store, spec, "m00000")
    assert isinstance(ref, PredictionRef)
    path = tmp_path / ref.key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    verdict = run_gate(store, spec.layout, members=["m00000"], codec="npz",
                       expected=None)
    assert not verdict.passed and verdict.invalid["m00000"].startswith("checksum")
