"""How many decoding processes a run starts: by default the cores this process may use less one; never more than
the batches need, and a count a user gives is checked before any process starts."""

from __future__ import annotations

import math
import os
import warnings

from extractor.errors import HeadstartError

# torch warns (twice, with its source lines) when a DataLoader gets more workers than cores; check_workers decides
# what is accepted, and more readers than cores is a choice for slow storage
warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def default_workers() -> int:
    """The cores this process may use, less one for the main process (the forward, the writer); no fixed cap, so a
    16-core GPU host decodes on 15."""
    return max(1, usable_cores() - 1)


def most_workers() -> int:
    """The largest count accepted: 4 per usable core (slow network storage can keep more readers than cores busy),
    and at least 8."""
    return max(8, 4 * usable_cores())


def check_workers(workers: int | None) -> None:
    """Refuse a count below 0 or above most_workers() (each worker is a process: 100000 of them would exhaust
    the machine before the first image)."""
    if workers is not None and not 0 <= workers <= most_workers():
        raise HeadstartError(f"--workers {workers}: expected an integer from 0 (decode in this process) to "
                             f"{most_workers()} (4 per usable core, at least 8; {usable_cores()} cores here)")


def workers_for(workers: int | None, items: int, batch_size: int) -> int:
    """`workers` (None: the default), but no more than there are batches of `items`: a few new images start one
    worker, not one per core."""
    wanted = default_workers() if workers is None else workers
    return min(wanted, math.ceil(items / max(1, batch_size)))
