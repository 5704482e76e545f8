"""Limits for a shared server: a FIFO gate on concurrent analyses and a per-session rate limit.

Plain Python (no Streamlit), so they are tested directly and reused by any front end.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class AnalysisGate:
    """At most `limit` analyses run at once; the rest wait in arrival order and never fail.

    `slot(on_wait)` blocks until it is this caller's turn, calling on_wait(position)
    (1 = next in line) whenever its place in the queue is known or changes.
    """

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._cond = threading.Condition()
        self._running = 0
        self._queue: deque[int] = deque()
        self._tickets = itertools.count()

    @property
    def running(self) -> int:
        with self._cond:
            return self._running

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)

    @contextmanager
    def slot(self, on_wait: Callable[[int], None] | None = None, poll_s: float = 0.5) -> Iterator[None]:
        ticket = next(self._tickets)
        with self._cond:
            self._queue.append(ticket)
            last = None
            while self._running >= self.limit or self._queue[0] != ticket:
                position = self._queue.index(ticket) + 1
                if on_wait is not None and position != last:
                    on_wait(position)
                    last = position
                self._cond.wait(poll_s)
            self._queue.popleft()
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()


class RateLimiter:
    """At most `per_minute` events in any 60 s window (one limiter per session)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self._clock = clock
        self._events: deque[float] = deque()
        self._lock = threading.Lock()

    def try_acquire(self) -> float:
        """0 when the event may go ahead (and it is counted), else the seconds to wait."""
        with self._lock:
            now = self._clock()
            while self._events and now - self._events[0] >= 60:
                self._events.popleft()
            if len(self._events) >= self.per_minute:
                return 60 - (now - self._events[0])
            self._events.append(now)
            return 0.0
