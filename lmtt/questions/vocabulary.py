"""Reading states and updates in the vocabulary: the logit lens of one state, and what an update promotes.

An update z (a block's, a head's or a neuron's) that the residual stream receives at position i moves
every logit directly by the same linear map that direct logit attribution uses there
(lmtt.questions.dla): the final norm with its scale s_i frozen, then the unembedding,

    effect_t(z) = W_U[t] . (s_i g ⊙ P z),

in logits, before a family's final softcap (and with its linear logit scale). So a head's effect on
token A equals its entry in direct_effects for A, and promoted/suppressed lists add up: the effects of
a node's parts sum to the effect of the node's update.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmtt.engine.norms import FrozenNorm
from lmtt.engine.runner import ModelRunner
from lmtt.engine.tokens import token_text


@dataclass(frozen=True)
class TokenScore:
    token: str
    token_id: int
    score: float  # a probability for the logit lens; a direct effect on the token's logit, in logits, for projections


@dataclass(frozen=True)
class Projection:
    """What an update pushes up and pushes down: its direct effect on every logit at one position (module docstring)."""

    promoted: list[TokenScore]
    suppressed: list[TokenScore]
    effects: torch.Tensor | None = None  # (V,) the direct effect on every token's logit (project() fills it)

    def effect_on(self, token_id: int) -> float:
        """The direct effect on one token's logit: what the update does to, say, ' Paris'."""
        if self.effects is None:
            raise ValueError("this projection was built without every token's effect")
        return float(self.effects[token_id])

    def headings(self) -> tuple[str, str]:
        """Labels for the two lists that say what they hold: an update can raise (or lower) every logit, and then its
        lowest effects are not "suppressed" (the last FFN of a long prompt does this)."""
        up = "Promoted" if all(t.score > 0 for t in self.promoted) else "Highest effects (not all raise their logit)"
        down = "Suppressed" if all(t.score < 0 for t in self.suppressed) else "Lowest effects (not all lower their logit)"
        return up, down

    def to_dict(self) -> dict:
        def rows(scores: list[TokenScore]) -> list[dict]:
            return [{"token": s.token, "token_id": s.token_id, "effect": s.score} for s in scores]

        return {"unit": "direct effect on the logit", "promoted": rows(self.promoted), "suppressed": rows(self.suppressed)}


def top_tokens(runner: ModelRunner, scores: torch.Tensor, k: int, largest: bool = True) -> list[TokenScore]:
    vals, idx = scores.topk(min(k, scores.shape[-1]), largest=largest)
    return [TokenScore(token_text(runner, i), i, v) for i, v in zip(idx.tolist(), vals.tolist())]


def logit_lens(runner: ModelRunner, state: torch.Tensor, k: int = 10, final_norm: bool = True) -> list[TokenScore]:
    """Top-k tokens and probabilities of a residual state (d,) read as if it were the last layer's."""
    probs = runner.unembed(state, final_norm=final_norm).softmax(-1)  # (V,)
    return top_tokens(runner, probs, k)


def project(runner: ModelRunner, vector: torch.Tensor, final_norm: FrozenNorm | None, k: int = 10) -> Projection:
    """Tokens whose logits an update (d,) raises and lowers most, by its direct effect on each logit.

    `final_norm` is the final norm frozen at the explained position (dla.frozen_final_norm); None for a model without one.
    """
    x = vector if final_norm is None else final_norm.linear(vector.to(final_norm.scale.device))  # (d,) s g ⊙ P z
    effects = runner.unembed_direction(x).cpu()  # (V,)
    return Projection(top_tokens(runner, effects, k), top_tokens(runner, effects, k, largest=False), effects)
