"""The logit lens (nostalgebraist 2020): every residual-stream state read as if it were the last layer's.

`over_levels` is the one loop over node levels: one level at a time, so only one (T, V) block of
logits exists at once. The grids below and the target's lens (lmtt.questions.dla) are built on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from lmtt.engine.levels import n_levels
from lmtt.engine.runner import ModelRunner, PromptError, Trace

if TYPE_CHECKING:  # questions take an Analysis; they never import the facade
    from lmtt.analysis import Analysis


@torch.no_grad()
def follow_token(runner: ModelRunner, text: str) -> int:
    """The token the logit lens follows for typed text: its first token, without the tokenizer's special tokens
    (a BOS-adding tokenizer would otherwise make every text follow BOS)."""
    if runner.tokenizer is None:
        raise PromptError("this runner has no tokenizer: the lens cannot follow text")
    ids = runner.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise PromptError(f"{text!r} has no tokens")
    return int(ids[0])


def over_levels(trace: Trace, read: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """(2L+1, T, ...) read(state) of every node level's states (T, d), stacked on the CPU."""
    return torch.stack([read(trace.state(level)).cpu() for level in range(n_levels(trace.n_layers))])


def token_grid(runner: ModelRunner, trace: Trace, token_id: int, final_norm: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(probability, rank) of one vocabulary token at every node level and position: (2L+1, T) each."""

    def read(state: torch.Tensor) -> torch.Tensor:
        logits = runner.unembed(state, final_norm=final_norm)  # (T, V)
        target = logits[:, token_id]  # (T,)
        rank = (logits > target[:, None]).sum(-1)  # (T,)
        return torch.stack([logits.softmax(-1)[:, token_id], rank.double()], -1)  # (T, 2)

    grid = over_levels(trace, read)  # (2L+1, T, 2)
    return grid[..., 0].float(), grid[..., 1].long()


def top_token_grid(analysis: Analysis, final_norm: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(token id, probability) of the most likely token at every node level and position: (2L+1, T) each."""

    def read(state: torch.Tensor) -> torch.Tensor:
        p, ids = analysis.runner.unembed(state, final_norm=final_norm).softmax(-1).max(-1)  # (T,) each
        return torch.stack([ids.double(), p.double()], -1)  # (T, 2)

    grid = over_levels(analysis.trace, read)  # (2L+1, T, 2)
    return grid[..., 0].long(), grid[..., 1].float()
