"""What a dataset of prompts shows: each prompt's head and neuron shares at its last token, and their aggregates.

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


def prompts_where_head_mattered(summaries: list[dict], layer: int, head: int, k: int = 10) -> list[tuple[float, str]]:
    """The prompts where a head's share at the last token was largest."""
    ranked = sorted(((s["heads"][layer][head], s["prompt"]) for s in summaries), reverse=True)
    return ranked[:k]
