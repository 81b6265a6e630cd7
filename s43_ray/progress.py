"""Progress on stderr while members complete: a bar on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

# Redraw at most this often; a 100,000-member cohort must not spend its time drawing.
REDRAW_INTERVAL_S = 0.1
BAR_WIDTH = 30


class Progress:
    def __init__(self, total: int, *, label: str = "members", stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self.failed = 0
        self._t0 = time.monotonic()
        self._last = 0.0
        self._drawn = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Draw the empty bar as soon as work is submitted."""
        with self._lock:
            self._t0 = time.monotonic()
            if self.enabled:
                self._draw(self._t0)

    def status(self, text: str) -> None:
        """A one-line phase note on the terminal (e.g. while the gate verifies)."""
        if self.enabled:
            with self._lock:
                self.stream.write(f"\r\033[K{text}")
                self.stream.flush()
                self._drawn = True

    def advance(self, *, failed: bool = False) -> None:
        with self._lock:
            self.done += 1
            self.failed += failed
            now = time.monotonic()
            if self.enabled and (now - self._last >= REDRAW_INTERVAL_S or self.done == self.total):
                self._last = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        filled = int(BAR_WIDTH * self.done / self.total) if self.total else BAR_WIDTH
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        fails = f", {self.failed} failed" if self.failed else ""
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} {self.label}{fails} "
                          f"{now - self._t0:.1f}s")
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        """Erase the bar so that a log line can be written; it is redrawn on the next advance."""
        if self.enabled and self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
