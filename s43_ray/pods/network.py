"""Pods on one machine, without containers: each pod is a network namespace, a mount namespace
with private tmpfs on ``/tmp`` and ``/dev/shm`` (Ray's object store), and a PID namespace whose
first process (the pause process, as in Kubernetes) holds them. The rest of the filesystem is
the host's, read and written alike: a pod is a network and a ``/tmp`` of its own, not a jail.
One bridge, in a namespace of its own, joins the pods' ``veth`` links; addresses come from
198.18.0.0/24 (RFC 2544, reserved for tests) and no pod has a default route: nothing can leave
the machine, and no address outside these namespaces is ever used.

Everything is torn down by :meth:`PodNetwork.close` (the ``with`` block's end, Ctrl-C, with
further signals held until it is done): each
pod's pause process is killed by its PID, which takes every process of its PID namespace (and
the mounts only they held) with it; then the namespaces are deleted, and their links with them.
A crash leaves namespaces behind, never processes (the pause processes die with their parent);
the next :class:`PodNetwork` removes what a dead owner left (:func:`sweep_stale`). A network's
owner holds a lock on its state file while it lives (``/run/s43-pods/<tag>.lock``); the sweep
takes only what nobody holds, so it never touches a live network and always finds a dead one,
whatever happened to the owner's PID since.

Needs root, ``ip`` (iproute2) and util-linux (``unshare``, ``nsenter``): :func:`unavailable`
says what is missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import ipaddress
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from ..errors import ClusterError

log = logging.getLogger("s43_ray.pods")

SUBNET = ipaddress.ip_network("198.18.0.0/24")  # RFC 2544: benchmarking, never routed
NS_PREFIX = "s43p-"  # every namespace this module makes; the sweep touches no other
NETNS_DIR = Path("/run/netns")  # where `ip netns add` keeps a namespace while it exists
STATE_DIR = Path("/run/s43-pods")  # <tag>.lock (held by the owner) and <tag>/ (its files)
TMPFS_SIZE = "1g"  # each pod's /tmp and /dev/shm (RAM-backed: only what is written counts)


def pause_script(shared: Sequence[str] = (), stash: str = "") -> str:
    """The pause process: private tmpfs on /tmp and /dev/shm, the ``shared`` host folders
    under /tmp bound back read-only (the code and its interpreter, when they live there, which
    the pod must run), then "ready", then nothing, forever. ``stash``: an empty host folder
    outside /tmp where the host's /tmp is held while they are bound."""
    steps = []
    if shared:
        steps.append(f"mount --bind /tmp {shlex.quote(stash)}")
    steps.append(f"mount -t tmpfs -o size={TMPFS_SIZE},mode=1777 tmpfs /tmp")
    for path in shared:
        inner = shlex.quote(os.path.join(stash, os.path.relpath(path, "/tmp")))
        steps += [f"mkdir -p {shlex.quote(path)}",
                  f"mount --bind {inner} {shlex.quote(path)}",
                  f"mount -o remount,bind,ro {shlex.quote(path)}"]
    if shared:
        steps.append(f"umount -l {shlex.quote(stash)}")
    steps += [f"mount -t tmpfs -o size={TMPFS_SIZE},mode=1777 tmpfs /dev/shm", "echo ready",
              "exec sleep infinity"]
    return " && ".join(steps)
START_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1
_TOOLS = ("ip", "unshare", "nsenter")
# A pod's namespaces besides the network: PIDs (its first process takes the rest with it) and
# mounts (private, so its tmpfs mounts are nobody else's).
_HOLD = ("unshare", "--pid", "--kill-child", "--mount-proc", "--propagation", "private")


def unavailable() -> str:
    """Why pods cannot be made here ("" when they can): not root, a tool missing, or the
    kernel refusing a network namespace or a veth link."""
    if os.geteuid() != 0:
        return "pods need root (network and mount namespaces)"
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        return f"pods need {', '.join(missing)} (iproute2, util-linux)"
    probe = f"{NS_PREFIX}probe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
        _ip("-n", probe, "link", "add", "s43probe0", "type", "veth", "peer", "name",
            "s43probe1")
        _ip("-n", probe, "link", "add", "s43probebr", "type", "bridge")
        pause = subprocess.run(["ip", "netns", "exec", probe, *_HOLD, "sh", "-c",
                                pause_script().replace("exec sleep infinity", "true")],
                               capture_output=True, text=True, timeout=30)
        if pause.returncode != 0 or "ready" not in pause.stdout:
            return ("the kernel refused a pod's PID or mount namespace: "
                    f"{pause.stderr.strip() or pause.returncode}")
    except ClusterError as exc:
        return f"the kernel refused a pod network: {exc}"
    finally:
        with contextlib.suppress(ClusterError):
            _ip("netns", "del", probe)
    return ""


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise ClusterError(f"ip {' '.join(args)} failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Pod:
    """One pod: its namespace, address, link, and the pause process holding it."""

    name: str  # role: store, head, worker-1, ...
    netns: str
    address: str
    link: str  # the pod's link end in the bridge namespace (partition = set it down)
    holder: subprocess.Popen[bytes] | None = None  # `ip netns exec ... unshare ...`
    pause_pid: int = 0  # PID 1 of the pod's PID namespace, as the host sees it
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def enter(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as a command run inside this pod (all of its namespaces, cwd ``/``)."""
        return ["nsenter", "-t", str(self.pause_pid), "-p", "-n", "-m", "--wd=/", "--",
                *argv]

    def start(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              log_file: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the pod; it dies with the pod (and with this process)."""
        proc = subprocess.Popen(self.enter(argv), env=dict(env) if env is not None else None,
                                stdin=subprocess.DEVNULL, stdout=log_file or subprocess.DEVNULL,
                                stderr=subprocess.STDOUT if log_file else subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)
        self.processes.append(proc)
        return proc


class PodNetwork:
    """``with PodNetwork(["store", "head", "worker-1", ...]) as net: net.pods["head"]``."""

    def __init__(self, roles: Sequence[str], *, shared: Sequence[str] = ()) -> None:
        """``shared``: host folders under /tmp every pod must see (read-only), e.g. a checkout
        and its venv there; everything else of the host's /tmp stays the host's."""
        if len(set(roles)) != len(roles) or len(roles) > SUBNET.num_addresses - 3:
            raise ValueError(f"pod roles {list(roles)} must be unique and fit {SUBNET}")
        self.tag = secrets.token_hex(3)
        self.bridge_ns = f"{NS_PREFIX}{self.tag}-br"
        hosts = iter(SUBNET.hosts())
        next(hosts)  # .1 is left for a gateway that never exists
        self.pods: dict[str, Pod] = {}
        for i, role in enumerate(roles):
            self.pods[role] = Pod(role, f"{NS_PREFIX}{self.tag}-{i}", str(next(hosts)),
                                  f"s43{self.tag}v{i}")
        self._made: list[str] = []
        self._lock: IO[str] | None = None
        self.shared = sorted({p for p in shared if p.startswith("/tmp/")})

    @property
    def work_dir(self) -> Path:
        """Files of this network's processes (logs, the store's data): host paths the pods
        see, removed with the network, and by the sweep after a crash."""
        return STATE_DIR / self.tag

    def __enter__(self) -> PodNetwork:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- making it ---------------------------------------------------------------------------
    def open(self) -> None:
        sweep_stale()
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self._lock = open(STATE_DIR / f"{self.tag}.lock", "w")  # noqa: SIM115 - held till close
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self._lock.write(f"{os.getpid()}\n")
        self._lock.flush()
        self.work_dir.mkdir(mode=0o700)
        self._netns(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for pod in self.pods.values():
            self._netns(pod.netns)
            if self.shared:
                (self.work_dir / f"host-tmp-{pod.name}").mkdir()
            peer = f"{pod.link}p"
            _ip("-n", self.bridge_ns, "link", "add", pod.link, "type", "veth", "peer", "name",
                peer, "netns", pod.netns)
            _ip("-n", self.bridge_ns, "link", "set", pod.link, "master", "br0", "up")
            _ip("-n", pod.netns, "link", "set", peer, "name", "eth0")
            _ip("-n", pod.netns, "addr", "add", f"{pod.address}/{SUBNET.prefixlen}", "dev",
                "eth0")
            _ip("-n", pod.netns, "link", "set", "eth0", "up")
            self._hold(pod)

    def _netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _hold(self, pod: Pod) -> None:
        """The pause process: a new PID and mount namespace, a private tmpfs on /tmp."""
        pod.holder = subprocess.Popen(
            ["ip", "netns", "exec", pod.netns, *_HOLD, "sh", "-c",
             pause_script(self.shared, str(self.work_dir / f"host-tmp-{pod.name}"))],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent)
        assert pod.holder.stdout is not None
        ready = _line_within(pod.holder.stdout, START_TIMEOUT_S)
        child = _children(pod.holder.pid)
        if ready != b"ready\n" or not child:
            pod.holder.kill()
            err = pod.holder.stderr.read().decode() if pod.holder.stderr else ""
            why = err.strip() or f"not ready within {START_TIMEOUT_S:.0f}s"
            raise ClusterError(f"pod {pod.name} could not be made: {why}")
        pod.pause_pid = child[0]

    # -- faults ------------------------------------------------------------------------------
    def partition(self, role: str) -> None:
        """Cut the pod's link: it and the others stop reaching each other, as on a real
        network (established connections hang, new ones time out)."""
        _ip("-n", self.bridge_ns, "link", "set", self.pods[role].link, "down")

    def heal(self, role: str) -> None:
        _ip("-n", self.bridge_ns, "link", "set", self.pods[role].link, "up")

    def kill(self, role: str) -> None:
        """Kill every process of the pod (its pause process, PID 1 of its namespace). Once:
        the PID is forgotten, so it is never signalled again after it may have been reused."""
        pod = self.pods[role]
        pid, pod.pause_pid = pod.pause_pid, 0
        if pid:
            _kill(pid)

    # -- tearing it down ---------------------------------------------------------------------
    def close(self) -> None:
        """Tear everything down; Ctrl-C or SIGTERM meanwhile wait until it is done."""
        with _signals_held():
            for role in self.pods:
                self.kill(role)
            for pod in self.pods.values():
                for proc in [*pod.processes, *([pod.holder] if pod.holder else [])]:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(5)
                    for stream in (proc.stdout, proc.stderr):
                        if stream:
                            stream.close()
            for name in reversed(self._made):
                _delete_netns(name)
            self._made.clear()
            shutil.rmtree(self.work_dir, ignore_errors=True)
            if self._lock is not None:
                with contextlib.suppress(FileNotFoundError):
                    (STATE_DIR / f"{self.tag}.lock").unlink()
                self._lock.close()  # releases the lock
                self._lock = None

    def leftovers(self) -> list[str]:
        """What of this network still exists (namespaces); [] after :meth:`close`."""
        return [n for n in list_netns() if n.startswith(f"{NS_PREFIX}{self.tag}-")]


def _line_within(stream: IO[bytes], seconds: float) -> bytes:
    """One line from ``stream``, or b"" when none came within ``seconds``."""
    import select

    readable, _, _ = select.select([stream], [], [], seconds)
    return stream.readline() if readable else b""


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP are held (delivered after the block), so that a second
    Ctrl-C cannot leave half a teardown behind."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _delete_netns(name: str) -> None:
    """Kill what still runs in the namespace (by PID), then delete it."""
    if not (NETNS_DIR / name).exists():
        return
    for _ in range(3):
        pids = [int(p) for p in _ip("netns", "pids", name).split()]
        if not pids:
            break
        for pid in pids:
            _kill(pid)
        time.sleep(0.2)
    with contextlib.suppress(ClusterError):
        _ip("netns", "del", name)


def list_netns() -> list[str]:
    try:
        out = _ip("netns", "list")
    except ClusterError:
        return []
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def sweep_stale() -> list[str]:
    """Delete what pod networks whose owner is gone left (namespaces, files): a crash, a
    SIGKILL, a lost terminal. A live owner holds its lock, and its network is left alone.
    Returns the namespaces removed."""
    removed: list[str] = []
    tags: dict[str, list[str]] = {}
    for name in list_netns():
        if name.startswith(f"{NS_PREFIX}probe"):
            pid = name[len(f"{NS_PREFIX}probe"):]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                _delete_netns(name)
                removed.append(name)
        elif name.startswith(NS_PREFIX):
            tags.setdefault(name[len(NS_PREFIX):].split("-", 1)[0], []).append(name)
    if STATE_DIR.is_dir():
        for entry in STATE_DIR.iterdir():
            tags.setdefault(entry.name.removesuffix(".lock"), [])
    for tag, names in tags.items():
        with _owner_gone(tag) as gone:
            if not gone:
                continue
            for name in names:
                _delete_netns(name)
            removed.extend(names)
            shutil.rmtree(STATE_DIR / tag, ignore_errors=True)
    if removed:
        log.warning("removed %d namespace(s) a dead smoke left behind: %s", len(removed),
                    ", ".join(sorted(removed)))
    return removed


@contextlib.contextmanager
def _owner_gone(tag: str) -> Iterator[bool]:
    """True, holding the network's lock, when its owner is gone; False when it lives."""
    path = STATE_DIR / f"{tag}.lock"
    try:
        fh = open(path, "a")  # noqa: SIM115 - closed below
    except OSError:
        yield True  # no lock file: an owner that died before taking it, or after cleaning up
        return
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    finally:
        fh.close()
