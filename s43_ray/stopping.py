"""A stop asked for by a signal, remembered so that no wait loop outlives it.

The command line turns SIGINT, SIGTERM and SIGHUP into :class:`KeyboardInterrupt`, raised in the
main thread wherever it happens to be. Python runs a signal handler at the next bytecode of the
main thread, and an exception raised there is lost when that bytecode belongs to a finalizer or
a library's callback ("Exception ignored in ..."). A run whose interrupt was lost would go on
waiting for members that hang, for as long as its stall timeout. So the handler also calls
:func:`ask`, and every loop that waits on the cluster or the store calls :func:`check`, which
raises the interrupt again.
"""

from __future__ import annotations

_asked: int | None = None  # the signal that asked for the stop


def ask(signum: int) -> None:
    """Remember that a stop was asked for (called by the command line's signal handler)."""
    global _asked
    _asked = signum


def asked() -> bool:
    """Whether a stop was asked for (for a loop that must tidy up before :func:`check`)."""
    return _asked is not None


def check() -> None:
    """Raise :class:`KeyboardInterrupt` if a stop was asked for."""
    if _asked is not None:
        raise KeyboardInterrupt(f"signal {_asked} (asked earlier)")


def clear() -> None:
    """Forget the stop (the command has ended; a process running commands in turn goes on)."""
    global _asked
    _asked = None
