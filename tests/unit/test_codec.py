"""codec: exact round trips, refusal of unsafe arrays, stock readers, integrity checks."""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from s43_ray import codec
from s43_ray.codec import Codec
from s43_ray.errors import (
    ChecksumMismatch,
    CodecMismatch,
    LoadError,
    TruncatedObject,
    UnsafeArray,
    UnsafePayload,
)

CODECS: tuple[Codec, ...] = ("npz", "arrow")
DTYPES = ["<f2", "<f4", "<f8", "i1", "<i2", "<i4", "<i8", "u1", "<u2", "<u4", "<u8", "?",
          "<c8", ">f4", "<M8[ns]", "<M8[D]", "<m8[s]"]
SHAPES: list[tuple[int, ...]] = [(), (7,), (2, 3, 4), (0, 3)]


def _sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Distinct, non-trivial values of ``dtype`` in ``shape``."""
    n = int(np.prod(shape, dtype=np.int64))
    dt = np.dtype(dtype)
    base = np.arange(1, n + 1, dtype=np.int64)
    if dt.kind == "b":
        values = base % 3 == 0
    elif dt.kind == "c":
        values = base.astype(np.float64) * 0.5 - 1j * base
    elif dt.kind in "Mm":
        values = (base * 86_400 + 1_700_000_000).astype(dt.newbyteorder("="))
    elif dt.kind == "f":
        values = base * 0.25 - 3.0
    else:
        values = base * 7
    return np.asarray(values).astype(dt).reshape(shape)


def _payload(arrays: dict[str, Any], c: Codec) -> bytes:
    return bytes(codec.encode(arrays, c).payload)


def _flip(payload: bytes, index: int) -> bytes:
    data = bytearray(payload)
    data[index] ^= 0xFF
    return bytes(data)


# --- round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("c", CODECS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)) or "0d")
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_keeps_values_dtype_and_shape_exactly(dtype: str, shape: tuple[int, ...],
                                                         c: Codec) -> None:
    original = _sample(dtype, shape)
    encoded = codec.encode({"a": original}, c)
    decoded = codec.decode(encoded.payload, c)

    assert list(decoded) == ["a"]
    out = decoded["a"]
    assert out.dtype.str == original.dtype.str
    assert out.shape == original.shape
    np.testing.assert_array_equal(out, original)
    assert encoded.arrays["a"] == codec.ArraySpec(shape, original.dtype.str)


@pytest.mark.parametrize("c", CODECS)
def test_round_trip_keeps_several_named_arrays(c: Codec) -> None:
    record: dict[str, np.ndarray] = {
        "index": np.arange(5, dtype=np.int64),
        "predictions": np.linspace(0, 1, 15, dtype=np.float32).reshape(5, 3),
        "label": np.array([True, False, True, True, False]),
        "score": np.array(0.75, dtype=np.float64),
        "big_endian": np.arange(4, dtype=">i4").reshape(2, 2),
    }
    decoded = codec.decode(codec.encode(record, c).payload, c)

    assert set(decoded) == set(record)
    for name, original in record.items():
        assert decoded[name].dtype.str == original.dtype.str, name
        assert decoded[name].shape == original.shape, name
        np.testing.assert_array_equal(decoded[name], original)


@pytest.mark.parametrize("c", CODECS)
def test_round_trip_keeps_nan_and_extreme_values(c: Codec) -> None:
    record: dict[str, np.ndarray] = {
        "f": np.array([np.nan, np.inf, -np.inf, -0.0, np.finfo(np.float64).tiny]),
        "u": np.array([0, np.iinfo(np.uint64).max], dtype=np.uint64),
        "i": np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max], dtype=np.int64),
        "t": np.array(["NaT", "2026-11-28T10:00:00"], dtype="datetime64[s]"),
    }
    decoded = codec.decode(codec.encode(record, c).payload, c)

    for name, original in record.items():
        assert decoded[name].tobytes() == original.tobytes(), name


@pytest.mark.parametrize("c", CODECS)
def test_round_trip_of_non_contiguous_array_keeps_logical_values(c: Codec) -> None:
    original = np.arange(24, dtype=np.int32).reshape(4, 6)[:, ::2].T
    decoded = codec.decode(codec.encode({"a": original}, c).payload, c)["a"]

    assert decoded.shape == (3, 4)
    np.testing.assert_array_equal(decoded, original)


@pytest.mark.parametrize("c", CODECS)
def test_encoding_is_deterministic(c: Codec) -> None:
    record: dict[str, np.ndarray] = {"a": np.arange(10, dtype=np.float32),
                                     "b": np.ones((2, 2), dtype=np.int8)}

    first, second = codec.encode(record, c), codec.encode(record, c)

    assert bytes(first.payload) == bytes(second.payload)
    assert first.checksum == second.checksum


def test_object_metadata_names_codec_version_checksum_and_size() -> None:
    encoded = codec.encode({"a": np.arange(3)}, "arrow")

    meta = codec.object_metadata(encoded, "arrow")

    assert meta == {"s43-codec": "arrow", "s43-format-version": codec.FORMAT_VERSION,
                    "s43-checksum": encoded.checksum, "s43-bytes": str(encoded.nbytes)}
    assert all(k.isascii() and k == k.lower() for k in meta)


# --- refused on write -------------------------------------------------------------------------

@pytest.mark.parametrize("c", CODECS)
@pytest.mark.parametrize("value", [
    np.array([1, "two", None], dtype=object),
    np.array(["a", "bc"]),
    np.array([b"a", b"bc"]),
    np.zeros(2, dtype=[("x", "<f4"), ("y", "<i4")]),
    np.zeros(2, dtype="V8"),
], ids=["object", "unicode", "bytes", "structured", "void"])
def test_encode_refuses_non_numeric_dtypes(value: np.ndarray, c: Codec) -> None:
    with pytest.raises(UnsafeArray) as info:
        codec.encode({"bad": value}, c)

    assert "'bad'" in str(info.value)
    assert "expected a numeric or bool dtype" in str(info.value)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("c", CODECS)
@pytest.mark.parametrize("name", ["", "1abc", "has space", "a/b", "../x", "x" * 65, "é"])
def test_encode_refuses_bad_array_names(name: str, c: Codec) -> None:
    with pytest.raises(UnsafeArray) as info:
        codec.encode({name: np.arange(3)}, c)

    assert repr(name) in str(info.value)
    assert "expected an identifier" in str(info.value)


@pytest.mark.parametrize("c", CODECS)
def test_encode_refuses_an_empty_record(c: Codec) -> None:
    with pytest.raises(UnsafeArray, match="no arrays"):
        codec.encode({}, c)


def test_encode_refuses_an_unknown_codec() -> None:
    with pytest.raises(UnsafeArray, match="'parquet'"):
        codec.encode({"a": np.arange(3)}, "parquet")  # type: ignore[arg-type]


# --- stock readers ----------------------------------------------------------------------------

def test_npz_payload_opens_with_stock_numpy_load_without_pickle() -> None:
    record = {"index": np.arange(4, dtype=np.int64), "p": np.ones((2, 2), dtype=">f4")}
    payload = codec.encode(record, "npz").payload

    with np.load(io.BytesIO(bytes(payload)), allow_pickle=False) as npz:
        assert sorted(npz.files) == ["index", "p"]
        np.testing.assert_array_equal(npz["index"], record["index"])
        assert npz["p"].dtype.str == ">f4"


def test_arrow_payload_opens_with_stock_pyarrow_ipc_open_file() -> None:
    record: dict[str, np.ndarray] = {"index": np.arange(4, dtype=np.int64),
                                     "p": np.ones((2, 3), dtype=np.float32)}
    payload = codec.encode(record, "arrow").payload

    reader = pa.ipc.open_file(pa.py_buffer(bytes(payload)))

    assert reader.num_record_batches == 1
    table = reader.read_all()
    assert table.column_names == ["index", "p"]
    assert table.column("index").to_pylist() == [[0, 1, 2, 3]]
    meta = table.schema.field("p").metadata
    assert meta[b"s43.shape"] == b"[2, 3]"
    assert meta[b"s43.dtype"] == b"<f4"


@pytest.mark.parametrize("c", CODECS)
def test_sniff_recognises_each_codec(c: Codec) -> None:
    assert codec.sniff(codec.encode({"a": np.arange(2)}, c).payload) == c
    assert codec.sniff(b"{\"not\": \"s43\"}") is None


# --- verify -----------------------------------------------------------------------------------

@pytest.mark.parametrize("c", CODECS)
def test_verify_accepts_an_unaltered_payload(c: Codec) -> None:
    encoded = codec.encode({"a": np.arange(100)}, c)

    codec.verify(encoded.payload, codec=c, expected_checksum=encoded.checksum,
                 expected_bytes=encoded.nbytes)


@pytest.mark.parametrize("c", CODECS)
def test_verify_detects_one_flipped_byte(c: Codec) -> None:
    encoded = codec.encode({"a": np.arange(100)}, c)
    payload = bytes(encoded.payload)
    corrupted = _flip(payload, len(payload) // 2)

    with pytest.raises(ChecksumMismatch) as info:
        codec.verify(corrupted, codec=c, expected_checksum=encoded.checksum,
                     expected_bytes=encoded.nbytes)

    assert info.value.error_class == "checksum"
    assert encoded.checksum in str(info.value)
    assert isinstance(info.value, LoadError)


@pytest.mark.parametrize("c", CODECS)
def test_verify_detects_truncation(c: Codec) -> None:
    encoded = codec.encode({"a": np.arange(100)}, c)
    truncated = bytes(encoded.payload)[:-10]

    with pytest.raises(TruncatedObject) as info:
        codec.verify(truncated, codec=c, expected_checksum=encoded.checksum,
                     expected_bytes=encoded.nbytes)

    assert info.value.error_class == "truncated"
    assert f"expected {encoded.nbytes}" in str(info.value)


@pytest.mark.parametrize("c", CODECS)
def test_verify_detects_truncation_without_a_recorded_size(c: Codec) -> None:
    encoded = codec.encode({"a": np.arange(100)}, c)

    with pytest.raises(LoadError):
        codec.verify(bytes(encoded.payload)[:-10], codec=c, expected_checksum=encoded.checksum)


@pytest.mark.parametrize("c", CODECS)
def test_verify_refuses_zero_bytes(c: Codec) -> None:
    with pytest.raises(TruncatedObject, match="0 bytes") as info:
        codec.verify(b"", codec=c, expected_checksum=codec.checksum(b""))

    assert info.value.error_class == "truncated"


@pytest.mark.parametrize(("written", "expected"), [("npz", "arrow"), ("arrow", "npz")])
def test_verify_detects_the_other_codec(written: Codec, expected: Codec) -> None:
    encoded = codec.encode({"a": np.arange(10)}, written)

    with pytest.raises(CodecMismatch) as info:
        codec.verify(encoded.payload, codec=expected, expected_checksum=encoded.checksum)

    assert info.value.error_class == "codec"
    assert f"object is {written}; expected {expected}" in str(info.value)


@pytest.mark.parametrize("c", CODECS)
def test_verify_refuses_a_payload_that_is_no_s43_codec(c: Codec) -> None:
    body = b'{"hello": "world"}'

    with pytest.raises(CodecMismatch, match="not an s43 codec"):
        codec.verify(body, codec=c, expected_checksum=codec.checksum(body))


# --- decode refuses unsafe or foreign payloads -------------------------------------------------

class _WritesMarker:
    """Unpickling this object creates the file it names: evidence that pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def _pickled_npz(marker: Path) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, index=np.arange(3), evil=np.array([_WritesMarker(marker)], dtype=object))
    return buf.getvalue()


def test_pickled_npz_fixture_really_would_run_code_when_unpickled(tmp_path: Path) -> None:
    # Control for the test below: the payload is armed (stock numpy with pickle on runs it).
    marker = tmp_path / "control-unpickled"
    with np.load(io.BytesIO(_pickled_npz(marker)), allow_pickle=True) as npz:
        npz["evil"]
    assert marker.exists()


def test_decode_refuses_npz_with_pickled_object_array_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    payload = _pickled_npz(marker)

    with pytest.raises(UnsafePayload) as info:
        codec.decode(payload, "npz")

    assert info.value.error_class == "unsafe_payload"
    assert not marker.exists()


def test_decode_refuses_arrow_field_declaring_object_dtype() -> None:
    values = pa.array(np.arange(3, dtype=np.int64))
    column = pa.LargeListArray.from_arrays(pa.array([0, 3], type=pa.int64()), values)
    meta = {"s43.dtype": "|O", "s43.shape": "[3]"}
    schema = pa.schema([pa.field("a", column.type, metadata=meta)])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(pa.RecordBatch.from_arrays([column], schema=schema))

    with pytest.raises(UnsafePayload, match="'a'"):
        codec.decode(sink.getvalue().to_pybytes(), "arrow")


def test_decode_refuses_arrow_file_without_s43_metadata() -> None:
    table = pa.table({"a": [1, 2, 3]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)

    with pytest.raises(CodecMismatch, match="'a'"):
        codec.decode(sink.getvalue().to_pybytes(), "arrow")


def test_decode_of_npz_as_arrow_is_a_codec_mismatch() -> None:
    payload = _payload({"a": np.arange(5)}, "npz")

    with pytest.raises(CodecMismatch):
        codec.decode(payload, "arrow")


@pytest.mark.parametrize("payload", [_payload({"a": np.arange(5)}, "arrow"),
                                     b"plain text, no codec at all" * 4],
                         ids=["arrow", "garbage"])
def test_decode_of_a_non_zip_payload_as_npz_is_a_codec_mismatch(payload: bytes) -> None:
    with pytest.raises(CodecMismatch) as info:
        codec.decode(payload, "npz")

    assert "pickle" not in str(info.value)


def test_decode_refuses_zip_with_non_npy_entry_as_codec_mismatch() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("notes.txt", "not an array")

    with pytest.raises(CodecMismatch):
        codec.decode(buf.getvalue(), "npz")


def test_decode_refuses_bare_npy_payload_as_codec_mismatch() -> None:
    buf = io.BytesIO()
    np.save(buf, np.arange(3))

    with pytest.raises(CodecMismatch):
        codec.decode(buf.getvalue(), "npz")


# --- checksum ---------------------------------------------------------------------------------

def test_checksum_is_s3_base64_crc64nvme() -> None:
    # CRC-64/NVME check value for b"123456789" (the catalogue's standard test vector).
    expected = base64.b64encode(bytes.fromhex("ae8b14860a799888")).decode()

    assert codec.checksum(b"123456789") == f"crc64nvme:{expected}"


def test_checksum_is_deterministic_and_format_is_twelve_base64_chars() -> None:
    payload = codec.encode({"a": np.arange(1000)}, "npz").payload

    first, second = codec.checksum(payload), codec.checksum(bytes(payload))

    assert first == second
    algo, value = first.split(":")
    assert algo == "crc64nvme"
    assert len(value) == 12
    assert len(base64.b64decode(value, validate=True)) == 8


def test_checksum_differs_for_different_payloads() -> None:
    assert codec.checksum(b"a") != codec.checksum(b"b")


def test_encoded_s3_checksum_is_the_bare_base64_value() -> None:
    encoded = codec.encode({"a": np.arange(3)}, "arrow")

    assert encoded.checksum == f"crc64nvme:{encoded.s3_checksum}"
    assert encoded.checksum == codec.checksum(encoded.payload)
    assert encoded.nbytes == len(bytes(encoded.payload))


@pytest.mark.parametrize("dtype", [np.longdouble, np.clongdouble])
def test_arrow_refuses_extended_precision_and_points_to_npz(dtype: type) -> None:
    arr = np.zeros(3, dtype=dtype)
    if arr.dtype.itemsize <= 8 or (arr.dtype.kind == "c" and arr.dtype.itemsize <= 16):
        pytest.skip("this platform's long double is a plain double")
    with pytest.raises(UnsafeArray, match="use --format npz"):
        codec.encode({"a": arr}, "arrow")
    assert codec.decode(codec.encode({"a": arr}, "npz").payload, "npz")["a"].dtype == arr.dtype


def test_large_arrow_records_are_written_into_one_exact_buffer_with_the_same_bytes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Records >= 1 MiB go through a pre-sized buffer; the file is byte-identical to the
    streamed one, opens with stock pyarrow, and its buffer is exactly the payload's size."""
    arrays = {"predictions": np.arange(400_000, dtype=np.float32),
              "label": (np.arange(400_000) % 3).astype(np.int8)}
    presized = codec.encode(arrays, "arrow")
    monkeypatch.setattr(codec, "PRESIZE_BYTES", 1 << 40)
    streamed = codec.encode(arrays, "arrow")
    assert bytes(presized.payload) == bytes(streamed.payload)
    assert presized.checksum == streamed.checksum
    assert pa.ipc.open_file(pa.py_buffer(presized.payload)).get_batch(0).num_rows == 1
    decoded = codec.decode(presized.payload, "arrow")
    assert all(np.array_equal(decoded[k], arrays[k]) for k in arrays)


@pytest.mark.parametrize("shape", [b"[3, -1]", b"3, 4", b"[a]", b"{}"])
def test_arrow_shape_metadata_that_does_not_parse_is_a_codec_mismatch(shape: bytes) -> None:
    values = pa.array(np.zeros(3, dtype=np.float32))
    column = pa.LargeListArray.from_arrays(pa.array(np.array([0, 3], dtype=np.int64)), values)
    field = pa.field("p", column.type, metadata={"s43.dtype": "<f4", "s43.shape": shape})
    with pytest.raises(CodecMismatch):
        codec.decode_field(field, column)
