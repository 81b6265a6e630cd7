"""One HTTP/1.1 connection for :mod:`.s3_fast_put`: a request sent with one ``sendall`` (small
bodies), its answer parsed here.

Strict where a lenient parser would pair a request with the wrong answer: informational (1xx)
answers are skipped, a connection with bytes past an answer is reported for closing, and an
over-long line, too many headers or a negative length is an error. TLS certificates are
checked against ``AWS_CA_BUNDLE``, else the bundle botocore uses.
"""

from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
from functools import lru_cache

# An answer to a PUT is headers and at most a short XML error; more is not an S3 answer.
_MAX_LINE = 64 * 1024
_MAX_ANSWER = 1024**2
_MAX_HEADERS = 100
# Bodies up to this size go out with the request's head in one send (one copy of the body).
ONE_SEND_MAX = 256 * 1024


@lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    """Certificates checked against AWS_CA_BUNDLE, else the bundle botocore uses."""
    from botocore.httpsession import get_cert_path

    return ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE")
                                      or get_cert_path(True))


class Conn:
    """One HTTP/1.1 connection: a request is sent with one ``sendall`` (small bodies), its
    answer parsed here (status, headers, a Content-Length or chunked body)."""

    def __init__(self, host: str, port: int, *, https: bool, connect_timeout: float,
                 read_timeout: float) -> None:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if https:
            sock = _tls().wrap_socket(sock, server_hostname=host)
        sock.settimeout(read_timeout)
        self._timeout = read_timeout
        self.sock = sock
        self.rfile = sock.makefile("rb")

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def dropped(self) -> bool:
        """An idle connection is readable only when the server closed it (or sent junk)."""
        try:
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def exchange(self, head: bytes, body: bytes | memoryview
                 ) -> tuple[int, dict[str, str], bytes, bool]:
        """Send one request; its answer's status, headers (lower-case names), body, and
        whether the server closes the connection after it."""
        if memoryview(body).nbytes <= ONE_SEND_MAX:
            self.sock.sendall(head + body)
        else:
            self.sock.sendall(head)
            self.sock.sendall(body)
        for _ in range(10):  # 1xx answers (100 Continue, 103 Early Hints) precede the final one
            status, version, headers = self._head()
            if not 100 <= status < 200:
                break
        else:
            raise http.client.HTTPException("only informational (1xx) answers")
        closes = (headers.get("connection", "").lower() == "close" or version == b"HTTP/1.0")
        body = self._body(status, headers, closes)
        # Bytes past the answer belong to no request: never read them as the next one's.
        closes = closes or self._leftover()
        return status, headers, body, closes

    def _line(self) -> bytes:
        line = self.rfile.readline(_MAX_LINE)
        if line and not line.endswith(b"\n"):
            raise http.client.LineTooLong(f"answer line longer than {_MAX_LINE} bytes")
        return line

    def _head(self) -> tuple[int, bytes, dict[str, str]]:
        line = self._line()
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise http.client.BadStatusLine(repr(line[:100]) if line else "no answer")
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n"):
                return int(parts[1]), parts[0], headers
            if not line:
                raise http.client.IncompleteRead(b"", None)
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        raise http.client.HTTPException(f"answer with more than {_MAX_HEADERS} headers")

    def _leftover(self) -> bool:
        """Whether anything was sent past the answer (looked at without waiting)."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        self.sock.setblocking(False)
        try:
            return bool(self.rfile.peek(1))
        except (BlockingIOError, ssl.SSLWantReadError):
            return False
        except OSError:
            return True
        finally:
            self.sock.settimeout(self._timeout)

    def _body(self, status: int, headers: dict[str, str], closes: bool) -> bytes:
        if status in (204, 304):
            return b""
        if closes and "content-length" not in headers and "transfer-encoding" not in headers:
            data = self.rfile.read(_MAX_ANSWER + 1)  # the answer ends where the connection does
            if len(data) > _MAX_ANSWER:
                raise http.client.HTTPException(f"answer larger than {_MAX_ANSWER} bytes")
            return data
        if "chunked" in headers.get("transfer-encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline(_MAX_LINE).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(_MAX_LINE) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                if len(out) + size > _MAX_ANSWER:
                    raise http.client.HTTPException(f"answer larger than {_MAX_ANSWER} bytes")
                out += self._exactly(size)
                self.rfile.readline(_MAX_LINE)
        length = int(headers.get("content-length", "0") or 0)
        if length < 0 or length > _MAX_ANSWER:
            raise http.client.HTTPException(f"answer of {length} bytes to a PUT")
        return self._exactly(length)

    def _exactly(self, n: int) -> bytes:
        data = self.rfile.read(n) if n else b""
        if len(data) < n:
            raise http.client.IncompleteRead(data, n - len(data))
        return data
