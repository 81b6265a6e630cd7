"""The small-PUT client (s43_ray.stores.s3_fast_put): its signature, when it is used, and how it
reads answers and connections, against a scripted HTTP peer on 127.0.0.1.

Its requests against the real SeaweedFS server (signature accepted, metadata, checksum,
conditions, SSE-C, retries through the fault proxy) are in
tests/integration/test_fast_put_live.py and every suite that writes objects.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from s43_ray.config import Secret, StoreConfig
from s43_ray.errors import AccessDenied, PreconditionFailed, StoreError, StoreUnreachable
from s43_ray.stores import s3_fast_put as fast_put
from s43_ray.stores.s3_settings import retry_log


def test_signature_matches_aws_published_example() -> None:
    """AWS's worked example "PUT Object" (Signature V4, single chunk, signed payload)."""
    headers = {"host": "examplebucket.s3.amazonaws.com",
               "date": "Fri, 24 May 2013 00:00:00 GMT",
               "x-amz-storage-class": "REDUCED_REDUNDANCY"}
    signed = fast_put.sign(
        "PUT", "/test%24file.text", headers,
        payload_hash="44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", region="us-east-1",
        now=datetime(2013, 5, 24, tzinfo=timezone.utc))
    assert signed["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
        "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    assert signed["x-amz-date"] == "20130524T000000Z"


# --- a scripted peer --------------------------------------------------------------------------

class Peer:
    """Answers each request it reads with the next scripted answer; ``b"CLOSE"`` closes the
    connection without answering, and each answer may close the connection after it."""

    def __init__(self, answers: list[tuple[bytes, bool]]) -> None:
        self.answers = answers
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                rfile = conn.makefile("rb")
                while self.answers:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = rfile.readline()
                        if not line:
                            break
                        head += line
                    if not head:
                        break
                    length = next((int(x.split(b":")[1]) for x in head.split(b"\r\n")
                                   if x.lower().startswith(b"content-length:")), 0)
                    self.requests.append(head + rfile.read(length))
                    answer, close = self.answers.pop(0)
                    if answer == b"CLOSE":
                        break
                    conn.sendall(answer)
                    if close:
                        break
                rfile.close()  # the socket closes only once its file is closed too
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a pending accept()
        self.sock.close()
        self.thread.join(5)


def ok(etag: str = '"e1"', extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nETag: {etag}\r\n{extra}Content-Length: 0\r\n\r\n").encode()


def error(status: int, code: str, *, chunked: bool = False) -> bytes:
    body = f"<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>"
    if chunked:
        half = len(body) // 2
        chunks = "".join(f"{len(p):x}\r\n{p}\r\n" for p in (body[:half], body[half:]))
        return (f"HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}0\r\n\r\n"
                ).encode()
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()


@pytest.fixture
def peer_cfg(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[list[Peer], StoreConfig]]:
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(fast_put, "backoff_s", lambda retry: 0.0)
    peers: list[Peer] = []
    yield peers, StoreConfig(bucket="b", prefix="p", endpoint_url="http://127.0.0.1:9",
                             region="us-east-1", max_attempts=3,
                             access_key_id=Secret("AK"), secret_access_key=Secret("SK"))
    for p in peers:
        p.stop()


def _cfg(base: StoreConfig, peer: Peer, **kw: object) -> StoreConfig:
    from dataclasses import replace

    return replace(base, endpoint_url=f"http://127.0.0.1:{peer.port}", **kw)  # type: ignore[arg-type]


def _start(peers: list[Peer], answers: list[tuple[bytes, bool]]) -> Peer:
    peer = Peer(answers)
    peers.append(peer)
    return peer


def test_request_is_signed_and_carries_every_header(
        peer_cfg: tuple[list[Peer], StoreConfig]) -> None:
    peers, base = peer_cfg
    peer = _start(peers, [(ok('"abc"'), False)])
    cfg = _cfg(base, peer)
    etag = fast_put.put(cfg, "p/run/m1.arrow", b"payload", {
        "content-type": "application/octet-stream", "x-amz-meta-s43-run": "run",
        "x-amz-checksum-crc64nvme": "AAAAAAAAAAA=", "if-none-match": "*"})
    assert etag == '"abc"'
    head, _, body = peer.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "PUT /b/p/run/m1.arrow HTTP/1.1"
    sent = dict(x.split(": ", 1) for x in lines[1:])
    assert body == b"payload" and sent["content-length"] == "7"
    assert sent["host"] == f"127.0.0.1:{peer.port}"
    assert sent["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"  # the checksum header is signed
    signed = sent["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "x-amz-checksum-crc64nvme", "x-amz-meta-s43-run", "if-none-match",
            "content-type"} <= set(signed)


def test_without_a_checksum_header_the_body_hash_is_signed(
        peer_cfg: tuple[list[Peer], StoreConfig]) -> None:
    import hashlib

    peers, base = peer_cfg
    peer = _start(peers, [(ok(), False)])
    fast_put.put(_cfg(base, peer), "k", b"body", {})
    assert f"x-amz-content-sha256: {hashlib.sha256(b'body').hexdigest()}".encode() \
        in peer.requests[0]


def test_a_connection_closed_while_idle_is_replaced_without_a_retry(
        peer_cfg: tuple[list[Peer], StoreConfig]) -> None:
    peers, base = peer_cfg
    peer = _start(peers, [(ok('"1"'), True), (ok('"2"'), False)])
    cfg = _cfg(base, peer)
    before = retry_log(cfg).retries
    assert fast_put.put(cfg, "k1", b"x", {}) == '"1"'
    peer.thread.join(0.2)  # the peer has closed the first connection by now
    assert fast_put.put(cfg, "k2", b"x", {}) == '"2"'
    assert peer.connections == 2 and retry_log(cfg).retries == before


def test_a_kept_connection_is_reused(peer_cfg: tuple[list[Peer], StoreConfig]) -> None:
    peers, base = peer_cfg
    peer = _start(peers, [(ok(), False)] * 3)
    cfg = _cfg(base, peer)
    for i in range(3):
        fast_put.put(cfg, f"k{i}", b"x", {})
    assert peer.connections == 1


def test_a_lost_answer_and_a_5xx_are_retried_then_succeed(
        peer_cfg: tuple[list[Peer], StoreConfig], caplog: pytest.LogCaptureFixture) -> None:
    peers, base = peer_cfg
    peer = _start(peers, [(b"CLOSE", False), (error(503, "SlowDown"), False), (ok('"3"'), False)])
    cfg = _cfg(base, peer)
    before = retry_log(cfg).retries
    with caplog.at_level(logging.WARNING, "s43_ray.store"):
        assert fast_put.put(cfg, "k", b"x", {}) == '"3"'
    assert retry_log(cfg).retries - before == 2
    assert [r.getMessage().split(" to ")[0] for r in caplog.records] == [
        "s3 PutObject retry attempt 2", "s3 PutObject retry attempt 3"]


def test_the_attempt_budget_ends_in_the_last_error(
        peer_cfg: tuple[list[Peer], StoreConfig]) -> None:
    peers, base = peer_cfg
    peer = _start(peers, [(error(500, "InternalError"), False)] * 2)
    cfg = _cfg(base, peer, max_attempts=2)
    with pytest.raises(StoreError, match=r"PUT s3://b/k at http://127\.0\.0\.1:\d+: "
                                         r"InternalError"):
        fast_put.put(cfg, "k", b"x", {})


@pytest.mark.parametrize(("answer", "kind"), [
    (error(403, "AccessDenied", chunked=True), AccessDenied),
    (error(412, "PreconditionFailed"), PreconditionFailed),
    (error(400, "BadDigest"), StoreError),
])
def test_refusals_are_classified_and_not_retried(
        peer_cfg: tuple[list[Peer], StoreConfig], answer: bytes, kind: type[Exception]) -> None:
    peers, base = peer_cfg
    peer = _start(peers, [(answer, False)])
    cfg = _cfg(base, peer)
    before = retry_log(cfg).retries
    with pytest.raises(kind):
        fast_put.put(cfg, "k", b"x", {"if-none-match": "*"}, condition="If-None-Match: *")
    assert retry_log(cfg).retries == before


def test_a_store_echoing_another_checksum_is_an_error(
        peer_cfg: tuple[list[Peer], StoreConfig]) -> None:
    peers, base = peer_cfg
    peer = _start(peers, [(ok(extra="x-amz-checksum-crc64nvme: BBBBBBBBBBB=\r\n"), False)])
    with pytest.raises(StoreError, match="answered checksum BBBBBBBBBBB= for a body sent with "
                                         "AAAAAAAAAAA="):
        fast_put.put(_cfg(base, peer), "k", b"x", {"x-amz-checksum-crc64nvme": "AAAAAAAAAAA="})


def test_a_dead_endpoint_is_unreachable_after_the_budget(
        peer_cfg: tuple[list[Peer], StoreConfig]) -> None:
    _, base = peer_cfg
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    from dataclasses import replace

    cfg = replace(base, endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1)
    with pytest.raises(StoreUnreachable, match="unreachable"):
        fast_put.put(cfg, "k", b"x", {})


# --- when it is used --------------------------------------------------------------------------

def test_used_for_small_bodies_on_an_endpoint(peer_cfg: tuple[list[Peer], StoreConfig]) -> None:
    _, cfg = peer_cfg
    assert fast_put.enabled(cfg, 4096)
    assert not fast_put.enabled(cfg, fast_put.FAST_PUT_MAX_BYTES + 1)
    from dataclasses import replace

    assert not fast_put.enabled(replace(cfg, endpoint_url=None), 4096)  # AWS: boto3


def test_off_when_the_config_asks_for_boto3(peer_cfg: tuple[list[Peer], StoreConfig]) -> None:
    from dataclasses import replace

    _, cfg = peer_cfg
    assert not fast_put.enabled(replace(cfg, put_client="boto3"), 4096)


def test_a_proxy_sends_puts_through_boto3(peer_cfg: tuple[list[Peer], StoreConfig],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    _, base = peer_cfg
    cfg = replace(base, endpoint_url="http://127.0.0.1:19")  # a config of its own (cached)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert not fast_put.enabled(cfg, 4096)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    fast_put._target.cache_clear()
    assert fast_put.enabled(cfg, 4096)
    fast_put._target.cache_clear()


def test_header_values_must_be_plain_ascii() -> None:
    assert fast_put.plain({"x-amz-meta-a": "run-1 m/2"})
    assert not fast_put.plain({"x-amz-meta-a": "caf\u00e9"})
    assert not fast_put.plain({"x-amz-meta-a": "a\r\nb"})


def test_sse_c_headers_match_botocore() -> None:
    import base64

    from botocore.handlers import sse_md5

    key = bytes(range(32))
    params = {"SSECustomerKey": key}
    sse_md5(params)
    assert fast_put.sse_c_headers(base64.b64encode(key).decode()) == {
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": params["SSECustomerKey"],
        "x-amz-server-side-encryption-customer-key-md5": params["SSECustomerKeyMD5"]}


def test_a_missing_profile_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from s43_ray.errors import InputError

    monkeypatch.setenv("AWS_PROFILE", "s43-no-such-profile")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    cfg = StoreConfig(bucket="b", prefix="p", endpoint_url="http://127.0.0.1:17")
    with pytest.raises(InputError, match="AWS profile 's43-no-such-profile' is not configured"):
        fast_put.put(cfg, "k", b"x", {})


def test_informational_answers_are_skipped_and_never_answer_the_next_request(
        peer_cfg: tuple[list[Peer], StoreConfig]) -> None:
    """A 100 Continue before the 200: the 200 is this request's answer, not the next one's
    (which the store refuses with 412: a create that lost must not read as won)."""
    peers, base = peer_cfg
    peer = _start(peers, [(b"HTTP/1.1 100 Continue\r\n\r\n" + ok('"first"'), False),
                          (error(412, "PreconditionFailed"), False)])
    cfg = _cfg(base, peer)
    assert fast_put.put(cfg, "k1", b"x", {}) == '"first"'
    with pytest.raises(PreconditionFailed):
        fast_put.put(cfg, "k2", b"{}", {"if-none-match": "*"}, condition="If-None-Match: *")


def test_bytes_past_an_answer_retire_the_connection(
        peer_cfg: tuple[list[Peer], StoreConfig]) -> None:
    peers, base = peer_cfg
    peer = _start(peers, [(ok('"first"') + ok('"stray"'), False), (ok('"second"'), False)])
    cfg = _cfg(base, peer)
    assert fast_put.put(cfg, "k1", b"x", {}) == '"first"'
    peer.thread.join(0.2)
    assert fast_put.put(cfg, "k2", b"x", {}) == '"second"'
    assert peer.connections == 2


def test_an_error_ended_by_closing_the_connection_is_read_whole(
        peer_cfg: tuple[list[Peer], StoreConfig]) -> None:
    from s43_ray.errors import NoSuchBucket

    peers, base = peer_cfg
    body = b"<Error><Code>NoSuchBucket</Code><Message>m</Message></Error>"
    peer = _start(peers, [(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n" + body, True)])
    with pytest.raises(NoSuchBucket):
        fast_put.put(_cfg(base, peer), "k", b"x", {})


def test_virtual_addressing_of_an_ip_endpoint_goes_through_boto3(
        peer_cfg: tuple[list[Peer], StoreConfig]) -> None:
    from dataclasses import replace

    _, cfg = peer_cfg
    assert not fast_put.enabled(replace(cfg, addressing_style="virtual"), 4096)
    named = replace(cfg, bucket="bucket-a", endpoint_url="http://s3.example.test:9",
                    addressing_style="virtual")
    assert fast_put.enabled(named, 4096)
    assert not fast_put.enabled(replace(named, bucket="Not_DNS"), 4096)
