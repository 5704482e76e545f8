"""Runs a dataset of prompts: one summary file per prompt (lmtt.questions.batch), and their aggregates.

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
from collections.abc import Callable
from pathlib import Path

from lmtt.analysis import analyze
from lmtt.engine.config import ModelEntry
from lmtt.engine.runner import ModelRunner
from lmtt.questions.batch import aggregate, summarize


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
            from lmtt.engine.loading import load_model

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


def write_aggregate(out_dir: str | Path) -> dict:
    result = aggregate(load_summaries(out_dir))
    _write_atomically(Path(out_dir) / "aggregate.json", result)
    return result
