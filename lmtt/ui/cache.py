"""A bounded, thread-safe cache of analyses shared by every session of one process.

Streamlit's own caches replay the elements a cached function draws, which rules
out progress bars inside them; this cache is plain Python, so the app draws
progress around it. Entries are evicted least-recently-used beyond
`max_entries`, and after `ttl_s` seconds. Two sessions asking for the same key
at once compute it once: the second waits for the first.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from lmtt.engine.memory import release_freed_memory

V = TypeVar("V")


class BoundedCache(Generic[V]):
    """`max_bytes` (with `size_of(value)`) bounds the memory too: one long prompt's analysis can weigh GBs.
    The newest entry always stays, whatever its size.

    An eviction frees what the evicted entries held in reference cycles with a full collection, once
    `collect_after_bytes` of them have gone since the last one (0: after every eviction). A collection costs 0.1-0.5 s
    in the app's server: once per small prompt, a dataset run of 8 twelve-token prompts spent 1.1 s of its 3.4 s in them."""

    def __init__(
        self,
        max_entries: int = 16,
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int | None = None,
        size_of: Callable[[V], int] = lambda _v: 0,
        collect_after_bytes: int = 0,
    ):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries, self.ttl_s, self._clock = max_entries, ttl_s, clock
        self.max_bytes, self._size_of = max_bytes, size_of
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._sizes: dict[Hashable, int] = {}
        self._lock = threading.Lock()
        self._pending: dict[Hashable, threading.Lock] = {}
        self._bytes_per_unit = 0.0  # of the last entry stored with units: what _make_room expects of the next
        self.collect_after_bytes, self._uncollected = collect_after_bytes, 0  # bytes evicted since the last collection
        self.hits = self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _lookup(self, key: Hashable) -> tuple[bool, V | None]:
        """Under self._lock: (found, value), dropping an expired entry."""
        if key not in self._entries:
            return False, None
        stamp, value = self._entries[key]
        if self.ttl_s is not None and self._clock() - stamp > self.ttl_s:
            self._drop(key)
            return False, None
        self._entries.move_to_end(key)
        return True, value

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            return self._lookup(key)[1]

    def get_or_compute(self, key: Hashable, compute: Callable[[], V], units: int = 0) -> tuple[V, bool]:
        """(value, was_cached). Exceptions from `compute` propagate and nothing is stored.

        `units` (an analysis's tokens) sizes a miss before it is computed, at the bytes per unit of the last entry stored
        with units: the entries that it would evict anyway are evicted first, so that it reuses their memory."""
        with self._lock:
            found, value = self._lookup(key)
            if found:
                self.hits += 1
                return value, True
            key_lock = self._pending.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:  # another thread may have finished it while we waited
                found, value = self._lookup(key)
                if found:
                    self.hits += 1
                    return value, True
            self.misses += 1
            self._make_room(units * self._bytes_per_unit)
            try:
                value = compute()
            finally:
                with self._lock:
                    self._pending.pop(key, None)
            size = self._size_of(value)
            with self._lock:
                self._entries[key] = (self._clock(), value)
                self._entries.move_to_end(key)
                self._sizes[key] = size
                if units:
                    self._bytes_per_unit = size / units
                evicted = self._evict(lambda: len(self._entries) > 1 and (len(self._entries) > self.max_entries or self._over_budget()))
            if evicted is not None and self._collect(evicted):
                release_freed_memory()  # an evicted analysis's GBs go back to the system, not to malloc's free lists
            return value, False

    def _make_room(self, expected_bytes: float) -> None:
        """Evict least-recently-used entries until one of `expected_bytes` fits the memory bound.

        Freed before a computation, an analysis's GBs are reused by the next one; freed after it (and handed back
        to the system), every page of the next one is faulted in afresh. A thread computing the default model's
        4,000-token analyses took 24-26 s each while it kept the last ones (1.2-1.5 million page faults), 21-22 s
        when it had freed them (0.4-0.55 million). Nothing is handed back here: the analysis does that at its end."""
        with self._lock:
            evicted = self._evict(lambda: self.max_bytes is not None and sum(self._sizes.values()) + expected_bytes > self.max_bytes)
        if evicted is not None:
            self._collect(evicted)

    def _evict(self, over: Callable[[], bool]) -> int | None:
        """Under self._lock: drop the least recently used entries while `over()`; the bytes they held (None: none went)."""
        freed = None
        while self._entries and over():
            freed = (freed or 0) + self._drop(next(iter(self._entries)))
        return freed

    def _collect(self, freed: int) -> bool:
        """After an eviction of `freed` bytes: a full collection once collect_after_bytes have gone since the last one
        (whether it ran)."""
        with self._lock:
            self._uncollected += freed
            if self._uncollected < self.collect_after_bytes:
                return False
            self._uncollected = 0
        _free_cycles()
        return True

    @property
    def nbytes(self) -> int:
        """The entries' sizes when they were stored."""
        with self._lock:
            return sum(self._sizes.values())

    def _over_budget(self) -> bool:
        return self.max_bytes is not None and sum(self._sizes.values()) > self.max_bytes

    def _drop(self, key: Hashable) -> int:
        """Under self._lock: remove an entry; the bytes it held."""
        del self._entries[key]
        return self._sizes.pop(key, 0)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._sizes.clear()


def _free_cycles() -> None:
    """Free what evicted entries leave in reference cycles: a page script that defines a function holds its namespace
    (its own globals), and that holds the page's analysis until a full collection. The app turns off Streamlit's
    collection after every run (.streamlit/config.toml), so this one runs only when an entry was evicted: 0.3-0.5 s in
    the app's server, where a 4,000-token analysis's memory then really is freed."""
    gc.collect()
