"""The logit lens's top token in every cell: which token each state would predict, and with what probability."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # questions take an Analysis; they never import the facade
    from lmtt.analysis import Analysis



def top_token_grid(analysis: Analysis, final_norm: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(token id, probability) of the most likely token at every node level and position: (2L+1, T) each.

    One level at a time, so only (T, V) logits exist at once (as Analysis.lens_grid).
    """
    t = analysis.trace
    ids = torch.zeros(2 * t.n_layers + 1, t.n_tokens, dtype=torch.long)
    probs = torch.zeros(2 * t.n_layers + 1, t.n_tokens)
    for level in range(2 * t.n_layers + 1):
        layer = (level - 1) // 2
        state = t.mid(layer) if level % 2 else t.resid[level // 2]  # (T, d)
        p = analysis.runner.unembed(state, final_norm=final_norm).softmax(-1)  # (T, V)
        probs[level], ids[level] = (x.cpu() for x in p.max(-1))
    return ids, probs
