"""The live progress line on stderr: rewritten in place on a terminal, periodic otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

TTY_INTERVAL_S = 0.5
PLAIN_INTERVAL_S = 5.0


class Progress:
    """Shows the latest status line; `\\r`-updated on a TTY, one line every few seconds if not."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self._interval = TTY_INTERVAL_S if self.tty else PLAIN_INTERVAL_S
        self._last = 0.0
        self._width = 0

    def due(self) -> bool:
        return self.enabled and time.monotonic() - self._last >= self._interval

    def show(self, line: str) -> None:
        if not self.enabled:
            return
        self._last = time.monotonic()
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, message: str) -> None:
        """A line that stays (an event), printed above the progress line."""
        if not self.enabled:
            return
        if self.tty and self._width:
            self.stream.write("\r" + message.ljust(self._width) + "\n")
            self._width = 0
            self._last = 0.0  # redraw the progress line at the next chance
        else:
            self.stream.write(message + "\n")
        self.stream.flush()

    def done(self) -> None:
        """End the in-place line so that what follows starts on a fresh line."""
        if self.enabled and self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
