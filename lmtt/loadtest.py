"""Load test: `python -m lmtt.loadtest [--sessions 1,4,8] [--requests 3] [--time-limit 600]`.

Starts the app on loopback, then drives K browser sessions at once (Playwright
contexts on Debian's Chromium). Each session opens the graph for a prompt of its
own (a cache miss, so the model really runs) `--requests` times and waits for the
rendered graph. Reports p50/p95 time to a rendered graph, errors, and the server's
RSS before, at peak during, and after, for each K. Writes a section of
the "Load test" section of bench/RESULTS.md unless --out ''.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import psutil

from lmtt.report import RESULTS, write_section
from lmtt.serve import CHROMIUM, CHROMIUM_ARGS, streamlit_server

PROMPTS = (
    "The capital of France is",
    "The Eiffel Tower stands in the city of",
    "When Mary and John went to the store, John gave a drink to",
    "The opposite of hot is",
)


class RssSampler:
    """Samples the server process tree's RSS in the background."""

    def __init__(self, pid: int, period_s: float = 0.25):
        self.proc, self.period_s, self.peak_mb = psutil.Process(pid), period_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now_mb(self) -> float:
        procs = [self.proc, *self.proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self.now_mb())
            self._stop.wait(self.period_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_exc):
        self._stop.set()
        self._thread.join()


async def _session(browser, base: str, index: int, requests: int, deadline: float, times: list[float], errors: list[str]) -> None:
    from playwright.async_api import expect

    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await ctx.new_page()
    try:
        for r in range(requests):
            if time.monotonic() > deadline:
                errors.append(f"session {index}: time limit reached before request {r}")
                return
            prompt = f"{PROMPTS[(index + r) % len(PROMPTS)]} (session {index}, request {r})"
            start = time.perf_counter()
            try:
                await page.goto(f"{base}/?prompt={quote(prompt)}")
                left_ms = max(1_000, (deadline - time.monotonic()) * 1000)
                await expect(page.get_by_text("which predicts")).to_be_visible(timeout=left_ms)
                await expect(page.locator(".js-plotly-plot .scatterlayer").first).to_be_visible(timeout=left_ms)
                if await page.locator('[data-testid="stException"]').count():
                    raise RuntimeError("an exception was shown")
                times.append(time.perf_counter() - start)
            except Exception as e:  # noqa: BLE001 - counted and reported, the run goes on
                errors.append(f"session {index} request {r}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
    finally:
        await ctx.close()


async def _drive(base: str, sessions: int, requests: int, time_limit_s: float) -> tuple[list[float], list[str], float]:
    from playwright.async_api import async_playwright

    times: list[float] = []
    errors: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        deadline = time.monotonic() + time_limit_s
        start = time.perf_counter()
        await asyncio.gather(*(_session(browser, base, k, requests, deadline, times, errors) for k in range(sessions)))
        wall = time.perf_counter() - start
        await browser.close()
    return times, errors, wall


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(levels: list[int], requests: int, time_limit_s: float) -> list[dict]:
    """One fresh server for all levels (the model loads once, as on a real host); a warm-up request first."""
    out = []
    with tempfile.TemporaryDirectory() as tmp, streamlit_server(Path(tmp) / "server.log", timeout_s=120) as (base, pid):
        asyncio.run(_drive(base, 1, 1, time_limit_s))  # loads the model and compiles the kernel
        with RssSampler(pid) as sampler:
            for k in levels:
                time.sleep(1)
                before = sampler.now_mb()
                sampler.peak_mb = before
                times, errors, wall = asyncio.run(_drive(base, k, requests, time_limit_s))
                time.sleep(2)
                out.append(
                    {
                        "sessions": k,
                        "requests": k * requests,
                        "ok": len(times),
                        "errors": len(errors),
                        "error_samples": errors[:3],
                        "p50_s": statistics.median(times) if times else float("nan"),
                        "p95_s": percentile(times, 0.95),
                        "wall_s": wall,
                        "rss_before_mb": before,
                        "rss_peak_mb": sampler.peak_mb,
                        "rss_after_mb": sampler.now_mb(),
                    }
                )
                print(json.dumps(out[-1]), file=sys.stderr)
    return out


def markdown(rows: list[dict], requests: int) -> str:
    lines = [
        f"`python -m lmtt.loadtest`: one fresh server on loopback (config.yaml as shipped), K browser sessions at once, "
        f"{requests} requests each; each request opens the graph for a prompt of its own (a cache miss) and waits until it is drawn. "
        "Chromium runs on the same 2-core machine as the server, so its rendering competes with the model for the CPU.",
        "",
        "| sessions | requests | ok | errors | p50 s | p95 s | wall s | RSS before MB | RSS peak MB | RSS after MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['sessions']} | {r['requests']} | {r['ok']} | {r['errors']} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['wall_s']:.1f} | "
            f"{r['rss_before_mb']:.0f} | {r['rss_peak_mb']:.0f} | {r['rss_after_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmtt.loadtest", description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", default="1,4,8")
    parser.add_argument("--requests", type=int, default=3, help="requests per session")
    parser.add_argument("--time-limit", type=float, default=600, help="seconds per level")
    parser.add_argument("--out", default=str(RESULTS), help="markdown report to update ('' to skip)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"error: {CHROMIUM} is missing (apt-get install -y chromium)", file=sys.stderr)
        return 2
    levels = [int(s) for s in args.sessions.split(",") if s.strip()]
    rows = run(levels, args.requests, args.time_limit)
    if args.out:
        write_section("Load test", markdown(rows, args.requests), Path(args.out))
    print(json.dumps(rows) if args.json else markdown(rows, args.requests))
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
