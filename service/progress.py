"""Terminal progress for extraction and training, drawn by tqdm: one bar per phase (hashing files, extracting
images, views), with done/total, rate, ETA and failures; silent when stderr is not a terminal."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from extractor.summary import Progress

UNITS = {"hashing": "files", "extracting": "img", "views": "views", "training": "epochs"}


class ProgressBar:
    """Callable for `extract(progress=...)`: `bar(Progress)`; a new phase closes the bar and starts another."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label, self.stream = label, stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.phase: str | None = None
        self.bar: tqdm | None = None

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        if p.phase != self.phase or self.bar is None:
            self.close()
            self.phase = p.phase
            self.bar = tqdm(total=p.total, desc=f"{self.label} {p.phase}", unit=UNITS.get(p.phase, "it"),
                            file=self.stream, dynamic_ncols=True, mininterval=0.1, leave=True)
        self.bar.total = p.total
        self.bar.n = p.done
        self.bar.set_postfix(failed=p.failed, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
