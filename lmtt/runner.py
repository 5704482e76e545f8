"""One hooked forward pass that records what attribution needs, as a frozen Trace.

Hooks are installed once, when the runner is built, and write only into a
recorder held in a ContextVar; attention runs through lmtt's own attention
implementation (lmtt.attention), which records queries, keys and values. A thread (or a Streamlit session) that is not
tracing sees a no-op hook, and two threads tracing at once each record into
their own recorder: nothing about a call is stored on the shared modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmtt import attention
from lmtt import edits as edits_module
from lmtt.adapters import Adapter, adapter_for, is_parallel, linear_weight, resolve
from lmtt.attention import RECORDER as _RECORDER
from lmtt.edits import Edit


class PromptError(ValueError):
    """The prompt cannot be analysed (empty, too long, ...)."""


@dataclass(frozen=True)
class Trace:
    """Everything one forward pass left behind, in float32 on the CPU or the model's device.

    Shapes: L layers, T tokens, d model width, H heads, K key/value heads,
    hd head width, N FFN neurons, V vocabulary.

    For parallel-block families (attention and FFN both read the block input),
    `mid(layer)` is a virtual state: the residual plus the attention update.
    The graph keeps one shape for every family this way.

    Per-layer tensors are tuples of the model's own outputs, not stacked copies:
    stacking would copy hundreds of MB at long prompts for nothing.
    """

    token_ids: torch.Tensor  # (T,)
    tokens: tuple[str, ...]
    resid: tuple[torch.Tensor, ...]  # L+1 x (T, d): resid[l] enters layer l, resid[L] leaves the last one
    attn_out: tuple[torch.Tensor, ...]  # L x (T, d): the attention block's update, bias included
    ffn_out: tuple[torch.Tensor, ...]  # L x (T, d): the FFN's update, bias included
    queries: tuple[torch.Tensor, ...]  # L x (H, T, hd): post-RoPE queries
    keys: tuple[torch.Tensor, ...]  # L x (K, T, hd): post-RoPE keys
    values: tuple[torch.Tensor, ...]  # L x (T, K, hd): value vectors, value bias included
    masks: tuple[torch.Tensor | None, ...]  # L x additive (T, T) mask (shared objects, not copies)
    scales: tuple[float, ...]  # L x the attention score scale
    kv_index: torch.Tensor  # (H,): the key/value head that head h reads
    neuron_acts: tuple[torch.Tensor, ...]  # L x (T, N): the FFN's hidden activations
    logits: torch.Tensor  # (T, V)
    parallel: bool
    edits: tuple[Edit, ...] = ()  # interventions applied during this pass
    head_scale: tuple[torch.Tensor, ...] = ()  # L x (H,): how each head's source parts were scaled by the edits

    @property
    def n_layers(self) -> int:
        return len(self.attn_out)

    @property
    def n_tokens(self) -> int:
        return self.token_ids.shape[0]

    @property
    def n_heads(self) -> int:
        return self.queries[0].shape[0]

    @property
    def d_model(self) -> int:
        return self.resid[0].shape[-1]

    def attention(self, layer: int, queries: slice | None = None, n_keys: int | None = None) -> torch.Tensor:
        """(H, C, J) attention weights of query rows `queries` (all by default) over the first J keys.

        Recomputed exactly as eager attention would (softmax(q k^T * scale + mask)), so a
        trace never holds the L x H x T x T weights.
        """
        queries = queries or slice(0, self.n_tokens)
        n_keys = self.n_tokens if n_keys is None else n_keys
        return attention.attention_weights(
            self.queries[layer], self.keys[layer], self.masks[layer], self.scales[layer], self.kv_index, queries, n_keys
        )

    def mid(self, layer: int, rows: int | slice = slice(None)) -> torch.Tensor:
        """(T, d), or the given rows: the state after attention, the residual plus the attention update."""
        return self.resid[layer][rows] + self.attn_out[layer][rows]


@dataclass(frozen=True)
class LayerWeights:
    """Read-only float32 views of one layer's output projections."""

    w_out: torch.Tensor  # (H, hd, d): head h's slice of W_O, rows are its context dims
    b_out: torch.Tensor | None  # (d,)
    w_down: torch.Tensor  # (N, d): neuron n's value vector is w_down[n]
    b_down: torch.Tensor | None  # (d,)
    kv_index: torch.Tensor  # (H,): the key/value head that head h reads


class ModelRunner:
    """A loaded causal LM with its adapter: traces prompts and unembeds states."""

    def __init__(self, model: nn.Module, tokenizer, name: str = "model"):
        model.eval()
        attention.register()
        model.set_attn_implementation(attention.NAME)
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.load_seconds = 0.0  # set by lmtt.loading.load_model
        self.adapter: Adapter = adapter_for(model.config)
        self.parallel = is_parallel(self.adapter, model.config)
        self.blocks = list(resolve(model, self.adapter.blocks))
        self.final_norm = resolve(model, self.adapter.final_norm)
        self.unembed_modules = [m for p in self.adapter.unembed if (m := resolve(model, p)) is not None]
        self.n_heads = model.config.num_attention_heads
        self.n_kv = getattr(model.config, "num_key_value_heads", None) or self.n_heads  # GQA: fewer key/value heads
        self.device = next(model.parameters()).device
        self.layer_weights = [self._layer_weights(b) for b in self.blocks]
        self.head_dim = self.layer_weights[0].w_out.shape[1]
        self._layer_of = {id(resolve(b, self.adapter.attention)): i for i, b in enumerate(self.blocks)}
        for i, block in enumerate(self.blocks):
            self._install_hooks(i, block)

    # ---- construction -------------------------------------------------
    def _layer_weights(self, block: nn.Module) -> LayerWeights:
        a = self.adapter
        out_proj, down_proj = resolve(block, a.out_proj), resolve(block, a.down_proj)
        w_o = linear_weight(out_proj, a.conv1d).detach().float()  # (d, H*hd)
        d = w_o.shape[0]
        w_out = w_o.T.reshape(self.n_heads, -1, d)  # (H, hd, d)
        w_down = linear_weight(down_proj, a.conv1d).detach().float().T  # (N, d)
        kv_index = torch.arange(self.n_heads, device=w_o.device) // (self.n_heads // self.n_kv)
        return LayerWeights(
            w_out=w_out,
            b_out=_float_or_none(out_proj.bias),
            w_down=w_down,
            b_down=_float_or_none(down_proj.bias),
            kv_index=kv_index,
        )

    def _install_hooks(self, layer: int, block: nn.Module) -> None:
        a = self.adapter

        def block_in(_m, args, kwargs):
            if (rec := _RECORDER.get()) is not None:
                hidden = args[0] if args else kwargs["hidden_states"]
                rec["resid"][layer] = _row(hidden, rec)

        def block_out(_m, _args, output):
            if (rec := _RECORDER.get()) is not None and layer == len(self.blocks) - 1:
                hidden = output[0] if isinstance(output, tuple) else output
                rec["resid"][layer + 1] = _row(hidden, rec)

        def out_proj_in(_m, args):
            if (rec := _RECORDER.get()) is not None and (edits := rec["edits"].get(("head", layer))):
                return (edits_module.apply(args[0], edits, self.head_dim), *args[1:])
            return None

        def down_proj_in(_m, args):
            if (rec := _RECORDER.get()) is not None and (edits := rec["edits"].get(("neuron", layer))):
                return (edits_module.apply(args[0], edits, 1), *args[1:])
            return None

        def out_proj_out(_m, _args, output):
            if (rec := _RECORDER.get()) is not None:
                rec["attn_out"][layer] = _row(output, rec)

        def down_proj_io(_m, args, output):
            if (rec := _RECORDER.get()) is not None:
                rec["neuron_acts"][layer] = _row(args[0], rec)
                rec["ffn_out"][layer] = _row(output, rec)

        block.register_forward_pre_hook(block_in, with_kwargs=True)
        block.register_forward_hook(block_out)
        resolve(block, a.out_proj).register_forward_pre_hook(out_proj_in)
        resolve(block, a.out_proj).register_forward_hook(out_proj_out)
        resolve(block, a.down_proj).register_forward_pre_hook(down_proj_in)
        resolve(block, a.down_proj).register_forward_hook(down_proj_io)

    # ---- use ----------------------------------------------------------
    def tokenize(self, prompt: str) -> torch.Tensor:
        """(T,) token ids of a prompt, as the model's tokenizer makes them."""
        check_prompt(prompt)
        if self.tokenizer is None:
            raise PromptError("this runner has no tokenizer: pass token ids instead of text")
        ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"][0]
        if ids.numel() == 0:
            raise PromptError("the prompt produced no tokens")
        return ids

    def decode(self, token_id: int) -> str:
        """One token's text; `<id>` when the runner has no tokenizer (tiny test models)."""
        return self.tokenizer.decode([token_id]) if self.tokenizer is not None else f"<{token_id}>"

    def token_strings(self, ids: torch.Tensor) -> tuple[str, ...]:
        return tuple(self.decode(t) for t in ids.tolist())

    @torch.no_grad()
    def trace(self, prompt: str | torch.Tensor, edits: tuple[Edit, ...] = ()) -> Trace:
        """Run one forward pass and record the residual stream and its parts, with optional edits."""
        ids = self.tokenize(prompt) if isinstance(prompt, str) else prompt.reshape(-1)
        n = len(self.blocks)
        head_scale = [torch.ones(self.n_heads) for _ in range(n)]
        grouped: dict[tuple[str, int], list[Edit]] = {}
        for e in edits:
            self.check_edit(e)
            grouped.setdefault((e.kind, e.layer), []).append(e)
            if e.kind == "head":
                head_scale[e.layer][e.index] *= e.head_scale
        rec = {k: [None] * n for k in ("q", "k", "v", "mask", "scale", "attn_out", "neuron_acts", "ffn_out")}
        rec["layer_of"] = self._layer_of
        rec["resid"] = [None] * (n + 1)
        rec["n_tokens"] = ids.numel()
        rec["edits"] = grouped
        token = _RECORDER.set(rec)
        try:
            out = self.model(input_ids=ids[None].to(self.device), use_cache=False)
        finally:
            _RECORDER.reset(token)
        missing = [k for k, v in rec.items() if isinstance(v, list) and k != "mask" and any(x is None for x in v)]
        if missing:
            raise RuntimeError(f"the forward pass did not reach every hook: {missing}")
        return Trace(
            token_ids=ids.cpu(),
            tokens=self.token_strings(ids),
            resid=tuple(rec["resid"]),
            attn_out=tuple(rec["attn_out"]),
            ffn_out=tuple(rec["ffn_out"]),
            queries=tuple(rec["q"]),
            keys=tuple(rec["k"]),
            values=tuple(rec["v"]),
            masks=tuple(rec["mask"]),
            scales=tuple(rec["scale"]),
            kv_index=self.layer_weights[0].kv_index,
            neuron_acts=tuple(rec["neuron_acts"]),
            logits=out.logits[0].float(),
            parallel=self.parallel,
            edits=tuple(edits),
            head_scale=tuple(head_scale),
        )

    def check_edit(self, e: Edit) -> None:
        limit = self.n_heads if e.kind == "head" else self.layer_weights[0].w_down.shape[0]
        if not 0 <= e.layer < len(self.blocks) or not 0 <= e.index < limit:
            raise IndexError(f"edit {e} is out of range: {len(self.blocks)} layers, {limit} {e.kind}s per layer")

    @torch.no_grad()
    def generate(self, prompt: str, n_tokens: int, seed: int | None = None, temperature: float = 1.0) -> str:
        """The prompt followed by `n_tokens` generated ones: greedy, or sampled with `seed` (reproducible).

        Analyse the result once: with causal attention, every position's graph and
        predictions are exactly those of a prompt that ended there.
        """
        if not 1 <= n_tokens <= 256:
            raise PromptError(f"generate between 1 and 256 tokens, not {n_tokens}")
        ids = self.tokenize(prompt)[None].to(self.device)
        sampling = seed is not None
        generator_state = torch.random.get_rng_state()
        if sampling:
            torch.manual_seed(seed)
        try:
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n_tokens,
                do_sample=sampling,
                temperature=temperature if sampling else None,
                top_k=None,
                top_p=None,
                pad_token_id=getattr(self.tokenizer, "eos_token_id", None) or 0,
            )
        finally:
            torch.random.set_rng_state(generator_state)
        return prompt + self.tokenizer.decode(out[0, ids.shape[1] :])

    @torch.no_grad()
    def unembed(self, states: torch.Tensor, final_norm: bool = True) -> torch.Tensor:
        """(..., V) logits of residual states: the logit lens, through the final norm by default."""
        x = states.to(self.device, self.final_norm.weight.dtype if self.final_norm is not None else states.dtype)
        if final_norm and self.final_norm is not None:
            x = self.final_norm(x)
        for module in self.unembed_modules:
            x = module(x)
        return x.float()

    @torch.no_grad()
    def unembed_direction(self, vectors: torch.Tensor) -> torch.Tensor:
        """(..., V) the unembedding applied linearly to updates: no norm, no bias.

        A block's update adds to the residual, so its direct effect on the
        logits is linear: this is what "promotes" and "suppresses" mean here.
        """
        x = vectors.float()
        for module in self.unembed_modules:
            x = x @ linear_weight(module, False).detach().float().T
        return x


def check_prompt(prompt: str, max_chars: int | None = None) -> str:
    """The prompt, or a PromptError that says what is wrong with it (before any model work)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError("the prompt is empty")
    if max_chars is not None and len(prompt) > max_chars:
        raise PromptError(f"the prompt has {len(prompt):,} characters; the limit is {max_chars:,}")
    bad = next((i for i, ch in enumerate(prompt) if 0xD800 <= ord(ch) <= 0xDFFF), None)
    if bad is not None:
        raise PromptError(f"the prompt is not valid Unicode: a lone surrogate (U+{ord(prompt[bad]):04X}) at character {bad}")
    return prompt


def _row(x: torch.Tensor, rec: dict) -> torch.Tensor:
    """(T, ·) float32 for the single prompt, whether a module saw (1, T, ·) or flattened (T, ·) (OPT's FFN)."""
    return x.detach().reshape(-1, rec["n_tokens"], x.shape[-1])[0].float()


def _float_or_none(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().float()
