"""Benchmark: `python -m lmtt.bench [--sizes 16,64,...] [--device cpu] [--json]`.

Each prompt size runs in a fresh process (so peak RSS is per size). For each
size it times, as medians over repeats after one warm-up:
  forward_s           the plain forward pass of the model as transformers loads it (the floor)
  trace_s             lmtt's hooked forward pass (runner.trace)
  full_graph_s        every contribution: all layers, tokens, head x source parts and the FFN
  paths_s             paths_to(last token, 0.04)
  threshold_change_s  paths_to on the existing analysis at another threshold
  token_change_s      paths_to on the existing analysis for another token
and peak_rss_mb. Prompts are natural English text (Python's own documentation,
shipped with every Python) cut to exactly T tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lmtt.report import RESULTS, write_section

SIZES = (16, 64, 128, 256, 512, 1024, 2048)
TARGET_RATIO = 2.0
TARGET_RSS_MB = 4096
TARGET_CHANGE_S = 0.1
TARGET_CACHED_LOAD_S = 5.0


def natural_text() -> str:
    """Several thousand words of English prose: the Python reference topics."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def _median_time(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` calls, and the last result (only one result is alive at a time)."""
    times, result = [], None
    for _ in range(repeats):
        result = None
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run_size(n_tokens: int, device: str, repeats: int) -> dict:
    """One size, in this process: load, warm up, time every stage."""
    import dataclasses

    import torch

    from lmtt.attribution import compute_contributions, small_coords_correction, warm_up
    from lmtt.config import load_config
    from lmtt.graph import ContributionGraph
    from lmtt.loading import load_pretrained
    from lmtt.runner import ModelRunner

    config = load_config()
    entry = dataclasses.replace(config.models[config.default_model], device=device)
    model, tokenizer = load_pretrained(entry)
    ids = tokenizer(natural_text(), return_tensors="pt")["input_ids"][0][:n_tokens]
    if ids.numel() < n_tokens:
        raise SystemExit(f"the benchmark text has only {ids.numel()} tokens")
    batch = ids[None].to(model.device)

    def forward():
        with torch.no_grad():
            return model(input_ids=batch, use_cache=False)

    forward()  # warm-up
    forward_s, _ = _median_time(forward, repeats)

    runner = ModelRunner(model, tokenizer, name=entry.name)  # switches attention to lmtt's and installs hooks
    warm_up(runner.layer_weights[0].w_out.shape[-1])
    warm = runner.trace(ids)  # one untimed run at this size
    compute_contributions(warm, runner.layer_weights)
    del warm
    trace_s, trace = _median_time(lambda: runner.trace(ids), repeats)
    full_graph_s, contributions = _median_time(lambda: compute_contributions(trace, runner.layer_weights), repeats)
    graph = ContributionGraph(contributions)
    paths_s, sub = _median_time(lambda: graph.paths_to(-1, 0.04), repeats)
    threshold_change_s, _ = _median_time(lambda: graph.paths_to(-1, 0.06), repeats)
    token_change_s, _ = _median_time(lambda: graph.paths_to(n_tokens // 2, 0.04), repeats)
    return {
        "tokens": n_tokens,
        "forward_s": forward_s,
        "trace_s": trace_s,
        "full_graph_s": full_graph_s,
        "paths_s": paths_s,
        "threshold_change_s": threshold_change_s,
        "token_change_s": token_change_s,
        "edges_at_0.04": len(sub),
        "kernel": small_coords_correction.mode,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _in_fresh_process(args: list[str], env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-m", "lmtt.bench", *args], capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_loads() -> dict:
    """First load (GGUF conversion into an empty cache) and second load (cached), each in a fresh process."""
    with tempfile.TemporaryDirectory() as cache:
        env = {"LMTT_CACHE_DIR": cache}
        first = _in_fresh_process(["--worker-load"], env)["load_s"]
        cached = _in_fresh_process(["--worker-load"], env)["load_s"]
    return {"first_s": first, "cached_s": cached}


def _load_once() -> dict:
    from lmtt.loading import load_model

    start = time.perf_counter()
    load_model()
    return {"load_s": time.perf_counter() - start}


def machine() -> dict:
    import torch
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line), "?")
    mem_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), 0)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def markdown(report: dict) -> str:
    m = report["machine"]
    rows = []
    for r in report["results"]:
        ratio = (r["trace_s"] + r["full_graph_s"]) / r["forward_s"]
        rows.append(
            f"| {r['tokens']} | {r['forward_s']:.3f} | {r['trace_s']:.3f} | {r['full_graph_s']:.3f} | {ratio:.2f} | "
            f"{r['paths_s'] * 1e3:.1f} | {r['threshold_change_s'] * 1e3:.1f} | {r['token_change_s'] * 1e3:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    lines = [
        f"Model `{report['model']}` on `{report['device']}`; attribution kernel `{report['results'][0]['kernel']}`; "
        f"medians of {report['repeats']} repeats after a warm-up; each size in a fresh process.",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), {m['ram_gb']} GB RAM; "
        f"Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}.",
        "",
        "| T | forward s | trace s | full graph s | (trace + full) / forward "
        "| paths_to ms | threshold change ms | token change ms | peak RSS MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
    ]
    if "load" in report:
        lines += [
            "",
            f"Default model load: first {report['load']['first_s']:.1f} s (GGUF conversion), cached {report['load']['cached_s']:.2f} s.",
        ]
    lines += ["", "Targets:", *[f"- {t}" for t in check_targets(report)]]
    return "\n".join(lines) + "\n"


def check_targets(report: dict) -> list[str]:
    """Each target, met or not, with the measured figure."""
    out = []
    for r in report["results"]:
        ratio = (r["trace_s"] + r["full_graph_s"]) / r["forward_s"]
        if r["tokens"] <= 1024:
            verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
            out.append(f"{verdict}: T={r['tokens']} (trace + full graph) / forward = {ratio:.2f} (<= {TARGET_RATIO})")
        if r["tokens"] == 2048:
            ok = r["peak_rss_mb"] < TARGET_RSS_MB
            out.append(f"{'met' if ok else 'NOT met'}: T=2048 peak RSS {r['peak_rss_mb']:.0f} MB (< {TARGET_RSS_MB})")
        if r["tokens"] == 1024:
            worst = max(r["threshold_change_s"], r["token_change_s"])
            out.append(f"{'met' if worst < TARGET_CHANGE_S else 'NOT met'}: T=1024 threshold/token change {worst * 1e3:.1f} ms (< 100)")
    if "load" in report:
        cached = report["load"]["cached_s"]
        out.append(f"{'met' if cached < TARGET_CACHED_LOAD_S else 'NOT met'}: cached load {cached:.2f} s (< {TARGET_CACHED_LOAD_S:.0f})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmtt.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated prompt sizes in tokens")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--no-loads", action="store_true", help="skip the first/cached load measurement")
    parser.add_argument("--out", default=str(RESULTS), help="markdown report to update ('' to skip)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-load", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_load:
        print(json.dumps(_load_once()))
        return 0
    if args.worker is not None:
        print(json.dumps(run_size(args.worker, args.device, args.repeats)))
        return 0
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    from lmtt.config import load_config

    report = {"model": load_config().default_model, "device": args.device, "repeats": args.repeats, "machine": machine(), "results": []}
    for n in sizes:
        result = _in_fresh_process(["--worker", str(n), "--device", args.device, "--repeats", str(args.repeats)])
        report["results"].append(result)
        if not args.json:
            print(json.dumps(result), file=sys.stderr)
    if not args.no_loads:
        report["load"] = measure_loads()
    if args.out:
        write_section("Benchmark", markdown(report), Path(args.out))
    if args.json:
        print(json.dumps(report))
    else:
        print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
