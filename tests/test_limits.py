"""The analysis gate queues in order and never fails; the rate limiter counts a sliding minute."""

import threading
import time

import pytest

from lmtt.ui.limits import AnalysisGate, RateLimiter


def test_gate_runs_at_most_limit_and_queues_the_rest_in_order():
    gate, running, peak, order, positions = AnalysisGate(2), [0], [0], [], {}
    lock = threading.Lock()

    def work(k: int) -> None:
        with gate.slot(on_wait=lambda p: positions.setdefault(k, p), poll_s=0.01):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                order.append(k)
            time.sleep(0.05)
            with lock:
                running[0] -= 1

    threads = []
    for k in range(8):
        threads.append(threading.Thread(target=work, args=(k,)))
        threads[-1].start()
        time.sleep(0.005)  # arrive in order
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert peak[0] == 2 and sorted(order) == list(range(8))
    assert order[2:] == sorted(order[2:])  # first come, first served
    assert positions and min(positions.values()) >= 1


def test_gate_releases_its_slot_when_the_analysis_fails():
    gate = AnalysisGate(1)
    with pytest.raises(RuntimeError):
        with gate.slot():
            raise RuntimeError("boom")
    with gate.slot():
        assert gate.running == 1
    assert gate.running == 0 and gate.waiting == 0


def test_rate_limiter_sliding_minute():
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert limiter.try_acquire() == 0 and limiter.try_acquire() == 0
    now[0] = 30
    assert limiter.try_acquire() == pytest.approx(30)
    now[0] = 61
    assert limiter.try_acquire() == 0
