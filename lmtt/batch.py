"""Information flow routes over a dataset: per-prompt summaries and their aggregates.

`python -m lmtt batch PROMPTS_FILE --out DIR` analyses one prompt per line. Each
summary is written atomically to DIR/prompts/, so a re-run skips what is done
and an interruption loses at most the prompt in flight. The aggregates
(DIR/aggregate.json) are recomputed from whatever summaries exist.

`--ray ADDRESS` spreads the prompts over an existing Ray cluster; each worker
loads the model once. Ray is an optional extra (`pip install ray`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from lmtt.analysis import Analysis, analyze
from lmtt.config import ModelEntry
from lmtt.runner import ModelRunner

IMPORTANT = 0.05  # a head "matters" for a prompt when its share at the last token is at least this
TOP_NEURONS = 5  # per layer, in each summary


def summarize(analysis: Analysis, prompt: str) -> dict:
    """What one prompt's last token owes to each head and to its top neurons."""
    last = len(analysis.tokens) - 1
    heads = [analysis.head_contributions(layer, last).heads.tolist() for layer in range(analysis.n_layers)]
    neurons = []
    for layer in range(analysis.n_layers):
        nc = analysis.neuron_contributions(layer, last, TOP_NEURONS)
        neurons += [[layer, int(n), float(c)] for n, c in zip(nc.neurons, nc.contributions)]
    return {
        "prompt": prompt,
        "model": analysis.model_name,
        "tokens": list(analysis.tokens),
        "predictions": [{"token": p.token, "prob": p.score} for p in analysis.predictions(-1, 5)],
        "heads": heads,  # (L, H)
        "neurons": neurons,  # [layer, neuron, contribution]
    }


def summary_path(out: Path, index: int, prompt: str) -> Path:
    digest = hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return out / "prompts" / f"{index:06d}-{digest}.json"


def _write_atomically(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    os.replace(tmp, path)


def read_prompts(path: str | Path) -> list[str]:
    return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def pending(prompts: list[str], out: Path) -> list[tuple[int, str]]:
    return [(i, p) for i, p in enumerate(prompts) if not summary_path(out, i, p).exists()]


def run_batch(runner: ModelRunner, prompts: list[str], out_dir: str | Path, on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Analyse every prompt not yet summarised in out_dir, then write the aggregates."""
    out = Path(out_dir)
    todo = pending(prompts, out)
    for done, (i, prompt) in enumerate(todo, 1):
        _write_atomically(summary_path(out, i, prompt), summarize(analyze(runner, prompt), prompt))
        if on_progress:
            on_progress(done, len(todo))
    return write_aggregate(out)


def run_batch_ray(address: str, entry: ModelEntry, prompts: list[str], out_dir: str | Path, workers: int = 2) -> dict:
    """The same over a Ray cluster: `workers` actors, each holding the model once; the driver writes the files."""
    import ray
    from ray.util import ActorPool

    @ray.remote
    class Worker:
        def __init__(self, entry: ModelEntry):
            from lmtt.loading import load_model

            self.runner = load_model(entry)

        def summarize(self, index: int, prompt: str) -> tuple[int, str, dict]:
            return index, prompt, summarize(analyze(self.runner, prompt), prompt)

    out = Path(out_dir)
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    try:
        pool = ActorPool([Worker.remote(entry) for _ in range(workers)])
        for index, prompt, summary in pool.map_unordered(lambda w, job: w.summarize.remote(*job), pending(prompts, out)):
            _write_atomically(summary_path(out, index, prompt), summary)
    finally:
        ray.shutdown()
    return write_aggregate(out)


def load_summaries(out_dir: str | Path) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(out_dir, "prompts").glob("*.json"))]


def aggregate(summaries: Iterable[dict]) -> dict:
    """Mean head importance, heads that matter for every prompt or only some, the most frequent top neurons."""
    summaries = list(summaries)
    if not summaries:
        return {"prompts": 0}
    heads = np.array([s["heads"] for s in summaries])  # (P, L, H)
    matters = heads >= IMPORTANT
    always = np.argwhere(matters.all(0))
    sometimes = np.argwhere(matters.any(0) & ~matters.all(0))
    counts = Counter((layer, neuron) for s in summaries for layer, neuron, _ in s["neurons"])
    return {
        "prompts": len(summaries),
        "important_threshold": IMPORTANT,
        "mean_head_importance": heads.mean(0).tolist(),
        "head_prompt_share": matters.mean(0).tolist(),  # fraction of prompts where each head matters
        "always_important_heads": [[int(layer), int(h)] for layer, h in always],
        "sometimes_important_heads": [[int(layer), int(h), float(matters[:, layer, h].mean())] for layer, h in sometimes],
        "frequent_neurons": [[layer, neuron, n] for (layer, neuron), n in counts.most_common(50)],
    }


def write_aggregate(out_dir: str | Path) -> dict:
    result = aggregate(load_summaries(out_dir))
    _write_atomically(Path(out_dir) / "aggregate.json", result)
    return result


def prompts_where_head_mattered(summaries: list[dict], layer: int, head: int, k: int = 10) -> list[tuple[float, str]]:
    """The prompts where a head's share at the last token was largest."""
    ranked = sorted(((s["heads"][layer][head], s["prompt"]) for s in summaries), reverse=True)
    return ranked[:k]
