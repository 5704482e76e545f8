"""Search components by token: which heads and neurons push a token's logit up (or down)?

Two answers, as LM-Debugger and the logit-lens literature ask them:

- **In this prompt** (at the explained position): each head's and each neuron's direct effect on logit(A), exactly
  as direct logit attribution computes it (the final norm frozen at that position). Heads and neurons across every
  layer, ranked by effect.
- **From the weights alone** (context-free, whatever the prompt): the direction d_A = P(g ⊙ W_U[A]) is A's
  unembedding read back through the final norm's gain and centring, with the per-position scale left out (it is
  positive: it changes magnitudes, never signs; a post-norm's per-layer scale, also left out, can reorder layers).
  A neuron's score is its value vector read along d_A, through any post-norm gain or residual multiplier on the
  way: its effect per unit of activation. A head's score is its copying score: the head attends to token A itself
  (the layer's input norm of A's embedding), its value and output projections write W_O^h W_V^h n(E[A]), and the
  score is that update read along d_A. The values come from the model's own attention module
  (ModelRunner.attention_inputs), so fused projections and every family work alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lmtt.engine.adapters import resolve
from lmtt.engine.levels import unit_name
from lmtt.engine.norms import FrozenNorm, gain_and_bias
from lmtt.engine.runner import ModelRunner
from lmtt.engine.values import times_transposed
from lmtt.questions.dla import readout

if TYPE_CHECKING:
    from lmtt.analysis import Analysis


@dataclass(frozen=True)
class Hit:
    """A head or a neuron and its score: a direct effect in logits (in context), or per unit (from the weights)."""

    kind: str  # "head" | "neuron"
    layer: int
    index: int
    score: float

    @property
    def name(self) -> str:
        return unit_name(self.kind, self.layer, self.index)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "layer": self.layer, "index": self.index, "name": self.name, "score": self.score}


@dataclass(frozen=True)
class TokenSearch:
    """The heads and neurons that most promote (or suppress) one token, in this prompt and from the weights alone."""

    token: str
    token_id: int
    position: int
    promote: bool  # True: the largest scores; False: the most negative
    in_context_heads: list[Hit]
    in_context_neurons: list[Hit]
    weight_heads: list[Hit]  # copying scores (module docstring)
    weight_neurons: list[Hit]  # value vectors along d_A, per unit activation
    seconds: float

    def to_dict(self) -> dict:
        lists = ("in_context_heads", "in_context_neurons", "weight_heads", "weight_neurons")
        rows = {name: [h.to_dict() for h in getattr(self, name)] for name in lists}
        head = {"token": self.token, "token_id": self.token_id, "position": self.position, "promote": self.promote}
        return {**head, **rows, "seconds": self.seconds}


def _ranked(scores: torch.Tensor, kind: str, k: int, promote: bool) -> list[Hit]:
    """The k entries of (L, X) scores with the largest (promote) or smallest values, as hits."""
    flat = scores.flatten()
    idx = flat.topk(min(k, flat.numel()), largest=promote).indices.tolist()
    width = scores.shape[1]
    return [Hit(kind, i // width, i % width, float(flat[i])) for i in idx]


def unembedding_direction(runner: ModelRunner, token_id: int) -> torch.Tensor:
    """(d,) d_A: the token's unembedding row read back through the final norm's gain and centring, scale left out."""
    u = readout(runner, [token_id]).rows[0]  # (d,)
    return u if runner.final_norm is None else _gain_adjoint(runner, runner.final_norm, u)


def _gain_adjoint(runner: ModelRunner, norm: torch.nn.Module, d: torch.Tensor) -> torch.Tensor:
    """(d,) d read back through a norm's gain and centring, its per-position scale left out (taken as 1)."""
    gain, _bias = gain_and_bias(norm, runner.adapter.norm)
    return FrozenNorm(torch.ones(()), None if gain is None else gain.cpu(), None, runner.adapter.norm.kind == "layer").adjoint(d)


def _through_post_map(runner: ModelRunner, kind: str, layer: int, d: torch.Tensor) -> torch.Tensor:
    """(d,) the read-out of a raw sublayer output: d pulled back through a post-norm's gain (scale 1) and any multiplier."""
    path = getattr(runner.adapter, f"{kind}_post_norm")
    if path:
        d = _gain_adjoint(runner, resolve(runner.blocks[layer], path), d)
    return d * (runner.residual_multiplier or 1.0)


@torch.no_grad()
def neuron_weight_scores(runner: ModelRunner, d: torch.Tensor) -> torch.Tensor:
    """(L, N) each neuron's value vector read along d (through the FFN's post-map): its effect per unit activation."""
    width = max(w.w_down.shape[0] for w in runner.layer_weights)
    out = torch.zeros(len(runner.blocks), width)
    for layer, w in enumerate(runner.layer_weights):
        dl = _through_post_map(runner, "ffn", layer, d)[None]  # (1, d)
        out[layer, : w.w_down.shape[0]] = torch.cat([times_transposed(dl, block)[0].cpu() for block in w.w_down.blocks])
    return out


@torch.no_grad()
def head_copy_scores(runner: ModelRunner, token_id: int, d: torch.Tensor) -> torch.Tensor:
    """(L, H) each head's copying score for the token: attending to the token itself, what it writes along d."""
    a = runner.adapter
    embedding = runner.model.get_input_embeddings()(torch.tensor([token_id], device=runner.device)).float()  # (1, d)
    out = torch.zeros(len(runner.blocks), runner.n_heads)
    ids = torch.tensor([[token_id], [token_id]])  # (2, 1): the layers below run on the token; their output is replaced
    for layer, block in enumerate(runner.blocks):
        norm = resolve(block, a.attn_norm) if a.attn_norm else None
        dev = runner.layer_devices[layer]
        x = embedding.to(dev)
        normed = x if norm is None else norm(x.to(norm.weight.dtype)).float()  # (1, d): the layer's input norm of A
        rows = torch.cat([normed, torch.zeros_like(normed)])[:, None]  # (2, 1, d): A, and zero for the value bias

        def patch(site: str, at: int, h: torch.Tensor, rows=rows, layer=layer) -> torch.Tensor | None:
            return rows if (site, at) == ("attn_in", layer) else None

        _q, _k, v = runner.attention_inputs(ids, torch.zeros(2, 1, dtype=torch.long), layer, patch)  # v (2, K, 1, hd)
        values = (v[0, :, 0] - v[1, :, 0])[runner.layer_weights[layer].kv_index]  # (H, hd): W_V n(E[A]) per head
        w_out = runner.layer_weights[layer].w_out.to(dev, torch.float32)  # (H, hd, d)
        dl = _through_post_map(runner, "attn", layer, d).to(dev)  # (d,)
        out[layer] = torch.einsum("hc,hcd,d->h", values, w_out, dl).cpu()
    return out


def search_token(analysis: Analysis, token: int | str, position: int = -1, k: int = 10, promote: bool = True) -> TokenSearch:
    """The heads and neurons that most promote (promote=False: suppress) `token`: in this prompt at `position`, and from
    the weights alone. See the module docstring for what each score means."""
    start = time.perf_counter()
    target = analysis.target(position, token)
    effects = analysis.direct_effects(target)
    d = unembedding_direction(analysis.runner, target.token_id)
    weight_heads = head_copy_scores(analysis.runner, target.token_id, d)
    weight_neurons = neuron_weight_scores(analysis.runner, d)
    return TokenSearch(
        token=target.token,
        token_id=target.token_id,
        position=target.position,
        promote=promote,
        in_context_heads=_ranked(effects.heads, "head", k, promote),
        in_context_neurons=_ranked(effects.neurons, "neuron", k, promote),
        weight_heads=_ranked(weight_heads, "head", k, promote),
        weight_neurons=_ranked(weight_neurons, "neuron", k, promote),
        seconds=time.perf_counter() - start,
    )
