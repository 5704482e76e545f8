"""Load test: `python -m lmtt.loadtest [--sessions 1,4,8] [--requests 3] [--time-limit 600] [--soak 500]`.

Starts the app on loopback, then drives K browser sessions at once (Playwright
contexts on Debian's Chromium). Each session opens the graph for a prompt of its
own (a cache miss, so the model really runs) `--requests` times and waits for the
rendered graph. Reports p50/p95 time to a rendered graph, errors, and the server's
RSS before, at peak during, and after, for each K. Writes a section of
the "Load test" section of bench/RESULTS.md unless --out ''.

`--soak N` instead runs one server through N analyses of mixed lengths (16 to
2,000 tokens, log-uniform, seeded; each prompt distinct, so each is a cache miss)
from `--sessions` concurrent sessions (4 by default), sampling the server's RSS
after every analysis. Memory stays flat when the RSS after the run is within 10%
of the RSS after the first 50 analyses, both read with nothing in flight (the
sessions drain after the first 50); no request may fail. Writes the "Soak"
section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import psutil

from lmtt.tools.report import RESULTS, write_section
from lmtt.tools.serve import CHROMIUM, CHROMIUM_ARGS, streamlit_server

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


SOAK_MIN_TOKENS, SOAK_MAX_TOKENS, SOAK_WARM = 16, 2000, 50


def soak_prompts(n: int, seed: int = 0) -> list[tuple[int, str]]:
    """n (tokens, prompt) pairs of log-uniform lengths in [16, 2000] tokens of the default model, each distinct."""
    import math
    import random

    from transformers import AutoTokenizer

    from lmtt.engine.config import load_config
    from lmtt.engine.loading import _pretrained_dir
    from lmtt.tools.bench import natural_text

    config = load_config()
    tokenizer = AutoTokenizer.from_pretrained(_pretrained_dir(config.models[config.default_model]))
    ids = tokenizer(natural_text())["input_ids"]
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = round(math.exp(rng.uniform(math.log(SOAK_MIN_TOKENS), math.log(SOAK_MAX_TOKENS))))
        start = rng.randrange(0, len(ids) - t)
        out.append((t, f"[{i}] " + tokenizer.decode(ids[start : start + t - 4])))  # the tag makes each prompt distinct
    return out


async def _soak_session(browser, base, jobs: asyncio.Queue, sampler, log: list[dict]) -> None:
    from playwright.async_api import expect

    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await ctx.new_page()
    try:
        while not jobs.empty():
            tokens, prompt = jobs.get_nowait()
            start = time.perf_counter()
            error = None
            try:
                await page.goto(f"{base}/?prompt={quote(prompt)}")
                await expect(page.get_by_text("which predicts")).to_be_visible(timeout=300_000)
                await expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=120_000)
                if await page.locator('[data-testid="stException"]').count():
                    raise RuntimeError("an exception was shown")
            except Exception as e:  # noqa: BLE001 - counted and reported, the soak goes on
                error = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            log.append({"tokens": tokens, "s": time.perf_counter() - start, "rss_mb": sampler.now_mb(), "error": error})
            print(json.dumps(log[-1]), file=sys.stderr, flush=True)
    finally:
        await ctx.close()


def soak(n: int, sessions: int) -> dict:
    """One server, n analyses from `sessions` concurrent browser sessions; RSS after each."""
    import yaml

    from lmtt.engine.config import find_config

    prompts = soak_prompts(n)
    raw = yaml.safe_load(find_config().read_text())
    raw.update(max_prompt_tokens=max(SOAK_MAX_TOKENS, raw.get("max_prompt_tokens", 0)))
    raw.update(max_prompt_chars=max(max(len(p) for _, p in prompts), raw.get("max_prompt_chars", 0)))
    log: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(yaml.safe_dump({**raw, "sample_prompts": []}))
        with streamlit_server(Path(tmp) / "server.log", env={"LMTT_CONFIG": str(config)}, timeout_s=120) as (base, pid):
            sampler = RssSampler(pid)
            asyncio.run(_drive(base, 1, 1, 600))  # loads the model and compiles the kernel
            start_mb = sampler.now_mb()

            async def drive(batch: list[tuple[int, str]]):
                from playwright.async_api import async_playwright

                jobs: asyncio.Queue = asyncio.Queue()
                for job in batch:
                    jobs.put_nowait(job)
                async with async_playwright() as p:
                    browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                    await asyncio.gather(*(_soak_session(browser, base, jobs, sampler, log) for _ in range(sessions)))
                    await browser.close()

            def settled_mb() -> tuple[float, float]:
                """(RSS, the analysis cache's MB) with nothing in flight: the sessions are closed and the server idle."""
                time.sleep(5)
                return sampler.now_mb(), cache_mb_logged(Path(tmp) / "server.log")

            wall = time.perf_counter()
            with sampler:
                asyncio.run(drive(prompts[:SOAK_WARM]))
                warm_mb, warm_cache_mb = settled_mb()
                asyncio.run(drive(prompts[SOAK_WARM:]))
                end_mb, end_cache_mb = settled_mb()
            wall = time.perf_counter() - wall
            peak_mb = sampler.peak_mb
    times = [r["s"] for r in log if r["error"] is None]
    return {
        "analyses": len(log),
        "sessions": sessions,
        "errors": sum(r["error"] is not None for r in log),
        "error_samples": [r["error"] for r in log if r["error"]][:3],
        "tokens_min": min(r["tokens"] for r in log),
        "tokens_median": statistics.median(r["tokens"] for r in log),
        "tokens_max": max(r["tokens"] for r in log),
        "p50_s": statistics.median(times) if times else float("nan"),
        "p95_s": percentile(times, 0.95),
        "wall_s": wall,
        "rss_start_mb": start_mb,
        "rss_after_50_mb": warm_mb,
        "rss_end_mb": end_mb,
        "rss_peak_mb": peak_mb,
        "drift": end_mb / warm_mb - 1,
        "cache_after_50_mb": warm_cache_mb,
        "cache_end_mb": end_cache_mb,
        "outside_drift": (end_mb - end_cache_mb) / (warm_mb - warm_cache_mb) - 1,
        "rss_every_50_mb": [round(r["rss_mb"]) for r in log[SOAK_WARM - 1 :: SOAK_WARM]],
    }


def cache_mb_logged(server_log: Path) -> float:
    """The analysis cache's size in MB on the server's last analysis log line (lmtt.ui.runs logs it)."""
    sizes = re.findall(r"cache_mb=(\d+)", server_log.read_text())
    if not sizes:
        raise RuntimeError(f"no analysis log line with cache_mb= in {server_log}")
    return float(sizes[-1])


def soak_markdown(r: dict) -> str:
    ok = r["errors"] == 0 and abs(r["drift"]) <= 0.10
    return "\n".join(
        [
            f"`python -m lmtt.loadtest --soak {r['analyses']}`: one fresh server (config.yaml with max_prompt_tokens raised to 2,000), "
            f"{r['sessions']} concurrent Chromium sessions, {r['analyses']} analyses of log-uniform lengths "
            f"{r['tokens_min']}–{r['tokens_max']} tokens (median {r['tokens_median']:.0f}), each prompt distinct (a cache miss). "
            "RSS is the server's process tree; 'after 50' and 'at the end' are read 5 s after the sessions drained (nothing in flight), "
            "the peak is sampled every 0.25 s.",
            "",
            "| analyses | errors | p50 s | p95 s | wall s | RSS at start MB | after 50 MB | at the end MB | peak MB | end vs after 50 |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {r['analyses']} | {r['errors']} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['wall_s']:.0f} | {r['rss_start_mb']:.0f} | "
            f"{r['rss_after_50_mb']:.0f} | {r['rss_end_mb']:.0f} | {r['rss_peak_mb']:.0f} | {r['drift']:+.1%} |",
            "",
            f"RSS every 50 analyses (MB): {', '.join(map(str, r['rss_every_50_mb']))}.",
            "",
            f"The analysis cache (bounded by `analysis_cache_mb`) held {r['cache_after_50_mb']:.0f} MB after 50 analyses and "
            f"{r['cache_end_mb']:.0f} MB at the end (the server logs it with each analysis); RSS outside it: "
            f"{r['rss_after_50_mb'] - r['cache_after_50_mb']:.0f} MB and {r['rss_end_mb'] - r['cache_end_mb']:.0f} MB "
            f"({r['outside_drift']:+.1%}).",
            "",
            f"Target: {'met' if ok else 'NOT met'}: RSS at the end within 10% of RSS after 50 analyses ({r['drift']:+.1%}), "
            f"{r['errors']} failed requests"
            + (f" (e.g. {r['error_samples'][0]})" if r["error_samples"] else "")
            + ".",
        ]
    ) + "\n"


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
    parser.add_argument("--soak", type=int, default=0, help="instead: N analyses of mixed lengths from --sessions (default 4) sessions")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"error: {CHROMIUM} is missing (apt-get install -y chromium)", file=sys.stderr)
        return 2
    if args.soak:
        sessions = int(args.sessions) if args.sessions.isdigit() else 4
        result = soak(args.soak, sessions)
        if args.out:
            write_section("Soak", soak_markdown(result), Path(args.out))
        print(json.dumps(result) if args.json else soak_markdown(result))
        return 0 if result["errors"] == 0 and abs(result["drift"]) <= 0.10 else 1
    levels = [int(s) for s in args.sessions.split(",") if s.strip()]
    rows = run(levels, args.requests, args.time_limit)
    if args.out:
        write_section("Load test", markdown(rows, args.requests), Path(args.out))
    print(json.dumps(rows) if args.json else markdown(rows, args.requests))
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
