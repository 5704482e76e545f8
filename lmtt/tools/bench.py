"""Benchmark: `python -m lmtt.bench [--sizes 16,64,...] [--device cpu] [--shape NAME [--dtype D] [--layers N]] [--json]`.

Each prompt size runs in a fresh process (so peak RSS is per size). For each
size it times, as medians over repeats after one warm-up:
  forward_s           the plain forward pass of the model as transformers loads it (the floor)
  trace_s             lmtt's hooked forward pass (runner.trace)
  full_graph_s        every contribution: all layers, tokens, head x source parts and the FFN
                      (up to FULL_GRAPH_MAX_TOKENS; longer prompts use the on-demand graph)
  paths_s             paths_to(last token, 0.04)
  threshold_change_s  paths_to on the existing analysis at another threshold
  token_change_s      paths_to on the existing analysis for another token
  on_demand_s         a fresh OnDemandGraph's paths_to(last token, 0.04): the nodes its paths reach
  od_threshold_s      then paths_to(last token, 0.03) (computes the nodes the lower threshold adds)
  od_token_s          then paths_to(T // 2, 0.04) (another token: its own nodes)
and peak_rss_mb, weights_mb (the bytes of the model's parameters), trace_mb (the bytes the trace holds), and the ratios
full_ratio = (trace + full graph) / forward and od_ratio = (trace + on-demand graph) / forward.
Prompts are natural English text (Python's own documentation, shipped with every
Python) cut to exactly T tokens.

`--shape NAME` replaces the default model by a random-weight model built from a
config with a real model's dimensions (SHAPES): the time and memory of the
maths do not depend on the weights, and nothing is downloaded. `--dtype` sets its
dtype (float32 on a CPU, bfloat16 on a GPU by default) and `--layers N` keeps the
real widths but only the first N layers, so that a big shape fits a CPU box; the
memory overhead (peak RSS - weights) / weights then reads per layer kept.
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

from lmtt.tools.report import RESULTS, write_section

SIZES = (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
# Real models' dimensions (from their published config.json files), built with random weights.
SHAPES = {
    "llama-3.2-1b": ("LlamaConfig", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                                         num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True)),
    "qwen3-1.7b": ("Qwen3Config", dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                                       num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True)),
    "gemma-2-2b": ("Gemma2Config", dict(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
                                        num_key_value_heads=4, head_dim=256, vocab_size=256000, sliding_window=4096,
                                        attn_logit_softcapping=50.0, final_logit_softcapping=30.0, query_pre_attn_scalar=256)),
    "llama-3.1-8b": ("LlamaConfig", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                                         num_key_value_heads=8, head_dim=128, vocab_size=128256)),
    # mixtures of experts: real expert counts, experts per token and widths
    "mixtral-8x7b": ("MixtralConfig", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                                           num_key_value_heads=8, head_dim=128, num_local_experts=8, num_experts_per_tok=2,
                                           vocab_size=32000, rope_theta=1e6)),
    "qwen3-30b-a3b": ("Qwen3MoeConfig", dict(hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768, num_hidden_layers=48,
                                             num_attention_heads=32, num_key_value_heads=4, head_dim=128, num_experts=128,
                                             num_experts_per_tok=8, norm_topk_prob=True, vocab_size=151936, tie_word_embeddings=False)),
    "gpt-oss-20b": ("GptOssConfig", dict(hidden_size=2880, intermediate_size=2880, num_hidden_layers=24, num_attention_heads=64,
                                         num_key_value_heads=8, head_dim=64, num_local_experts=32, num_experts_per_tok=4,
                                         sliding_window=128, vocab_size=201088)),
}
DTYPES = ("float32", "bfloat16")
# `--real-sizes`: each shape truncated to this many layers, so that it fits a 24 GB CPU box in bfloat16
REAL_SIZE_LAYERS = {
    "llama-3.2-1b": 4, "qwen3-1.7b": 4, "gemma-2-2b": 4, "llama-3.1-8b": 4, "mixtral-8x7b": 2, "qwen3-30b-a3b": 2, "gpt-oss-20b": 2,
}
REAL_SIZES = (128, 1024)
TARGET_RATIO = 2.0
TARGET_RSS_MB = 4096
TARGET_CHANGE_S = 0.1
TARGET_CACHED_LOAD_S = 5.0
TARGET_GPU_FULL_S = 1.0  # on a GPU (an H100), for the Llama-3.1-8B shape


def natural_text() -> str:
    """Several thousand words of English prose: the Python reference topics."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def _sync() -> None:
    """Wait for queued GPU work, so that wall time covers it (a no-op without CUDA)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn) -> tuple[float, object]:
    _sync()
    start = time.perf_counter()
    result = fn()
    _sync()
    return time.perf_counter() - start, result


def _median_time(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` calls, and the last result (only one result is alive at a time)."""
    times, result = [], None
    for _ in range(repeats):
        result = None
        elapsed, result = _timed(fn)
        times.append(elapsed)
    return statistics.median(times), result


def shape_model(name: str, device: str, dtype: str | None = None, layers: int | None = None):
    """A random-weight model with a real model's dimensions, or its first `layers` layers.

    dtype: float32 on the CPU and bfloat16 on a GPU unless given.
    """
    import torch
    import transformers

    if name not in SHAPES:
        raise SystemExit(f"unknown --shape {name!r}; choose from {', '.join(SHAPES)}")
    config_class, dims = SHAPES[name]
    config = getattr(transformers, config_class)(**{**dims, **({"num_hidden_layers": layers} if layers else {})})
    dtype = getattr(torch, dtype) if dtype else (torch.float32 if device == "cpu" else torch.bfloat16)
    torch.manual_seed(0)
    with torch.device(device):
        return transformers.AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


def weights_mb(model) -> float:
    """The bytes of the model's parameters, in MB."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


def run_size(
    n_tokens: int,
    device: str,
    repeats: int,
    shape: str | None = None,
    dtype: str | None = None,
    layers: int | None = None,
    cold: bool = False,
) -> dict:
    """One size, in this process: load, warm up, time every stage.

    `cold` warms up on a 16-token prompt instead of a full-size one, for shapes whose forward pass takes minutes
    here: first calls (kernel compilation, matmul set-up) are out of the timings, at a fraction of the cost.
    """
    import dataclasses

    import torch

    from lmtt.engine.attribution import compute_contributions, small_coords_correction, warm_up_for
    from lmtt.engine.config import load_config
    from lmtt.engine.graph import ContributionGraph
    from lmtt.engine.loading import load_pretrained
    from lmtt.engine.memory import held_bytes
    from lmtt.engine.ondemand import FULL_GRAPH_MAX_TOKENS, OnDemandGraph
    from lmtt.engine.runner import ModelRunner

    if shape is None:
        config = load_config()
        entry = dataclasses.replace(config.models[config.default_model], device=device)
        model, tokenizer = load_pretrained(entry)
        name = entry.name
        ids = tokenizer(natural_text(), return_tensors="pt")["input_ids"][0][:n_tokens]
        if ids.numel() < n_tokens:
            raise SystemExit(f"the benchmark text has only {ids.numel()} tokens")
    else:  # random weights: seeded random token ids serve as well as text, and no tokenizer is needed
        model, tokenizer, name = shape_model(shape, device, dtype, layers), None, shape
        ids = torch.randint(0, 32000, (n_tokens,), generator=torch.Generator().manual_seed(0))
    batch = ids[None].to(model.device)

    def forward():
        with torch.no_grad():
            return model(input_ids=batch, use_cache=False)

    warm_ids = ids[:16] if cold else ids
    with torch.no_grad():
        model(input_ids=warm_ids[None].to(model.device), use_cache=False)  # warm-up
    forward_s = _median_time(forward, repeats)[0]  # not its output: (T, V) logits are 1.6 GB at T=8192

    runner = ModelRunner(model, tokenizer, name=name)  # switches attention to lmtt's and installs hooks
    warm_up_for(runner)
    full = n_tokens <= FULL_GRAPH_MAX_TOKENS
    warm = runner.trace(warm_ids)  # one untimed run
    if full:
        compute_contributions(warm, runner.layer_weights)
    del warm
    trace_s, trace = _median_time(lambda: runner.trace(ids), repeats)
    result = {"tokens": n_tokens, "forward_s": forward_s, "trace_s": trace_s, "weights_mb": weights_mb(model)}
    result["trace_mb"] = held_bytes(trace) / 2**20  # what the trace holds: per layer, it scales with depth
    if full:
        full_graph_s, contributions = _median_time(lambda: compute_contributions(trace, runner.layer_weights), repeats)
        graph = ContributionGraph(contributions)
        paths_s, sub = _median_time(lambda: graph.paths_to(-1, 0.04), repeats)
        threshold_change_s, _ = _median_time(lambda: graph.paths_to(-1, 0.06), repeats)
        token_change_s, _ = _median_time(lambda: graph.paths_to(n_tokens // 2, 0.04), repeats)
        result.update(full_graph_s=full_graph_s, paths_s=paths_s, threshold_change_s=threshold_change_s, token_change_s=token_change_s)
        result["full_ratio"] = (trace_s + full_graph_s) / forward_s
        result["edges_at_0.04"] = len(sub)
        del graph, contributions
    lazy = OnDemandGraph(trace, runner.layer_weights)
    result["on_demand_s"], sub = _timed(lambda: lazy.paths_to(-1, 0.04))
    result["od_nodes"], result["od_edges"] = lazy.computed_rows, len(sub)
    result["od_ratio"] = (trace_s + result["on_demand_s"]) / forward_s
    result["od_threshold_s"], _ = _timed(lambda: lazy.paths_to(-1, 0.03))
    result["od_token_s"], _ = _timed(lambda: lazy.paths_to(n_tokens // 2, 0.04))
    result.update(kernel=small_coords_correction.mode, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if torch.cuda.is_available():
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


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
    from lmtt.engine.loading import load_model

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
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def markdown(report: dict) -> str:
    m = report["machine"]
    gpu = all("peak_gpu_mb" in r for r in report["results"])
    rows = []
    for r in report["results"]:
        fwd = r["forward_s"]
        if "full_graph_s" in r:
            ratio = (r["trace_s"] + r["full_graph_s"]) / fwd
            full = (
                f"{r['full_graph_s']:.3f} | {ratio:.2f} | {r['paths_s'] * 1e3:.1f} | "
                f"{r['threshold_change_s'] * 1e3:.1f} | {r['token_change_s'] * 1e3:.1f}"
            )
        else:
            full = "— | — | — | — | —"
        od = (r["trace_s"] + r["on_demand_s"]) / fwd
        rows.append(
            f"| {r['tokens']} | {fwd:.3f} | {r['trace_s']:.3f} | {full} | {r['on_demand_s']:.3f} ({r['od_nodes']} nodes) | {od:.2f} | "
            f"{r['od_threshold_s'] * 1e3:.0f} | {r['od_token_s'] * 1e3:.0f} | {r['peak_rss_mb']:.0f} | {r['weights_mb']:.0f} | "
            f"{overhead(r):.2f} |" + (f" {r['peak_gpu_mb']:.0f} |" if gpu else "")
        )
    lines = [
        f"Model `{report['model']}` on `{report['device']}`; attribution kernel `{report['results'][0]['kernel']}`; "
        f"medians of {report['repeats']} repeats " + ("after a 16-token warm-up (--cold)" if report.get("cold") else "after a warm-up")
        + " (on-demand columns: one cold run); each size in a fresh process.",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), {m['ram_gb']} GB RAM; "
        f"Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}."
        + (f" GPU: {m['gpu']} (times synchronised; peak GPU MB = torch.cuda.max_memory_allocated)." if m.get("gpu") else ""),
        "",
        "| T | forward s | trace s | full graph s | (trace + full) / forward "
        "| paths_to ms | threshold change ms | token change ms | on-demand paths_to(-1, 0.04) s | (trace + on-demand) / forward "
        "| on-demand threshold 0.03 ms | on-demand token T/2 ms | peak RSS MB | weights MB | (peak RSS - weights) / weights |"
        + (" peak GPU MB |" if gpu else ""),
        "|" + " ---: |" * (16 if gpu else 15),
        *rows,
    ]
    if "load" in report:
        lines += [
            "",
            f"Default model load: first {report['load']['first_s']:.1f} s (GGUF conversion), cached {report['load']['cached_s']:.2f} s.",
        ]
    lines += ["", "Targets:", *[f"- {t}" for t in check_targets(report)]]
    return "\n".join(lines) + "\n"


def overhead(result: dict) -> float:
    """(peak RSS - weights) / weights: the memory lmtt and the process need beyond the model's parameters."""
    return (result["peak_rss_mb"] - result["weights_mb"]) / result["weights_mb"]


def shape_label(shape: str, dtype: str | None, layers: int | None) -> str:
    return f"{shape}" + (f", {dtype}" if dtype else "") + (f", first {layers} layers" if layers else "")


def real_sizes(device: str, sizes: list[int], repeats: int) -> dict:
    """Every shape in bfloat16 at each size, truncated to REAL_SIZE_LAYERS layers: each size in a fresh process."""
    rows = []
    for n in sizes:  # every shape at the smaller size first
        for shape, layers in REAL_SIZE_LAYERS.items():
            args = ["--worker", str(n), "--device", device, "--repeats", str(repeats), "--shape", shape, "--dtype", "bfloat16", "--cold"]
            result = _in_fresh_process([*args, "--layers", str(layers)])
            rows.append({"shape": shape, "layers": layers, **result})
            print(json.dumps(rows[-1]), file=sys.stderr)
    return {"device": device, "repeats": repeats, "machine": machine(), "results": rows}


def real_sizes_markdown(report: dict) -> str:
    """The real-sizes table, the targets, and what a full-depth model needs from the per-layer figures."""
    m = report["machine"]
    lines = [
        f"Random weights with real widths, bfloat16, the first N layers; on `{report['device']}`, {m['cpu']}, {m['cores']} cores, "
        f"{m['ram_gb']} GB RAM; torch {m['torch']}, transformers {m['transformers']}; medians of {report['repeats']} runs per stage "
        "after a 16-token warm-up (a bf16 forward pass takes minutes on a CPU without AVX-512), each row in a fresh process. "
        "Overhead = (peak RSS - weights) / weights. Graph = the full graph up to "
        "FULL_GRAPH_MAX_TOKENS, the on-demand graph to the last token beyond.",
        "",
        "| shape | layers | T | weights MB | peak RSS MB | overhead | RSS target MB (1.3 x weights + 1.5 GB) | forward s | trace s "
        "| (trace + full graph) / forward | (trace + on-demand graph to the last token) / forward |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        target = 1.3 * r["weights_mb"] + 1536
        full = f"{r['full_ratio']:.2f}" if "full_ratio" in r else "—"
        lines.append(
            f"| {r['shape']} | {r['layers']} | {r['tokens']} | {r['weights_mb']:.0f} | {r['peak_rss_mb']:.0f} | {overhead(r):.2f} | "
            f"{target:.0f} ({'met' if r['peak_rss_mb'] <= target else 'NOT met'}) | {r['forward_s']:.2f} | {r['trace_s']:.2f} | "
            f"{full} | {r['od_ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def check_targets(report: dict) -> list[str]:
    """Each target, met or not, with the measured figure (the ratio and memory targets are the CPU's)."""
    if report["device"] != "cpu":
        at_1024 = [r["full_graph_s"] for r in report["results"] if r["tokens"] == 1024 and "full_graph_s" in r]
        return [
            f"{'met' if s < TARGET_GPU_FULL_S else 'NOT met'}: T=1024 full graph {s:.3f} s (< {TARGET_GPU_FULL_S:.0f})" for s in at_1024
        ]
    out = []
    for r in report["results"]:
        if "full_graph_s" in r:
            ratio = (r["trace_s"] + r["full_graph_s"]) / r["forward_s"]
            verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
            out.append(f"{verdict}: T={r['tokens']} (trace + full graph) / forward = {ratio:.2f} (<= {TARGET_RATIO})")
        if r["tokens"] == 8192:
            od = (r["trace_s"] + r["on_demand_s"]) / r["forward_s"]
            out.append(f"{'met' if od <= TARGET_RATIO else 'NOT met'}: T=8192 (trace + on-demand graph) / forward = {od:.2f} (<= 2)")
            ok = r["peak_rss_mb"] < 8192
            out.append(f"{'met' if ok else 'NOT met'}: T=8192 peak RSS {r['peak_rss_mb']:.0f} MB (< 8192)")
        if r["tokens"] == 4096:
            worst = max(r["od_threshold_s"], r["od_token_s"])
            out.append(f"{'met' if worst < 1.0 else 'NOT met'}: T=4096 on-demand threshold/token change {worst:.2f} s (< 1)")
        if r["tokens"] == 2048:
            ok = r["peak_rss_mb"] < TARGET_RSS_MB
            out.append(f"{'met' if ok else 'NOT met'}: T=2048 peak RSS {r['peak_rss_mb']:.0f} MB (< {TARGET_RSS_MB})")
        if r["tokens"] == 1024 and "threshold_change_s" in r:
            worst = max(r["threshold_change_s"], r["token_change_s"])
            out.append(f"{'met' if worst < TARGET_CHANGE_S else 'NOT met'}: T=1024 threshold/token change {worst * 1e3:.1f} ms (< 100)")
    if "load" in report:
        cached = report["load"]["cached_s"]
        out.append(f"{'met' if cached < TARGET_CACHED_LOAD_S else 'NOT met'}: cached load {cached:.2f} s (< {TARGET_CACHED_LOAD_S:.0f})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmtt.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=None, help=f"comma-separated prompt sizes in tokens (default {','.join(map(str, SIZES))})")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", default=None, help=f"a random-weight model with a real model's dimensions: {', '.join(SHAPES)}")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="the shape's dtype (default: float32 on a CPU, bfloat16 on a GPU)")
    parser.add_argument("--layers", type=int, default=None, help="keep the shape's real widths but only its first N layers")
    parser.add_argument(
        "--real-sizes", action="store_true", help="every shape in bfloat16 at T=128 and 1024 (or --sizes), truncated: the real-sizes table"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--no-loads", action="store_true", help="skip the first/cached load measurement")
    parser.add_argument("--out", default=str(RESULTS), help="markdown report to update ('' to skip)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cold", action="store_true", help="warm up on 16 tokens, not the full size (the real-sizes runs)")
    args = parser.parse_args(argv)
    if args.worker_load:
        print(json.dumps(_load_once()))
        return 0
    if args.worker is not None:
        print(json.dumps(run_size(args.worker, args.device, args.repeats, args.shape, args.dtype, args.layers, args.cold)))
        return 0
    try:
        default = REAL_SIZES if args.real_sizes else SIZES
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()] if args.sizes else list(default)
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    from lmtt.engine.config import load_config

    if args.shape is not None and args.shape not in SHAPES:
        parser.error(f"unknown --shape {args.shape!r}; choose from {', '.join(SHAPES)}")
    if (args.dtype or args.layers) and not args.shape:
        parser.error("--dtype and --layers apply to a --shape (the default model keeps its own)")
    if args.layers is not None and args.layers < 1:
        parser.error(f"--layers must be at least 1, got {args.layers}")
    if args.real_sizes:
        report = real_sizes(args.device, sizes, args.repeats)
        text = real_sizes_markdown(report)
        if args.out:
            write_section("Real model sizes" + ("" if args.device == "cpu" else f" on {args.device}"), text, Path(args.out))
        print(json.dumps(report) if args.json else text)
        return 0
    label = shape_label(args.shape, args.dtype, args.layers) if args.shape else None
    model = f"{label} (random weights)" if args.shape else load_config().default_model
    report = {"model": model, "device": args.device, "repeats": args.repeats, "cold": args.cold, "machine": machine(), "results": []}
    shape = ["--shape", args.shape] if args.shape else []
    shape += (["--dtype", args.dtype] if args.dtype else []) + (["--layers", str(args.layers)] if args.layers else [])
    shape += ["--cold"] if args.cold else []
    for n in sizes:
        result = _in_fresh_process(["--worker", str(n), "--device", args.device, "--repeats", str(args.repeats), *shape])
        report["results"].append(result)
        if not args.json:
            print(json.dumps(result), file=sys.stderr)
    if not args.no_loads and not args.shape:
        report["load"] = measure_loads()
    if args.out:
        title = f"Benchmark: {label} shape" if args.shape else "Benchmark"
        write_section(title if args.device == "cpu" else f"{title} on {args.device}", markdown(report), Path(args.out))
    if args.json:
        print(json.dumps(report))
    else:
        print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
