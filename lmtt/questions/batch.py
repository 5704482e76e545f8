"""What a dataset of prompts shows: each head's and top neuron's direct effect on each prompt's prediction, and their aggregates.

`lmtt.tools.dataset` (`python -m lmtt batch`) runs the prompts and writes these summaries to files;
the Dataset page computes them from the app's cached analyses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # questions take an Analysis; they never import the facade
    from lmtt.analysis import Analysis

IMPORTANT = 0.1  # a head matters for a prompt when |its direct effect| is at least this fraction of the largest head's
TOP_NEURONS = 20  # the neurons with the largest |direct effect|, in each summary


def summarize(analysis: Analysis, prompt: str) -> dict:
    """What one prompt's prediction owes to each head and to its top neurons: their direct effects, in logits, on
    logit(A) - logit(B) at the last token, A the top prediction and B the runner-up."""
    target = analysis.contrast_target()
    effects = analysis.direct_effects(target)
    return {
        "prompt": prompt,
        "model": analysis.model_name,
        "tokens": list(analysis.tokens),
        "predictions": [{"token": p.token, "prob": p.score} for p in analysis.predictions(-1, 5)],
        "quantity": target.describe(),
        "heads": effects.heads.tolist(),  # (L, H) direct effects in logits
        "neurons": [[c.layer, c.index, c.value] for c in effects.top_neurons(TOP_NEURONS)],  # [layer, neuron, effect]
    }


def aggregate(summaries: Iterable[dict]) -> dict:
    """Heads ranked by their mean direct effect, which matter for every prompt or only some, the most frequent top neurons.

    A head matters for a prompt when its |direct effect| is at least IMPORTANT x the prompt's largest |head effect|
    (logit scales differ between prompts). Every list is sorted by importance, the largest mean |effect| first.
    """
    summaries = list(summaries)
    if not summaries:
        return {"prompts": 0}
    heads = np.array([s["heads"] for s in summaries])  # (P, L, H) direct effects
    size = np.abs(heads)
    matters = size >= IMPORTANT * size.reshape(len(summaries), -1).max(1)[:, None, None]  # (P, L, H)
    mean = heads.mean(0)  # (L, H)
    order = np.argsort(-np.abs(mean), axis=None)  # every head, the largest mean |effect| first
    ranked = [(int(i // mean.shape[1]), int(i % mean.shape[1])) for i in order]
    share = matters.mean(0)  # (L, H) fraction of prompts where each head matters
    counts = Counter((layer, neuron) for s in summaries for layer, neuron, _ in s["neurons"])
    effect_sum = Counter()
    for s in summaries:
        for layer, neuron, value in s["neurons"]:
            effect_sum[layer, neuron] += value
    neurons = sorted(counts, key=lambda key: (-counts[key], -abs(effect_sum[key] / counts[key])))[:50]
    return {
        "prompts": len(summaries),
        "important_fraction": IMPORTANT,
        "mean_head_effect": mean.tolist(),
        "head_prompt_share": share.tolist(),
        "always_important_heads": [[layer, h, float(mean[layer, h])] for layer, h in ranked if share[layer, h] == 1.0],
        "sometimes_important_heads": [
            [layer, h, float(mean[layer, h]), float(share[layer, h])] for layer, h in ranked if 0.0 < share[layer, h] < 1.0
        ],
        "frequent_neurons": [[layer, n, counts[layer, n], effect_sum[layer, n] / counts[layer, n]] for layer, n in neurons],
    }


def prompts_where_head_mattered(summaries: list[dict], layer: int, head: int, k: int = 10) -> list[tuple[float, str]]:
    """The prompts where a head's direct effect on the prediction was largest in size (its sign kept)."""
    ranked = sorted(((s["heads"][layer][head], s["prompt"]) for s in summaries), key=lambda x: -abs(x[0]))
    return ranked[:k]
