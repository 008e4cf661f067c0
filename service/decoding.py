"""Upload decoding for the service: its own bounded thread pool (light endpoints never wait behind decodes) and a
memory budget shared by every request (a decode waits until its cost fits; one that can never fit is refused)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import numpy as np

from extractor.decode import DecodeError, Limits, preprocess, probe


class MemoryBudget:
    """Bytes that decodes in flight may hold together; `hold(n)` waits (without blocking the event loop)."""

    def __init__(self, total: int) -> None:
        self.total, self.used = total, 0
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # made on first use, inside the server's event loop
            self._changed = asyncio.Condition()
        return self._changed

    @asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[None]:
        if n > self.total:
            raise DecodeError(f"this image needs about {n >> 20} MB to decode, more than this server decodes at once "
                              f"({self.total >> 20} MB, HEADSTART_DECODE_MEMORY_MB); send a smaller image",
                              status=413)
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: self.used + n <= self.total)
            self.used += n
        try:
            yield
        finally:
            async with changed:
                self.used -= n
                changed.notify_all()


class Decoder:
    """`await decoder.image(data, size, limits)` -> the backbone's uint8 input, within the budget."""

    def __init__(self, threads: int, budget_bytes: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="headstart-decode")
        self.budget = MemoryBudget(budget_bytes)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def image(self, data: bytes, size: int, limits: Limits, method: str | None = None) -> np.ndarray:
        """`method`: a device-decode preprocessing method when the head's features were made that way."""
        cost = await self.run(probe, data, size, limits, bool(method))  # the header only: cheap
        async with self.budget.hold(cost):
            if method:
                from extractor.devicedecode import preprocess_on

                return await self.run(preprocess_on, data, size, limits, method)
            return await self.run(preprocess, data, size, limits)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def default_threads() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0))))
