"""Terminal progress bar for extraction: images, img/s, ETA, failures; silent when not on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from extractor.pipeline import Progress


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60:02d}:{seconds % 60:02d}"


class ProgressBar:
    """Callable for `extract(progress=...)`; redraws at most 10 times a second."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label, self.stream, self.width = label, stream or sys.stderr, width
        self.enabled = self.stream.isatty()
        self._last = 0.0
        self._drawn = False

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and p.done < p.total):
            return
        self._last = now
        filled = int(self.width * p.done / p.total) if p.total else self.width
        bar = "#" * filled + "-" * (self.width - filled)
        unit = "files/s" if p.phase == "hashing" else "img/s"
        line = (f"\r{self.label} {p.phase:<10} [{bar}] {p.done}/{p.total} {p.rate:6.1f} {unit} "
                f"ETA {_clock(p.eta)} failed {p.failed}")
        self.stream.write(line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
