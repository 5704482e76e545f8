"""Reading states and updates in the vocabulary: the logit lens of one state, and what an update promotes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmtt.engine.runner import ModelRunner


@dataclass(frozen=True)
class TokenScore:
    token: str
    token_id: int
    score: float  # a probability for the logit lens, a logit for projections


@dataclass(frozen=True)
class Projection:
    """What a vector added to the residual stream pushes up and pushes down."""

    promoted: list[TokenScore]
    suppressed: list[TokenScore]


def top_tokens(runner: ModelRunner, scores: torch.Tensor, k: int, largest: bool = True) -> list[TokenScore]:
    vals, idx = scores.topk(min(k, scores.shape[-1]), largest=largest)
    return [TokenScore(runner.decode(i), i, v) for i, v in zip(idx.tolist(), vals.tolist())]


def logit_lens(runner: ModelRunner, state: torch.Tensor, k: int = 10, final_norm: bool = True) -> list[TokenScore]:
    """Top-k tokens and probabilities of a residual state (d,) read as if it were the last layer's."""
    probs = runner.unembed(state, final_norm=final_norm).softmax(-1)  # (V,)
    return top_tokens(runner, probs, k)


def project(runner: ModelRunner, vector: torch.Tensor, k: int = 10) -> Projection:
    """Tokens whose logits a residual update (d,) raises and lowers most."""
    logits = runner.unembed_direction(vector)  # (V,)
    return Projection(top_tokens(runner, logits, k), top_tokens(runner, logits, k, largest=False))
