"""One hooked forward pass that records what attribution needs, as a frozen Trace.

Hooks are installed once, when the runner is built, and write only into a
recorder held in a ContextVar; attention runs through lmtt's own attention
implementation (lmtt.engine.attention), which records queries, keys and values. A thread (or a Streamlit session) that is not
tracing sees a no-op hook, and two threads tracing at once each record into
their own recorder: nothing about a call is stored on the shared modules.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from lmtt.engine import attention, experts, hooks, levels, norms
from lmtt.engine import edits as edits_module
from lmtt.engine.adapters import Adapter, adapter_for, config_value, is_parallel, linear_weight, resolve
from lmtt.engine.attention import RECORDER as _RECORDER
from lmtt.engine.edits import Edit
from lmtt.engine.norms import FrozenNorm
from lmtt.engine.values import ValueVectors, times_transposed


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

    `attn_out` and `ffn_out` are the updates as the residual received them. Where
    a norm sits between a sublayer and the residual (Gemma-2/3, OLMo-2), or a
    multiplier scales the update (Granite), `attn_map[l]` / `ffn_map[l]` is that
    map with its per-position scale frozen (lmtt.engine.norms): a head's or a neuron's
    raw output z reaches the residual as map.linear(z), so parts still sum to
    the update (the norm's bias is one more constant part). None means identity.

    Mixture-of-experts layers: `neuron_acts[l]` holds, per position, the
    router-weighted activations of the chosen experts' neurons (then the shared
    expert's), and `neuron_ids[l]` their virtual ids (rows of LayerWeights.w_down).

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
    neuron_acts: tuple[torch.Tensor, ...]  # L x (T, N): the FFN's hidden activations (MoE: (T, M), see neuron_ids)
    last_logits: torch.Tensor  # (V,) the model's own logits at the last position (logits_at reads the others)
    parallel: bool
    edits: tuple[Edit, ...] = ()  # interventions applied during this pass
    head_scale: tuple[torch.Tensor, ...] = ()  # L x (H,): how each head's source parts were scaled by the edits
    attn_map: tuple[FrozenNorm | None, ...] = ()  # L x how a head's raw output reaches the residual (None: as is)
    ffn_map: tuple[FrozenNorm | None, ...] = ()  # L x how a neuron's raw output reaches the residual
    ffn_bias: tuple[torch.Tensor | None, ...] = ()  # L x (T, d) raw FFN output no neuron owns (biases), before ffn_map
    softcaps: tuple[float | None, ...] = ()  # L x attention logit softcap (Gemma-2)
    sinks: tuple[torch.Tensor | None, ...] = ()  # L x (H,) attention sink logits (GPT-OSS)
    neuron_ids: tuple[torch.Tensor | None, ...] = ()  # L x (T, M) int32 virtual neuron ids (MoE layers), None for dense
    expert_index: tuple[torch.Tensor | None, ...] = ()  # L x (T, k) the experts the router chose (MoE layers)
    expert_weight: tuple[torch.Tensor | None, ...] = ()  # L x (T, k) their router weights
    # sites a patch replaced ("ffn_update L3"): the parts of this pass no longer sum to its states (a patch of neuron
    # activations is recorded after it, so it is not listed), so this pass cannot be decomposed
    replaced: tuple[str, ...] = ()
    # the runner's unembed (final norm, unembedding, logit scale and softcap): a position's logits from its final state
    unembed: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def logits_at(self, position: int) -> torch.Tensor:
        """(V,) the logits at one position (negative counts from the end): the model's own at the last, the final
        state unembedded at the others. The pass unembeds only the last position, and the trace keeps no (T, V)
        table: at 4,000 tokens on SmolLM2 that table is 786 MB, and its unembedding 1.6 s of a 20 s pass."""
        position = range(self.n_tokens)[position]
        if position == self.n_tokens - 1:
            return self.last_logits
        return self.unembed(self.resid[-1][position : position + 1])[0].to(self.last_logits.device)

    @property
    def logits(self) -> torch.Tensor:
        """(T, V) every position's logits, unembedded when read (in blocks of rows): for a check or a notebook; the app
        reads one position at a time (logits_at)."""
        last = self.n_tokens - 1
        rows = [self.unembed(self.resid[-1][i : min(i + 256, last)]).to(self.last_logits.device) for i in range(0, last, 256)]
        return torch.cat([*rows, self.last_logits[None]])

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

    def attention(self, layer: int, queries: slice | torch.Tensor | None = None, n_keys: int | None = None) -> torch.Tensor:
        """(H, C, J) attention weights of query rows `queries` (a slice or sorted indices; all by default) over the first J keys.

        Recomputed exactly as eager attention would (softmax(q k^T * scale + mask)), so a
        trace never holds the L x H x T x T weights.
        """
        queries = slice(0, self.n_tokens) if queries is None else queries
        n_keys = self.n_tokens if n_keys is None else n_keys
        return attention.attention_weights(
            self.queries[layer],
            self.keys[layer],
            self.masks[layer],
            self.scales[layer],
            self.kv_index,
            queries,
            n_keys,
            self.softcaps[layer],
            self.sinks[layer],
        )

    def state(self, level: int, rows: int | slice = slice(None)) -> torch.Tensor:
        """(T, d), or the given rows: the residual-stream state at a node level (lmtt.engine.levels)."""
        if level % 2:  # after attention
            return self.mid(levels.layer_of(level), rows)
        return self.resid[level // 2][rows]

    def mid(self, layer: int, rows: int | slice = slice(None)) -> torch.Tensor:
        """(T, d), or the given rows: the state after attention, the residual plus the attention update."""
        return self.resid[layer][rows] + self.attn_out[layer][rows]

    def received(self, kind: str, layer: int, z: torch.Tensor, rows: int | slice | None = None) -> torch.Tensor:
        """Raw sublayer outputs z (rows, ..., d) as the residual receives them (kind "attn" or "ffn"); no norm bias."""
        m = (self.attn_map if kind == "attn" else self.ffn_map)[layer]
        return z if m is None else m.linear(z, rows)

    def neurons(self, layer: int, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (M,), acts (M,)): the FFN neurons at a position; ids are rows of LayerWeights.w_down."""
        acts = self.neuron_acts[layer][position]  # (M,)
        ids = self.neuron_ids[layer]
        return (torch.arange(acts.shape[0], device=acts.device) if ids is None else ids[position].long()), acts

    def neuron_activation(self, layer: int, neuron: int) -> torch.Tensor:
        """(T,) one neuron's activation at every position (0 where its expert was not chosen)."""
        ids = self.neuron_ids[layer]
        if ids is None:
            return self.neuron_acts[layer][:, neuron]
        return (self.neuron_acts[layer] * (ids == neuron)).sum(-1)


@dataclass(frozen=True)
class LayerWeights:
    """Read-only float32 views of one layer's output projections."""

    w_out: torch.Tensor  # (H, hd, d): head h's slice of W_O, a view in the model's dtype (upcast where it is used)
    b_out: torch.Tensor | None  # (d,)
    w_down: ValueVectors  # (N, d): neuron n's value vector is w_down[n] (MoE: expert e's neuron n is row e * N_e + n, then shared)
    b_down: torch.Tensor | None  # (d,) a dense FFN's output bias
    kv_index: torch.Tensor  # (H,): the key/value head that head h reads
    n_experts: int = 0  # routed experts in this layer (0: a dense FFN)
    expert_width: int = 0  # neurons per routed expert


class ModelRunner:
    """A loaded causal LM with its adapter: traces prompts and unembeds states."""

    def __init__(self, model: nn.Module, tokenizer, name: str = "model"):
        model.eval()
        attention.register()
        model.set_attn_implementation(attention.NAME)
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.load_seconds = 0.0  # set by lmtt.engine.loading.load_model
        self.check_report = None  # lmtt.engine.check.CheckReport of the probe run at load (lmtt.engine.loading.load_model)
        self.adapter: Adapter = adapter_for(model.config)
        if self.adapter.experts is not None:
            experts.register()
            model.set_experts_implementation(experts.NAME)
        config = model.config
        self.parallel = is_parallel(self.adapter, config)
        self.residual_multiplier = config_value(config, self.adapter.residual_multiplier)
        self.logit_multiplier = config_value(config, self.adapter.logit_multiplier)
        self.logit_divisor = config_value(config, self.adapter.logit_divisor)
        self.logit_softcap = config_value(config, self.adapter.logit_softcap)
        self.blocks = list(resolve(model, self.adapter.blocks))
        self.final_norm = resolve(model, self.adapter.final_norm)
        self.unembed_modules = [m for p in self.adapter.unembed if (m := resolve(model, p)) is not None]
        if self.unembed_modules:  # installed once, like the patch hooks: a no-op unless this thread's pass asks (run_patched)
            self.unembed_modules[0].register_forward_pre_hook(_unembed_only_at)
        self.n_heads = config.num_attention_heads
        self.n_kv = getattr(config, "num_key_value_heads", None) or self.n_heads  # GQA: fewer key/value heads
        self.device = next(model.parameters()).device
        self.layer_devices = [next(b.parameters()).device for b in self.blocks]  # one device unless a device map splits them
        self.layer_weights = [self._layer_weights(b) for b in self.blocks]
        self.head_dim = self.layer_weights[0].w_out.shape[1]
        self._layer_of = {id(resolve(b, self.adapter.attention)): i for i, b in enumerate(self.blocks)}
        self._experts_of = {id(m): i for i, b in enumerate(self.blocks) if (m := self._experts(b)) is not None}
        for i, block in enumerate(self.blocks):
            self._install_hooks(i, block)

    # ---- construction -------------------------------------------------
    def _experts(self, block: nn.Module) -> nn.Module | None:
        return resolve(block, self.adapter.experts) if self.adapter.experts else None

    def _layer_weights(self, block: nn.Module) -> LayerWeights:
        a = self.adapter
        out_proj = resolve(block, a.out_proj)
        w_o = linear_weight(out_proj, a.conv1d).detach()  # (d, H*hd), the model's dtype
        d = w_o.shape[0]
        w_out = w_o.T.reshape(self.n_heads, -1, d)  # (H, hd, d): a view, no copy
        kv_index = torch.arange(self.n_heads, device=w_o.device) // (self.n_heads // self.n_kv)
        moe = self._experts(block)
        if moe is None:
            down_proj = resolve(block, a.down_proj)
            w_down = ValueVectors([linear_weight(down_proj, a.conv1d).T])  # (N, d)
            return LayerWeights(w_out, _float_or_none(out_proj.bias), w_down, _float_or_none(down_proj.bias), kv_index)
        routed = experts.value_vectors(moe)  # E x (N_e, d)
        shared = resolve(block, f"{a.shared_expert}.down_proj") if a.shared_expert else None
        w_down = ValueVectors(routed if shared is None else [*routed, shared.weight.T])  # (E * N_e + N_s, d)
        return LayerWeights(w_out, _float_or_none(out_proj.bias), w_down, None, kv_index, moe.num_experts, routed[0].shape[0])

    def _install_hooks(self, layer: int, block: nn.Module) -> None:
        a = self.adapter
        last = layer == len(self.blocks) - 1
        moe = self._experts(block)
        shared_offset = self.layer_weights[layer].n_experts * self.layer_weights[layer].expert_width

        def block_in(_m, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            new = hooks.apply("resid", layer, hidden)
            if (rec := _RECORDER.get()) is not None:
                # on the block's device: a device map's hook moves the input only after this pre-hook
                rec["resid"][layer] = _row(hidden if new is None else new, rec).to(self.layer_devices[layer])
                _note_replaced(rec, "resid", layer, new)
            if new is None:
                return None
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})

        def block_out(_m, _args, output):
            if (rec := _RECORDER.get()) is not None and last:
                rec["resid"][layer + 1] = _row(output[0] if isinstance(output, tuple) else output, rec)

        def out_proj_in(_m, args):
            x = args[0]
            if (rec := _RECORDER.get()) is not None and (edits := rec["edits"].get(("head", layer))):
                x = edits_module.apply(x, edits, self.head_dim)
            if (new := hooks.apply("head_context", layer, x)) is not None:
                x = new
                _note_replaced(rec, "head_context", layer, new)
            return None if x is args[0] else (x, *args[1:])

        def neurons_in(offset: int):
            def hook(_m, args):
                x = args[0]
                rec = _RECORDER.get()
                mine = [e for e in rec["edits"].get(("neuron", layer), ()) if e.index >= offset] if rec is not None else []
                if mine:  # (B, T, N) for the causal means: OPT's FFN flattens a batch to (B * T, N)
                    rows = x.reshape(-1, rec["n_tokens"], x.shape[-1])
                    local = [Edit(e.kind, e.layer, e.index - offset, e.mode, e.factor) for e in mine]
                    x = edits_module.apply(rows, local, 1).reshape(x.shape)
                if offset == 0 and (new := hooks.apply("neuron_acts", layer, x)) is not None:
                    x = new
                if rec is not None:
                    rec["dense_acts"][layer] = _row(x, rec)
                return None if x is args[0] else (x, *args[1:])

            return hook

        def update_out(kind: str):
            """Record what the residual receives from a sublayer (the `{kind}_update` patch site)."""

            def hook(_m, args, output):
                y = output[0] if isinstance(output, tuple) else output
                new = hooks.apply(f"{kind}_update", layer, y)
                if (rec := _RECORDER.get()) is not None:
                    rec[f"{kind}_out"][layer] = _row(y if new is None else new, rec)
                    _note_replaced(rec, f"{kind}_update", layer, new)
                if new is None:
                    return None
                return (new, *output[1:]) if isinstance(output, tuple) else new

            return hook

        def post_norm_in(kind: str):
            def hook(_m, args):
                if (rec := _RECORDER.get()) is not None:
                    rec[f"{kind}_raw"][layer] = _row(args[0], rec)

            return hook

        def attn_in(_m, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            if (new := hooks.apply("attn_in", layer, hidden)) is None:
                return None
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})

        def qk_norm(site: str):
            """The replacement is the norm's output, computed from its input (a frozen norm)."""

            def hook(_m, args, output):
                return hooks.apply(site, layer, args[0])

            return hook

        def shared_gate(_m, _args, output):
            if (rec := _RECORDER.get()) is not None:
                rec["shared_gate"][layer] = torch.sigmoid(_row(output, rec))  # (T, 1)

        block.register_forward_pre_hook(block_in, with_kwargs=True)
        block.register_forward_hook(block_out)
        resolve(block, a.attention).register_forward_pre_hook(attn_in, with_kwargs=True)
        for site, path in (("q_norm", a.q_norm), ("k_norm", a.k_norm)):
            if path and (norm := resolve(block, path)) is not None:
                norm.register_forward_hook(qk_norm(site))
        resolve(block, a.out_proj).register_forward_pre_hook(out_proj_in)
        ffn = resolve(block, a.ffn) or resolve(block, a.down_proj)
        for kind, sublayer, post in (("attn", resolve(block, a.out_proj), a.attn_post_norm), ("ffn", ffn, a.ffn_post_norm)):
            post_norm = resolve(block, post) if post else None
            if post_norm is None:
                sublayer.register_forward_hook(update_out(kind))
            else:
                post_norm.register_forward_pre_hook(post_norm_in(kind))
                post_norm.register_forward_hook(update_out(kind))
        if moe is None:
            resolve(block, a.down_proj).register_forward_pre_hook(neurons_in(0))
        elif a.shared_expert:
            resolve(block, f"{a.shared_expert}.down_proj").register_forward_pre_hook(neurons_in(shared_offset))
            resolve(block, a.shared_expert_gate).register_forward_hook(shared_gate)

    # ---- use ----------------------------------------------------------
    def tokenize(self, prompt: str) -> torch.Tensor:
        """(T,) token ids of a prompt, as the model's tokenizer makes them. A text that already begins with the BOS
        token (a chat template's: Llama 3, Gemma) gets no second one from the tokenizer."""
        check_prompt(prompt)
        if self.tokenizer is None:
            raise PromptError("this runner has no tokenizer: pass token ids instead of text")
        bos = getattr(self.tokenizer, "bos_token", None)
        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=not (bos and prompt.startswith(bos)))["input_ids"][0]
        if ids.numel() == 0:
            raise PromptError("the prompt produced no tokens")
        return ids

    def decode(self, token_id: int) -> str:
        """One token's text; `<id>` when the runner has no tokenizer (tiny test models)."""
        return self.tokenizer.decode([token_id]) if self.tokenizer is not None else f"<{token_id}>"

    def token_strings(self, ids: torch.Tensor) -> tuple[str, ...]:
        return tuple(self.decode(t) for t in ids.tolist())

    @torch.no_grad()
    def trace(self, prompt: str | torch.Tensor, edits: tuple[Edit, ...] = (), patch: hooks.Patch | None = None) -> Trace:
        """Run one forward pass and record the residual stream and its parts, with optional edits or patches."""
        ids = self.tokenize(prompt) if isinstance(prompt, str) else prompt.reshape(-1)
        n = len(self.blocks)
        rec, head_scale = self._recorder(ids.numel(), edits)
        token = _RECORDER.set(rec)
        only_last = _UNEMBED_AT.set(-1)  # the other positions' logits are unembedded when read (Trace.logits_at)
        try:
            with hooks.patching(patch, 1, ids.numel()):
                out = self.model(input_ids=ids[None].to(self.device), use_cache=False)
        finally:
            _RECORDER.reset(token)
            _UNEMBED_AT.reset(only_last)
        required = ("q", "k", "v", "attn_out", "ffn_out", "resid")
        missing = [k for k in required if any(x is None for x in rec[k])]
        if missing:
            raise RuntimeError(f"the forward pass did not reach every hook: {missing}")
        ffn = [self._ffn_record(layer, rec) for layer in range(n)]
        maps = {kind: tuple(self._out_map(kind, layer, rec) for layer in range(n)) for kind in ("attn", "ffn")}  # before reading *_out
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
            neuron_acts=tuple(f[0] for f in ffn),
            last_logits=out.logits[0, -1].float().clone(),  # not a view that keeps a (T, V) table
            parallel=self.parallel,
            edits=tuple(edits),
            head_scale=tuple(head_scale),
            attn_map=maps["attn"],
            ffn_map=maps["ffn"],
            ffn_bias=tuple(f[2] for f in ffn),
            softcaps=tuple(rec["softcap"]),
            sinks=tuple(rec["sinks"]),
            neuron_ids=tuple(f[1] for f in ffn),
            expert_index=tuple(rec["expert_index"]),
            expert_weight=tuple(rec["expert_weight"]),
            replaced=tuple(rec["replaced"]),
            unembed=self.unembed,
        )

    def _recorder(self, n_tokens: int, edits: tuple[Edit, ...], whole_batch: bool = False) -> tuple[dict, list[torch.Tensor]]:
        """(what the hooks record into, each layer's (H,) head scales): the edits checked and grouped by unit.
        With `whole_batch`, attention keeps every row's queries, keys and values (lmtt.engine.attention)."""
        n = len(self.blocks)
        head_scale = [torch.ones(self.n_heads) for _ in range(n)]
        grouped: dict[tuple[str, int], list[Edit]] = {}
        for e in edits:
            self.check_edit(e)
            grouped.setdefault((e.kind, e.layer), []).append(e)
            if e.kind == "head":
                head_scale[e.layer][e.index] *= e.part_scale
        per_layer = ("q", "k", "v", "mask", "scale", "softcap", "sinks", "attn_out", "ffn_out", "attn_raw", "ffn_raw")
        optional = ("dense_acts", "expert_acts", "expert_index", "expert_weight", "shared_gate")
        rec = {k: [None] * n for k in per_layer + optional}
        rec.update(layer_of=self._layer_of, experts_of=self._experts_of, resid=[None] * (n + 1))
        rec.update(n_tokens=n_tokens, edits=grouped, replaced=[], whole_batch=whole_batch)
        return rec, head_scale

    @torch.no_grad()
    def run_patched(
        self, ids: torch.Tensor, patch: hooks.Patch, at: int | None = None, edits: tuple[Edit, ...] = (), read_attention: bool = False
    ) -> torch.Tensor:
        """(B, T, V) logits of token ids (B, T) with the patch applied at its sites (lmtt.engine.hooks).

        With `at`, (B, 1, V): only that position is unembedded (a question that reads one position skips the rest of
        the unembedding, a fifth of a small model's pass). With `edits` or `read_attention`, the pass applies the edits
        and records each row's attention inputs, which the patch may read (attention.RECORDER: "q" (B, H, T, hd),
        "k" (B, K, T, hd), "v" (B, T, K, hd), "mask", "scale"); otherwise nothing is recorded."""
        only_at = _UNEMBED_AT.set(at)  # this thread's pass only: another session's pass on the same model is untouched
        recording = _RECORDER.set(self._recorder(ids.shape[1], edits, whole_batch=True)[0]) if edits or read_attention else None
        try:
            with hooks.patching(patch, *ids.shape):
                return self.model(input_ids=ids.to(self.device), use_cache=False).logits.float()
        finally:
            if recording is not None:
                _RECORDER.reset(recording)
            _UNEMBED_AT.reset(only_at)

    @torch.no_grad()
    def attention_inputs(
        self, ids: torch.Tensor, positions: torch.Tensor, layer: int, patch: hooks.Patch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q (B, H, T, hd), k (B, K, T, hd), v (B, K, T, hd)) as one layer's attention function receives them, in a
        pass over token ids (B, T) at position ids (B, T) through `patch`. The pass ends there: later layers never run."""
        stop = attention.STOP_AT.set(id(resolve(self.blocks[layer], self.adapter.attention)))
        try:
            with hooks.patching(patch, *ids.shape):
                self.model(input_ids=ids.to(self.device), position_ids=positions.to(self.device), use_cache=False)
        except attention.Captured as done:
            return done.query, done.key, done.value
        finally:
            attention.STOP_AT.reset(stop)
        raise RuntimeError(f"the pass never reached layer {layer}'s attention")

    def _out_map(self, kind: str, layer: int, rec: dict) -> FrozenNorm | None:
        """How the sublayer's raw output reached the residual: its post-norm (frozen) times the residual multiplier."""
        post = getattr(self.adapter, f"{kind}_post_norm")
        frozen = None
        if post is not None:
            module = resolve(self.blocks[layer], post)
            frozen = norms.freeze(module, self.adapter.norm, rec[f"{kind}_raw"][layer], rec[f"{kind}_out"][layer])
        m = self.residual_multiplier
        if m is None:
            return frozen
        rec[f"{kind}_out"][layer] = rec[f"{kind}_out"][layer] * m  # the block applies it after our hooks
        if frozen is None:
            return FrozenNorm(torch.full((rec["n_tokens"],), m, device=rec[f"{kind}_out"][layer].device), None, None, False)
        return FrozenNorm(frozen.scale * m, frozen.gain, None if frozen.bias is None else frozen.bias * m, frozen.center)

    def _ffn_record(self, layer: int, rec: dict) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(neuron_acts (T, M), neuron_ids (T, M) or None, bias (T, d) or None) of one layer's FFN."""
        w = self.layer_weights[layer]
        dense = rec["dense_acts"][layer]
        if w.n_experts == 0:
            bias = None if w.b_down is None else w.b_down.expand(rec["n_tokens"], -1)
            return dense, None, bias
        index, n_e = rec["expert_index"][layer], w.expert_width  # (T, k)
        ids = (index[:, :, None] * n_e + torch.arange(n_e, device=index.device)).reshape(index.shape[0], -1)  # (T, k * N_e)
        acts = rec["expert_acts"][layer]  # (T, k * N_e)
        moe = self._experts(self.blocks[layer])
        bias = None
        if moe.has_bias:  # sum_k w_tk b^{e_k}
            bias = torch.einsum("tk,tkd->td", rec["expert_weight"][layer], moe.down_proj_bias.detach().float()[index])  # (T, d)
        if dense is not None:  # the shared expert, scaled by its gate
            gate = rec["shared_gate"][layer]  # (T, 1)
            acts = torch.cat([acts, dense * gate], dim=1)
            shared_ids = torch.arange(dense.shape[1], device=index.device) + w.n_experts * n_e
            ids = torch.cat([ids, shared_ids.expand(index.shape[0], -1)], dim=1)
        return acts, ids.to(torch.int32), bias

    def check_edit(self, e: Edit) -> None:
        if not 0 <= e.layer < len(self.blocks):
            raise IndexError(f"edit {e} is out of range: the model has {len(self.blocks)} layers")
        w = self.layer_weights[e.layer]
        limit = {"head": self.n_heads, "neuron": w.w_down.shape[0], "expert": w.n_experts}[e.kind]
        if not 0 <= e.index < limit:
            raise IndexError(f"edit {e} is out of range: {len(self.blocks)} layers, {limit} {e.kind}s in layer {e.layer}")
        if e.mode == "mean" and (e.kind == "expert" or (e.kind == "neuron" and e.index < w.n_experts * w.expert_width)):
            raise ValueError(f"edit {e}: mean ablation is defined for heads and dense neurons; zero or scale an expert or its neurons")

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
        """(..., V) logits of residual states: the logit lens, through the final norm by default.

        With the family's logit scale and softcap, so that the last state gives the model's own logits.
        """
        modules = ([self.final_norm] if final_norm and self.final_norm is not None else []) + self.unembed_modules
        x = states
        for module in modules:  # each where it lives (a device map may split them)
            p = next(module.parameters(), None)
            x = module(x if p is None else x.to(p.device, p.dtype))
        return self.softcap_logits(self.scale_logits(x.float()))

    def scale_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The family's linear logit scale (Cohere's logit_scale, Granite's logits_scaling)."""
        if self.logit_multiplier is not None:
            logits = logits * self.logit_multiplier
        if self.logit_divisor is not None:
            logits = logits / self.logit_divisor
        return logits

    def softcap_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Gemma-2's final softcap, cap * tanh(logits / cap): the one non-linear step after the unembedding."""
        if self.logit_softcap is None:
            return logits
        return torch.tanh(logits / self.logit_softcap) * self.logit_softcap

    @torch.no_grad()
    def unembed_direction(self, vectors: torch.Tensor) -> torch.Tensor:
        """(..., V) the unembedding applied linearly to updates: no norm, no bias.

        A block's update adds to the residual, so its direct effect on the
        logits is linear: this is what "promotes" and "suppresses" mean here.
        """
        x = vectors.float()
        for module in self.unembed_modules:
            x = times_transposed(x, linear_weight(module, False).detach())  # (..., out), W (out, in) upcast in slices
        return self.scale_logits(x)


_UNEMBED_AT: contextvars.ContextVar[int | None] = contextvars.ContextVar("lmtt_unembed_at", default=None)


def _unembed_only_at(_module: nn.Module, args: tuple) -> tuple | None:
    """The unembedding's pre-hook: hidden states (B, T, d) -> (B, 1, d) at the position that run_patched or trace
    asked for (trace: the last). Only a model's own pass (3-D states): the runner's unembed of chosen rows is untouched."""
    at = _UNEMBED_AT.get()
    return None if at is None or args[0].dim() != 3 else (args[0][:, at : (at + 1) or None], *args[1:])  # at = -1: the last position


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


def _note_replaced(rec: dict | None, site: str, layer: int, new: torch.Tensor | None) -> None:
    """Note in a recording that a patch replaced what the parts of this pass computed (Trace.replaced)."""
    if rec is not None and new is not None:
        rec["replaced"].append(f"{site} L{layer}")


def _row(x: torch.Tensor, rec: dict) -> torch.Tensor:
    """(T, ·) float32 for the single prompt, whether a module saw (1, T, ·) or flattened (T, ·) (OPT's FFN)."""
    return x.detach().reshape(-1, rec["n_tokens"], x.shape[-1])[0].float()


def _float_or_none(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().float()
