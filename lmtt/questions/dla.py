"""A target token, an optional contrast token, and direct logit attribution (DLA).

The quantity explained at position i is m = logit_i(A) or m = logit_i(A) - logit_i(B),
the logit before any family transform (softcapping, scaling) that the model
applies afterwards. With the final norm's scale s_i frozen at its value in the
forward pass (as TransformerLens does), the logits are affine in the last
residual state x = resid[L][i]:

    m = u . (s_i g ⊙ P x + b) + c = d . x + u . b + c,     d = s_i P (g ⊙ u)

with u = W_U[A] - W_U[B] (the unembedding rows, through every unembedding
module), g, b the norm's gain and bias, P the LayerNorm centring (identity for
RMSNorm, and symmetric, which moves it onto u) and c the unembedding bias.
x is the embedding plus every attention and FFN update, so d . x splits exactly
into the direct effect of the embedding, every head (and every (head, source)
part), every FFN (and every neuron), and the output biases. What is not a
head or neuron part of an update (its bias, or anything a family adds) is
reported as that update's bias, so the parts always sum to the update.

Identity (tested): embedding + sum(attention) + sum(ffn) + norm_bias + unembed_bias
equals the model's own logit difference.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lmtt.engine.adapters import linear_weight
from lmtt.engine.attribution import head_parts
from lmtt.engine.levels import block_name, head_name, level_names, level_of, neuron_name
from lmtt.engine.norms import FrozenNorm, freeze
from lmtt.engine.runner import ModelRunner, Trace
from lmtt.engine.tokens import token_text
from lmtt.questions.lens import over_levels


class TargetError(ValueError):
    """A target or contrast token that is not one vocabulary token."""


@dataclass(frozen=True)
class Target:
    """What to explain: logit(A) at `position`, or logit(A) - logit(B) with a contrast B, or (log_prob) log p(A).

    log p(A) = logit(A) - logsumexp(logits) moves with p(A) whatever the route does to the other logits, so it is
    faithfulness's default. It is not affine in the residual stream: direct logit attribution refuses it.
    """

    position: int
    token_id: int
    token: str
    contrast_id: int | None = None
    contrast: str | None = None
    log_prob: bool = False

    @property
    def ids(self) -> list[int]:
        return [self.token_id] if self.contrast_id is None else [self.token_id, self.contrast_id]

    def measure(self, logits: torch.Tensor) -> torch.Tensor:
        """(...) the quantity m from logits (..., V): logit(A), minus logit(B) with a contrast; or log p(A). The one definition of m."""
        if self.log_prob:
            return logits.float().log_softmax(-1)[..., self.token_id]
        m = logits[..., self.token_id]
        return m if self.contrast_id is None else m - logits[..., self.contrast_id]

    def describe(self, shown: Callable[[str], str] = repr) -> str:
        """The quantity in words, each token as `shown` writes it: repr in exports and messages (logit(' Paris')),
        the views' visible white space in titles (logit(␣Paris))."""
        if self.log_prob:
            return f"log p({shown(self.token)})"
        a = f"logit({shown(self.token)})"
        return a if self.contrast_id is None else f"{a} - logit({shown(self.contrast)})"

    def linear(self) -> Target:
        """This target, checked to be a logit quantity (direct attribution and the target lens explain logits)."""
        if self.log_prob:
            raise TargetError(
                f"{self.describe()} is not a linear function of the residual stream, so it has no direct effects: "
                "explain logit(A) or logit(A) - logit(B)"
            )
        return self

    def to_dict(self) -> dict:
        return {
            "position": self.position,
            "token": self.token,
            "token_id": self.token_id,
            "contrast": self.contrast,
            "contrast_id": self.contrast_id,
            "log_prob": self.log_prob,
        }


UNDEFINED_BELOW = 1e-3  # logits (or nats, for log p): a difference m(full) - m(baseline) this small makes a fraction noise


def fraction_restored(value: float | torch.Tensor, baseline: float, full: float) -> float | torch.Tensor:
    """(value - baseline) / (full - baseline): the share of m that a route or a patch keeps.

    NaN ("undefined") where |full - baseline| < UNDEFINED_BELOW logits: faithfulness and patching then
    measure noise, and must say so rather than print a large number.
    """
    denom = full - baseline
    if abs(denom) < UNDEFINED_BELOW:
        return torch.full_like(value, float("nan")) if isinstance(value, torch.Tensor) else float("nan")
    return (value - baseline) / denom


def json_number(x: float) -> float | None:
    """A float for JSON: NaN and infinities become null ("undefined"), not the invalid token NaN."""
    return x if math.isfinite(x) else None


def vocab_size(runner: ModelRunner) -> int:
    return linear_weight(runner.unembed_modules[-1], False).shape[0]


def token_id(runner: ModelRunner, token: int | str) -> int:
    """A vocabulary id from an id, a token's exact text (' Paris'), or '<id>' (tiny models without a tokenizer)."""
    n = vocab_size(runner)
    if isinstance(token, str) and token.startswith("<") and token.endswith(">") and token[1:-1].isdigit():
        token = int(token[1:-1])
    if isinstance(token, int) and not isinstance(token, bool):
        if not 0 <= token < n:
            raise TargetError(f"token id {token} is out of range: the vocabulary has {n} tokens")
        return token
    if not isinstance(token, str) or token == "":
        raise TargetError(f"not a token: {token!r} (give a token's text, e.g. ' Paris', or its id)")
    if runner.tokenizer is None:
        raise TargetError("this runner has no tokenizer: give the token as an id or '<id>'")
    ids = runner.tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = [runner.decode(i) for i in ids]
        raise TargetError(f"{token!r} is {len(ids)} tokens {pieces}, not one; pick one vocabulary token (mind the leading space)")
    return int(ids[0])


_VOCAB: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # runner -> every token's text, decoded once


def vocabulary(runner: ModelRunner) -> list[str]:
    """Every token's text, by id (decoded once per runner)."""
    if runner not in _VOCAB:
        n = vocab_size(runner)
        _VOCAB[runner] = runner.tokenizer.batch_decode([[i] for i in range(n)]) if runner.tokenizer else [f"<{i}>" for i in range(n)]
    return _VOCAB[runner]


def search_vocabulary(runner: ModelRunner, query: str, k: int = 30) -> list[int]:
    """Ids of tokens whose text contains `query` (case-insensitive).

    Best first: the same word (case first, then a leading space, as a word inside a sentence), then shortest.
    """
    word = query.strip()
    if not word:
        return []
    q = word.lower()
    vocab = vocabulary(runner)
    hits = [i for i, text in enumerate(vocab) if q in text.lower()]
    hits.sort(key=lambda i: (vocab[i].strip().lower() != q, vocab[i].strip() != word, not vocab[i].startswith(" "), len(vocab[i]), i))
    return hits[:k]


def make_target(
    runner: ModelRunner, trace: Trace, position: int, token: int | str | None = None, contrast: int | str | None = None
) -> Target:
    """The target at `position`: token A (default: the model's top prediction there), contrast B optional."""
    a = int(trace.logits_at(position).argmax()) if token is None or token == "" else token_id(runner, token)
    b = None if contrast is None or contrast == "" else token_id(runner, contrast)
    if b == a:
        raise TargetError(f"the contrast token is the target token ({runner.decode(a)!r}): the difference would be 0")
    return Target(position, a, token_text(runner, a), b, None if b is None else token_text(runner, b))


@dataclass(frozen=True)
class Readout:
    """The logits of the target tokens as an affine map of residual states after the final norm.

    rows (k, d): unembedding rows of the target ids (through every unembedding module);
    const (k,): the unembedding's bias chain at those ids.
    """

    rows: torch.Tensor  # (k, d)
    const: torch.Tensor  # (k,)

    @property
    def contrast_row(self) -> torch.Tensor:
        """(d,) u: row A, minus row B when there is a contrast."""
        return self.rows[0] - self.rows[1] if self.rows.shape[0] > 1 else self.rows[0]

    @property
    def contrast_const(self) -> float:
        return float(self.const[0] - self.const[1]) if self.const.shape[0] > 1 else float(self.const[0])


@torch.no_grad()
def readout(runner: ModelRunner, ids: list[int]) -> Readout:
    modules = runner.unembed_modules
    idx = torch.tensor(ids)
    rows = linear_weight(modules[-1], False).detach()[idx.to(modules[-1].weight.device)].float()  # (k, d_last_in): the rows only
    for module in reversed(modules[:-1]):
        rows = rows @ linear_weight(module, False).detach().float()  # (k, d_in)
    zero_in = linear_weight(modules[0], False).shape[1]
    c = torch.zeros(zero_in, device=rows.device)
    for module in modules:
        c = module(c.to(module.weight.dtype)).float()  # the affine chain at 0: its bias
    scale = getattr(runner, "scale_logits", lambda x: x)  # a family's logit multiplier or divisor (linear)
    return Readout(scale(rows).cpu(), scale(c[idx.to(c.device)]).cpu())


@torch.no_grad()
def frozen_final_norm(runner: ModelRunner, x: torch.Tensor) -> FrozenNorm | None:
    """The final norm at state x (d,) with its scale frozen from the module's own output."""
    if runner.final_norm is None:
        return None
    m = runner.final_norm
    y = m(x.to(m.weight.device, m.weight.dtype)[None]).float()[0]  # (d,)
    frozen = freeze(m, runner.adapter.norm, x.to(y.device)[None], y[None])  # the family's norm, as adapter data
    return FrozenNorm(frozen.scale.cpu(), _cpu(frozen.gain), _cpu(frozen.bias), frozen.center)


def _cpu(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.cpu()


@dataclass(frozen=True)
class Component:
    """One component's direct effect on the target quantity, in logits."""

    kind: str  # "embedding" | "head" | "attention bias" | "ffn" | "neuron" | "ffn bias" | "norm bias" | "unembed bias"
    layer: int
    index: int  # head or neuron; -1 when not applicable
    value: float

    @property
    def name(self) -> str:
        if self.kind == "head":
            return head_name(self.layer, self.index)
        if self.kind == "neuron":
            return neuron_name(self.layer, self.index)
        return self.kind if self.layer < 0 else f"{self.kind} L{self.layer}"


@dataclass(frozen=True)
class EffectsAlong:
    """Every component's effect d . z along one read-out direction d at one position: the embedding, each head (and
    each (head, source) part), each attention and FFN update, each neuron and the output biases. Layers past the
    state that d reads are zero. L layers, H heads, T tokens, N neurons."""

    embedding: float
    attention: torch.Tensor  # (L,) each attention update
    heads: torch.Tensor  # (L, H) each head (its parts summed over sources)
    head_sources: torch.Tensor  # (L, H, T) each (head, source) part; zero for sources after the position
    attention_bias: torch.Tensor  # (L,) the attention update minus its head parts (the output bias)
    ffn: torch.Tensor  # (L,) each FFN update
    neurons: torch.Tensor  # (L, N) each neuron
    ffn_bias: torch.Tensor  # (L,) the FFN update minus its neuron parts (the output bias)

    def top_heads(self, k: int = 10) -> list[Component]:
        """Heads with the largest |effect|: boosters (> 0) and suppressors (< 0)."""
        flat = self.heads.flatten()
        idx = flat.abs().topk(min(k, flat.numel())).indices.tolist()
        h = self.heads.shape[1]
        return [Component("head", i // h, i % h, float(flat[i])) for i in idx]

    def top_neurons(self, k: int = 10) -> list[Component]:
        flat = self.neurons.flatten()
        idx = flat.abs().topk(min(k, flat.numel())).indices.tolist()
        n = self.neurons.shape[1]
        return [Component("neuron", i // n, i % n, float(flat[i])) for i in idx]

    def tops(self, k: int = 10) -> dict:
        """The JSON of the k largest heads and neurons."""
        return {
            "top_heads": [{"layer": c.layer, "head": c.index, "effect": c.value} for c in self.top_heads(k)],
            "top_neurons": [{"layer": c.layer, "neuron": c.index, "effect": c.value} for c in self.top_neurons(k)],
        }


@dataclass(frozen=True)
class DirectEffects(EffectsAlong):
    """Direct effect of every component on the target quantity at one position (exact under the frozen norm scale)."""

    target: Target
    value: float  # the model's own logit (difference), before any family logit transform
    direction: torch.Tensor  # (d,) d = s P(g ⊙ u): a residual vector's direct effect is d . x
    norm_bias: float  # u . b, the final norm's bias through the unembedding
    unembed_bias: float  # the unembedding's own bias
    scale: float  # the frozen final-norm scale s_i
    unexplained: float  # d . (resid[L] - embedding - updates): 0 up to float error when the residual stream adds up

    @property
    def total(self) -> float:
        """The sum of every direct effect: equals `value` (the identity)."""
        return self.embedding + float(self.attention.sum() + self.ffn.sum()) + self.norm_bias + self.unembed_bias

    def components(self) -> list[Component]:
        """Embedding, heads, attention biases, neurons, FFN biases and the norm/unembedding biases: they sum to `value`."""
        out = [Component("embedding", -1, -1, self.embedding)]
        n_layers, n_heads = self.heads.shape
        for layer in range(n_layers):
            out += [Component("head", layer, h, v) for h, v in enumerate(self.heads[layer].tolist())]
            out.append(Component("attention bias", layer, -1, float(self.attention_bias[layer])))
            out += [Component("neuron", layer, n, v) for n, v in enumerate(self.neurons[layer].tolist())]
            out.append(Component("ffn bias", layer, -1, float(self.ffn_bias[layer])))
        out += [Component("norm bias", -1, -1, self.norm_bias), Component("unembed bias", -1, -1, self.unembed_bias)]
        return out

    def to_dict(self, k: int = 10) -> dict:
        return {
            "target": self.target.to_dict(),
            "quantity": self.target.describe(),
            "value": self.value,
            "sum_of_direct_effects": self.total,
            "final_norm_scale": self.scale,
            "embedding": self.embedding,
            "attention": self.attention.tolist(),
            "ffn": self.ffn.tolist(),
            "heads": self.heads.tolist(),
            "attention_bias": self.attention_bias.tolist(),
            "ffn_bias": self.ffn_bias.tolist(),
            "norm_bias": self.norm_bias,
            "unembed_bias": self.unembed_bias,
            **self.tops(k),
        }


@torch.no_grad()
def direct_effects(runner: ModelRunner, trace: Trace, target: Target) -> DirectEffects:
    """Every component's direct effect on the target quantity: one pass over the layers, no model run."""
    target = target.linear()
    i, n_layers = target.position, trace.n_layers
    r = readout(runner, target.ids)
    u = r.contrast_row  # (d,)
    x_last = trace.resid[n_layers][i].cpu()  # (d,)
    frozen = frozen_final_norm(runner, x_last)
    if frozen is None:
        direction, norm_bias, scale = u, 0.0, 1.0
    else:
        direction, scale = frozen.adjoint(u), float(frozen.scale)  # (d,) s P(g ⊙ u)
        norm_bias = 0.0 if frozen.bias is None else float(frozen.bias @ u)
    along = effects_along(runner, trace, direction, i, 2 * n_layers)
    summed = trace.resid[0][i] + sum(trace.attn_out[l][i] + trace.ffn_out[l][i] for l in range(n_layers))  # (d,)
    unexplained = float((trace.resid[n_layers][i] - summed) @ direction.to(summed.device))
    logits = pre_softcap(runner, trace.logits_at(i))  # (V,)
    value = float(target.measure(logits))
    return DirectEffects(
        **vars(along), target=target, value=value, direction=direction.cpu(), norm_bias=norm_bias,
        unembed_bias=r.contrast_const, scale=scale, unexplained=unexplained,
    )  # fmt: skip


@torch.no_grad()
def effects_along(runner: ModelRunner, trace: Trace, direction: torch.Tensor, position: int, level: int) -> EffectsAlong:
    """Each component's effect d . z on the residual state at (level, position) along d (d,): exact, since the state is
    the embedding plus every update below it. One pass over the layers up to that level, no model run."""
    n_layers, i = trace.n_layers, position
    heads = torch.zeros(n_layers, trace.n_heads)
    sources = torch.zeros(n_layers, trace.n_heads, trace.n_tokens)
    attn, ffn, attn_bias, ffn_bias = (torch.zeros(n_layers) for _ in range(4))
    neurons = torch.zeros(n_layers, max(w.w_down.shape[0] for w in runner.layer_weights))  # MoE: virtual neuron ids
    dev = trace.resid[0].device
    d = direction.to(dev, torch.float32)
    for layer in range(n_layers):
        if level_of("attn", layer) > level:
            break  # the state does not contain this layer
        w = runner.layer_weights[layer]
        d_attn = _pull_back(_map(trace, "attn", layer), d, i)  # (d,): a raw head output z reaches d . map(z) = d_attn . z
        w_d = w.w_out.to(dev, torch.float32) @ d_attn  # (H, hd): each head's context read along d
        part = head_parts(trace, w, layer, i, w_out=w_d[..., None])[..., 0].T  # (H, J)
        sources[layer, :, : i + 1] = part.cpu()
        heads[layer] = part.sum(-1).cpu()
        attn[layer] = float(trace.attn_out[layer][i] @ d)
        attn_bias[layer] = attn[layer] - heads[layer].sum()
        if level_of("ffn", layer) > level:
            break
        d_ffn = _pull_back(_map(trace, "ffn", layer), d, i)  # (d,)
        ids, acts = _neurons(trace, layer, i)  # (M,), (M,)
        neurons[layer].index_add_(0, ids.cpu(), (acts * (w.w_down[ids].to(dev) @ d_ffn)).cpu())
        ffn[layer] = float(trace.ffn_out[layer][i] @ d)
        ffn_bias[layer] = ffn[layer] - neurons[layer].sum()
    embedding = float(trace.resid[0][i] @ d)
    return EffectsAlong(embedding, attn, heads, sources, attn_bias, ffn, neurons, ffn_bias)


@dataclass(frozen=True)
class ProbeEffects(EffectsAlong):
    """A linear probe's reading w . x of the residual state x at one node, split exactly over the components below it."""

    node: str
    value: float  # w . x, the probe's reading of the state

    @property
    def total(self) -> float:
        return self.embedding + float(self.attention.sum() + self.ffn.sum())

    def to_dict(self, k: int = 10) -> dict:
        return {
            "node": self.node,
            "value": self.value,
            "sum_of_effects": self.total,
            "embedding": self.embedding,
            "attention": self.attention.tolist(),
            "ffn": self.ffn.tolist(),
            **self.tops(k),
        }


def load_direction(source: str | bytes, d_model: int, name: str | None = None) -> torch.Tensor:
    """(d,) float32 from a .npy or .pt file (a path, or its bytes with its `name`) holding one vector of the model's width:
    a linear probe, a steering vector. No pickles: a file that needs one is refused."""
    import io

    import numpy as np

    name = name or str(source)
    data = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        raw = torch.from_numpy(np.load(data, allow_pickle=False)) if name.endswith(".npy") else torch.load(data, weights_only=True)
    except Exception as e:  # a corrupt, pickled or unreadable file: say which
        raise ValueError(f"cannot read a direction from {name}: {type(e).__name__}: {e}") from None
    if not isinstance(raw, torch.Tensor):
        raise ValueError(f"{name} holds a {type(raw).__name__}, not one tensor")
    vector = raw.detach().float().squeeze()
    if vector.shape != (d_model,):
        raise ValueError(f"a direction must have shape ({d_model},), the model's width; {name} has {tuple(raw.shape)}")
    if not torch.isfinite(vector).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return vector


def pre_softcap(runner: ModelRunner, logits: torch.Tensor) -> torch.Tensor:
    """The logits before a family's final softcap (Gemma-2: cap * tanh(x / cap)): what DLA explains."""
    cap = getattr(runner, "logit_softcap", None)
    if cap is None:
        return logits
    return torch.atanh((logits / cap).clamp(-1 + 1e-7, 1 - 1e-7)) * cap


def _map(trace: Trace, kind: str, layer: int) -> FrozenNorm | None:
    maps = getattr(trace, f"{kind}_map", ())
    return maps[layer] if maps else None


def _pull_back(m: FrozenNorm | None, d: torch.Tensor, row: int) -> torch.Tensor:
    """(d,) the read-out of a raw sublayer output at one row: d . m(z) = pull_back(d) . z (identity without a map)."""
    return d if m is None else m.adjoint(d, row)


def _neurons(trace: Trace, layer: int, position: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, acts) of the FFN neurons at a position (MoE: the chosen experts' virtual ids)."""
    if hasattr(trace, "neurons"):
        return trace.neurons(layer, position)
    acts = trace.neuron_acts[layer][position]  # (N,)
    return torch.arange(acts.shape[0]), acts


@torch.no_grad()
def lens_logits(runner: ModelRunner, trace: Trace, target: Target) -> torch.Tensor:
    """(2L+1, T, k) logit lens of the target ids (A, then B) at every node level and position, through the final norm.

    Levels as in the graph: 0 embeddings, 2l+1 after layer l's attention, 2l+2 after its FFN.
    Only the k target rows of the unembedding are read: no (T, V) logits.
    """
    r = readout(runner, target.ids)
    rows, const = r.rows.to(runner.device), r.const.to(runner.device)

    def read(state: torch.Tensor) -> torch.Tensor:
        x = state.to(runner.device)
        if runner.final_norm is not None:
            x = runner.final_norm(x.to(runner.final_norm.weight.dtype)).float()
        return x @ rows.T + const  # (T, k)

    return over_levels(trace, read)


@dataclass(frozen=True)
class LensGrid:
    """Logit lens of the target at every node (level, position): A, B and the quantity A - B."""

    target: Target
    a: torch.Tensor  # (2L+1, T) logit of A
    b: torch.Tensor | None  # (2L+1, T) logit of B
    levels: tuple[str, ...]  # row names: emb, L0 attn, L0 ffn, ...

    @property
    def quantity(self) -> torch.Tensor:
        """(2L+1, T) logit(A) - logit(B), or logit(A) without a contrast."""
        return self.a if self.b is None else self.a - self.b

    def to_dict(self) -> dict:
        out = {"levels": list(self.levels), "a": self.a.tolist(), "quantity": self.quantity.tolist()}
        if self.b is not None:
            out["b"] = self.b.tolist()
        return out


def lens_grid(runner: ModelRunner, trace: Trace, target: Target) -> LensGrid:
    target = target.linear()
    logits = lens_logits(runner, trace, target)  # (2L+1, T, k)
    b = logits[..., 1] if target.contrast_id is not None else None
    return LensGrid(target, logits[..., 0], b, level_names(trace.n_layers))


@dataclass(frozen=True)
class DirectEdge:
    """A component whose direct effect on the target passes a threshold, drawn into the graph beside flow edges.

    A head's edge runs from its strongest source's state (level 2*layer, position `source`)
    into the attention node it writes (attn:layer:target); an FFN's runs from attn:layer:target
    into ffn:layer:target.
    """

    kind: str  # "head" | "ffn"
    layer: int
    index: int  # head; -1 for an FFN
    source: int  # position of the source (the head's largest |(head, source)| part)
    target: int  # the explained position
    effect: float  # direct effect on the quantity, in logits (< 0: suppressor)

    @property
    def name(self) -> str:
        return head_name(self.layer, self.index) if self.kind == "head" else block_name("ffn", self.layer)

    @property
    def into(self) -> str:
        return f"{'attn' if self.kind == 'head' else 'ffn'}:{self.layer}:{self.target}"

    @property
    def from_node(self) -> str:
        if self.kind == "ffn":
            return f"attn:{self.layer}:{self.target}"
        return f"emb:{self.source}" if self.layer == 0 else f"ffn:{self.layer - 1}:{self.source}"

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "layer": self.layer,
            "index": self.index,
            "source": self.from_node,
            "target": self.into,
            "effect": self.effect,
        }


def direct_edges(effects: DirectEffects, min_effect: float) -> list[DirectEdge]:
    """Heads and FFNs whose |direct effect| >= min_effect (logits), largest first: boosters and suppressors."""
    if not min_effect >= 0 or min_effect == float("inf"):
        raise ValueError(f"min_effect must be a finite number >= 0, got {min_effect}")
    i = effects.target.position
    out = []
    for layer, h in (effects.heads.abs() >= min_effect).nonzero().tolist():
        source = int(effects.head_sources[layer, h].abs().argmax())
        out.append(DirectEdge("head", layer, h, source, i, float(effects.heads[layer, h])))
    for layer in (effects.ffn.abs() >= min_effect).nonzero().flatten().tolist():
        out.append(DirectEdge("ffn", layer, -1, i, i, float(effects.ffn[layer])))
    return sorted(out, key=lambda e: -abs(e.effect))
