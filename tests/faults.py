"""A fault-injecting HTTP proxy in front of the real S3 server (imported as ``faults``).

Requests pass through unchanged (SigV4 signatures stay valid: the Host header is forwarded as
the client signed it) unless a rule matches, in which case the proxy answers with an S3 error
(503 SlowDown, 500 InternalError, 403 AccessDenied, ...), resets the connection, or delays the
answer. Every request is logged, so tests can count the attempts botocore really made.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate"}


@dataclass
class Rule:
    """Answer ``times`` matching requests with a fault; ``times=None`` for every one."""

    method: str  # PUT, GET, HEAD, ... or "*"
    path_contains: str
    action: str  # "status" | "reset" | "delay"
    status: int = 503
    code: str = "SlowDown"
    delay: float = 0.0
    times: int | None = 1
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return (self.method in {"*", method}) and self.path_contains in path


@dataclass
class Seen:
    method: str
    path: str  # URL-decoded path, query stripped
    query: str
    status: int  # what the client got (0 for a reset)


@dataclass
class FaultProxy:
    upstream: str  # http://127.0.0.1:PORT of the real server
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def count(self, method: str, path_contains: str) -> int:
        with self._lock:
            return sum(1 for s in self.seen if s.method == method and path_contains in s.path)

    def _match(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.hits += 1
                    return rule
        return None

    def _record(self, method: str, raw_path: str, status: int) -> None:
        parts = urlsplit(raw_path)
        with self._lock:
            self.seen.append(Seen(method, unquote(parts.path), parts.query, status))

    def start(self) -> FaultProxy:
        proxy = self
        up = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = unquote(urlsplit(self.path).path)
                rule = proxy._match(self.command, path)
                if rule and rule.action == "reset":
                    proxy._record(self.command, self.path, 0)
                    # SO_LINGER 0: the client sees a connection reset, not a clean close.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if rule and rule.action == "status":
                    payload = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{rule.code}'
                               f"</Code><Message>injected by the test proxy</Message>"
                               f"<Resource>{path}</Resource></Error>").encode()
                    proxy._record(self.command, self.path, rule.status)
                    self.send_response(rule.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)
                                                           if self.command != "HEAD" else 0))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                if rule and rule.action == "delay":
                    time.sleep(rule.delay)
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True,
                                    skip_accept_encoding=True)
                    for name, value in self.headers.items():
                        if name.lower() not in _HOP_BY_HOP:
                            conn.putheader(name, value)
                    conn.endheaders(body or None)
                    resp = conn.getresponse()
                    data = resp.read()
                    proxy._record(self.command, self.path, resp.status)
                    self.send_response(resp.status)
                    for name, value in resp.getheaders():
                        if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                            self.send_header(name, value)
                    length_header = resp.getheader("Content-Length")
                    self.send_header("Content-Length", length_header if self.command == "HEAD"
                                     and length_header else str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
