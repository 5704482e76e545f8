"""The bounded analysis cache: LRU bound, TTL, one computation per key under concurrency."""

import threading
import time

import pytest

from lmtt.ui.cache import BoundedCache


def test_evicts_least_recently_used():
    cache = BoundedCache(max_entries=2)
    for k in "abc":
        cache.get_or_compute(k, lambda k=k: k.upper())
    assert len(cache) == 2 and cache.get("a") is None and cache.get("c") == "C"


def test_ttl_expires_entries():
    now = [0.0]
    cache = BoundedCache(max_entries=4, ttl_s=10, clock=lambda: now[0])
    cache.get_or_compute("k", lambda: 1)
    now[0] = 5
    assert cache.get_or_compute("k", lambda: 2) == (1, True)
    now[0] = 16
    assert cache.get_or_compute("k", lambda: 3) == (3, False)


def test_failures_are_not_cached():
    cache = BoundedCache()
    with pytest.raises(ZeroDivisionError):
        cache.get_or_compute("k", lambda: 1 / 0)
    assert cache.get_or_compute("k", lambda: 7) == (7, False)


def test_concurrent_requests_compute_once():
    cache, calls = BoundedCache(), []

    def slow():
        calls.append(1)
        time.sleep(0.2)
        return 42

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("k", slow)[0])) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results == [42] * 6 and len(calls) == 1


def test_a_memory_budget_evicts_the_oldest_but_keeps_the_newest():
    cache = BoundedCache(max_entries=10, max_bytes=100, size_of=len)
    cache.get_or_compute("a", lambda: "x" * 60)
    cache.get_or_compute("b", lambda: "y" * 30)
    assert len(cache) == 2 and cache.nbytes == 90
    cache.get_or_compute("c", lambda: "z" * 20)  # 110 > 100: "a" goes
    assert cache.get("a") is None and cache.get("b") and cache.nbytes == 50
    cache.get_or_compute("huge", lambda: "w" * 500)  # over the budget alone: it stays, the rest go
    assert len(cache) == 1 and cache.get("huge") and cache.nbytes == 500


def test_an_analysis_weighs_what_it_holds(tiny_runner):
    import lmtt
    from tests.tiny_models import token_ids

    analysis = lmtt.analyze(tiny_runner, token_ids(12))
    t = analysis.trace
    names = ("resid", "attn_out", "ffn_out", "queries", "keys", "values", "neuron_acts")
    lower = sum(x.numel() * 4 for name in names for x in getattr(t, name))
    lower += analysis.contributions.attn_edges.numel() * 4
    assert lower <= analysis.nbytes <= 1.5 * lower + t.logits.numel() * 4 + 2**16  # the graph's arrays are views: not counted twice


def test_freed_memory_goes_back_to_the_system():
    """After a large tensor is freed in another thread, a trim leaves RSS no higher than before it was allocated (+ slack)."""
    import threading

    import psutil
    import torch

    from lmtt.engine.memory import release_freed_memory

    proc = psutil.Process()
    release_freed_memory()
    before = proc.memory_info().rss

    def churn():  # many medium tensors from a worker thread: glibc serves them from that thread's arena
        kept = [torch.ones(200_000) for _ in range(1500)]  # ~1.2 GB in 800 KB pieces
        del kept

    t = threading.Thread(target=churn)
    t.start()
    t.join()
    assert release_freed_memory()
    assert proc.memory_info().rss < before + 300 * 2**20


def test_eviction_hands_memory_back(monkeypatch):
    """An evicted entry's memory is trimmed at once, not left in malloc's free lists until the next analysis."""
    import lmtt.ui.cache

    trims = []
    monkeypatch.setattr(lmtt.ui.cache, "release_freed_memory", lambda: trims.append(1) or True)
    cache = lmtt.ui.cache.BoundedCache(max_entries=2)
    for key in "ab":
        cache.get_or_compute(key, lambda k=key: k)
    assert trims == []  # nothing evicted yet
    cache.get_or_compute("c", lambda: "c")
    assert trims == [1] and cache.get("a") is None


class _Held:
    """A value in a reference cycle (as a page's analysis is, through the page's namespace): freed by a collection only."""

    def __init__(self, size: int):
        self.size, self.me = size, self


def test_a_sized_miss_frees_what_it_would_evict_before_it_is_computed(monkeypatch):
    """60 + 30 bytes held, budget 100, and a 2-unit miss at the last entry's 10 bytes per unit: the oldest goes first."""
    import weakref

    import lmtt.ui.cache

    trims = []
    monkeypatch.setattr(lmtt.ui.cache, "release_freed_memory", lambda: trims.append(1) or True)
    cache = BoundedCache(max_entries=10, max_bytes=100, size_of=lambda v: v.size)
    first, _ = cache.get_or_compute("a", lambda: _Held(60), units=6)
    cache.get_or_compute("b", lambda: _Held(30), units=3)
    gone = weakref.ref(first)
    del first
    seen = []

    def compute():
        seen.append((gone() is None, cache.get("b") is not None, list(trims)))
        return _Held(20)

    cache.get_or_compute("c", compute, units=2)
    assert seen == [(True, True, [])]  # "a" freed (its cycle collected), "b" kept, nothing handed back before computing
    assert cache.get("a") is None and cache.nbytes == 50


def test_a_miss_without_units_evicts_only_after_it_is_computed():
    import weakref

    cache = BoundedCache(max_entries=10, max_bytes=100, size_of=lambda v: v.size)
    kept = weakref.ref(cache.get_or_compute("a", lambda: _Held(60))[0])
    cache.get_or_compute("b", lambda: _Held(30))
    seen = []
    cache.get_or_compute("c", lambda: seen.append(kept() is not None) or _Held(20))
    assert seen == [True] and cache.get("a") is None and kept() is None and cache.nbytes == 50


def test_the_app_server_runs_with_one_malloc_arena():
    """The Makefile's `run` starts the server as the tools' and tests' servers are started (SERVER_ENV)."""
    from pathlib import Path

    from lmtt.tools.serve import SERVER_ENV

    run = Path(__file__).parents[1].joinpath("Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert SERVER_ENV and all(f"{k}={v} " in run for k, v in SERVER_ENV.items())


def test_small_evictions_share_one_collection(monkeypatch):
    """collect_after_bytes 100: evicting entries of 30 bytes collects (and hands memory back) once 100 bytes have gone
    since the last collection, not at every eviction; an entry of 150 bytes is collected at once. Until then a small
    entry in a reference cycle stays alive: at most collect_after_bytes of them."""
    import weakref

    import lmtt.ui.cache

    trims, collections = [], []
    monkeypatch.setattr(lmtt.ui.cache, "release_freed_memory", lambda: trims.append(1) or True)
    real = lmtt.ui.cache._free_cycles
    monkeypatch.setattr(lmtt.ui.cache, "_free_cycles", lambda: collections.append(1) or real())
    cache = BoundedCache(max_entries=1, size_of=lambda v: v.size, collect_after_bytes=100)
    first, _ = cache.get_or_compute("a", lambda: _Held(30))
    gone = weakref.ref(first)
    del first
    for n, key in enumerate("bcd", start=1):  # each evicts the one before: 30, 60, 90 bytes gone
        cache.get_or_compute(key, lambda: _Held(30))
        assert collections == [] and trims == [], n
    assert gone() is not None  # "a" waits in its cycle
    cache.get_or_compute("e", lambda: _Held(30))  # 120 bytes gone: one collection
    assert collections == [1] and trims == [1] and gone() is None
    cache.get_or_compute("f", lambda: _Held(150))  # evicts "e" (30): 30 since the last collection, none yet
    cache.get_or_compute("g", lambda: _Held(10))  # evicts "f" (150): collected at once
    assert collections == [1, 1] and trims == [1, 1]
