"""Progress of long work: a bar redrawn in place on a terminal, plain lines otherwise (a log
file or CI gets a line every tenth of the way, never a stream of carriage returns)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import IO


@dataclass
class ProgressBar:
    """``total`` steps of work called ``label``; :meth:`advance` after each."""

    total: int
    label: str
    stream: IO[str] = field(default_factory=lambda: sys.stderr)
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    tty: bool = field(init=False)
    _next_line: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def advance(self, status: str = "", steps: int = 1) -> None:
        self.done += steps
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.tty:
            width = 30
            filled = width * self.done // max(self.total, 1)
            bar = f"[{'#' * filled}{'.' * (width - filled)}]"
            self.stream.write(
                f"\r\033[K{self.label} {bar} {self.done}/{self.total} {rate:.2f} it/s {status}"
            )
            if self.done >= self.total:
                self.stream.write("\n")
        elif self.done >= self._next_line or self.done >= self.total:
            self.stream.write(f"{self.label} {self.done}/{self.total} {rate:.2f} it/s {status}\n")
            self._next_line = self.done + max(self.total // 10, 1)
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line if the work stopped before its total."""
        if self.tty and self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()
