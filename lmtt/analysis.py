"""One analysed prompt: the trace, every contribution, and questions about them.

`analyze(runner, prompt)` runs the model once. Everything an Analysis answers
afterwards (paths for another token or threshold, logit lens, head and neuron
shares) reuses that one trace and never runs the model again.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import torch

from lmtt.engine.attribution import Contributions, compute_contributions
from lmtt.engine.edits import Edit
from lmtt.engine.graph import ContributionGraph, Subgraph, parse_node
from lmtt.engine.levels import level_of
from lmtt.engine.memory import held_bytes, release_freed_memory
from lmtt.engine.norms import FrozenNorm
from lmtt.engine.ondemand import OnDemandGraph, full_graph_max_tokens
from lmtt.engine.runner import ModelRunner, PromptError, Trace
from lmtt.questions import dla, groups, lens, neurons, qk, search, shares, vocabulary
from lmtt.questions import faithfulness as faithfulness_module
from lmtt.questions import patching as patching_module
from lmtt.questions.shares import ExpertContributions, HeadContributions, NeuronContributions
from lmtt.questions.vocabulary import Projection, TokenScore

TokenIds = torch.Tensor | list[int] | tuple[int, ...]

DEFAULT_THRESHOLD = 0.04
DEFAULT_MIN_EFFECT = 1.0  # logits: direct effects at least this large are drawn into the graph
MEMO_ENTRIES = 64  # answers kept per analysis (lens grids, direct effects, QK pairs): a page's rerun reuses them
T = TypeVar("T")


@dataclass
class Analysis:
    """`graph` is the full ContributionGraph, or an OnDemandGraph for a long prompt (computed where paths reach).

    `contributions` (every edge of every node) is computed on first use where the graph is on demand.
    """

    runner: ModelRunner
    trace: Trace
    _contributions: Contributions | None
    graph: ContributionGraph
    timings: dict[str, float] = field(default_factory=dict)
    _memo: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False, compare=False)
    _memo_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def _memoised(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The answer for `key`, computed once: the trace never changes, and a dashboard reruns its page on every click
        (the Interpretation page's lens grid was 1.4 s of each rerun). The least recently used are dropped."""
        with self._memo_lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        value = compute()  # outside the lock: another thread may compute the same answer meanwhile, never a wrong one
        with self._memo_lock:
            self._memo[key] = value
            while len(self._memo) > MEMO_ENTRIES:
                self._memo.popitem(last=False)
        return value

    @property
    def contributions(self) -> Contributions:
        if self._contributions is None:
            self._contributions = compute_contributions(self.trace, self.runner.layer_weights)
        return self._contributions

    @property
    def nbytes(self) -> int:
        """Bytes this analysis holds (trace, contributions, graph; not the model): what the app's cache weighs."""
        return held_bytes(self.trace, self._contributions, vars(self.graph))

    @property
    def on_demand(self) -> bool:
        return isinstance(self.graph, OnDemandGraph)

    @property
    def model_name(self) -> str:
        return self.runner.name

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.trace.tokens

    @property
    def n_layers(self) -> int:
        return self.trace.n_layers

    @property
    def n_heads(self) -> int:
        return self.trace.n_heads

    def position(self, token: int) -> int:
        """A token index (negative counts from the end) checked against the prompt."""
        t = self.trace.n_tokens
        if not isinstance(token, int) or not -t <= token < t:
            raise IndexError(f"token index {token!r} is out of range: the prompt has {t} tokens")
        return token % t

    def predictions(self, token: int = -1, k: int = 10) -> list[TokenScore]:
        """The model's own next-token distribution after `token`: top k."""
        probs = self.trace.logits_at(self.position(token)).softmax(-1)
        return vocabulary.top_tokens(self.runner, probs, k)

    def paths_to(self, token: int = -1, threshold: float = DEFAULT_THRESHOLD) -> Subgraph:
        return self.graph.paths_to(self.position(token), threshold)

    def paths_to_node(self, node: str, threshold: float = DEFAULT_THRESHOLD) -> Subgraph:
        """The edges above `threshold` that lead to any node ("ffn:12:4": why the residual after layer 12's FFN at
        token 4 is what it is); paths_to(token) is the same for the token's top node."""
        kind, layer, pos = self._node(node)
        return self.graph.paths_to_node(level_of(kind, layer), pos, threshold)

    # ---- nodes ---------------------------------------------------------
    def _node(self, node: str) -> tuple[str, int, int]:
        kind, layer, pos = parse_node(node)
        self.position(pos)
        if kind != "embedding" and not 0 <= layer < self.n_layers:
            raise IndexError(f"layer {layer} is out of range: the model has {self.n_layers} layers")
        return kind, layer, pos

    def state(self, node: str) -> torch.Tensor:
        """(d,) the residual-stream state that a node stands for."""
        kind, layer, pos = self._node(node)
        return self.trace.state(level_of(kind, layer), pos)

    def update(self, node: str) -> torch.Tensor:
        """(d,) what the node's block added: the attention or FFN update, or the embedding."""
        kind, layer, pos = self._node(node)
        if kind == "attn":
            return self.trace.attn_out[layer][pos]
        if kind == "ffn":
            return self.trace.ffn_out[layer][pos]
        return self.trace.resid[0][pos]

    def logit_lens(self, node: str, k: int = 10, final_norm: bool = True) -> list[TokenScore]:
        return vocabulary.logit_lens(self.runner, self.state(node), k, final_norm)

    def update_tokens(self, node: str, k: int = 10) -> Projection:
        """Tokens the node's block promoted and suppressed: its update's direct effect on each logit at the node's token."""
        return vocabulary.project(self.runner, self.update(node), self._final_norm(parse_node(node)[2]), k)

    def _final_norm(self, position: int) -> FrozenNorm | None:
        """The final norm frozen at a position's last state: the map that direct effects at that position go through."""
        return dla.frozen_final_norm(self.runner, self.trace.resid[self.n_layers][position])

    def lens_grid(self, token_id: int, final_norm: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(probability, rank) of one vocabulary token at every node level and position: (2L+1, T) each."""
        return self._memoised(("lens_grid", token_id, final_norm), lambda: lens.token_grid(self.runner, self.trace, token_id, final_norm))

    def top_lens_grid(self, final_norm: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(token id, probability) of the most likely token at every node level and position: (2L+1, T) each."""
        return self._memoised(("top_lens_grid", final_norm), lambda: lens.top_token_grid(self, final_norm))

    # ---- heads and neurons ---------------------------------------------
    def head_contributions(self, layer: int, token: int) -> HeadContributions:
        self._node(f"attn:{layer}:{self.position(token)}")
        return shares.head_contributions(self.runner, self.trace, layer, self.position(token))

    def head_tokens(self, layer: int, token: int, head: int, k: int = 10) -> Projection:
        """What head `head` of `layer` wrote at `token`: its direct effect on each logit there (= its DLA entry for that token)."""
        self._check_head(head)
        self._node(f"attn:{layer}:{self.position(token)}")
        update = shares.head_update(self.runner, self.trace, layer, self.position(token), head)
        return vocabulary.project(self.runner, update, self._final_norm(self.position(token)), k)

    def neuron_contributions(self, layer: int, token: int, k: int = 20) -> NeuronContributions:
        self._node(f"ffn:{layer}:{self.position(token)}")
        return shares.neuron_contributions(self.runner, self.trace, layer, self.position(token), k)

    def expert_contributions(self, layer: int, token: int) -> ExpertContributions:
        """Each chosen expert's share at a mixture-of-experts FFN node, with its router weight."""
        self._node(f"ffn:{layer}:{self.position(token)}")
        return shares.expert_contributions(self.runner, self.trace, layer, self.position(token))

    def neuron_label(self, layer: int, neuron: int) -> str:
        return shares.neuron_label(self.runner, layer, neuron)

    def neuron_tokens(self, layer: int, neuron: int, token: int = -1, k: int = 10) -> Projection:
        """What a neuron wrote at `token`: its activation there times its value vector, as the residual received it,
        and that update's direct effect on each logit (zero where its expert was not chosen)."""
        self._node(f"ffn:{layer}:{self.position(token)}")
        w_down = self.runner.layer_weights[layer].w_down
        if not 0 <= neuron < w_down.shape[0]:
            raise IndexError(f"neuron {neuron} is out of range: layer {layer} has {w_down.shape[0]} neurons")
        vector = shares.neuron_vector(self.runner, self.trace, layer, self.position(token), neuron)
        return vocabulary.project(self.runner, vector, self._final_norm(self.position(token)), k)

    def _check_head(self, head: int) -> None:
        if not 0 <= head < self.n_heads:
            raise IndexError(f"head {head} is out of range: the model has {self.n_heads} heads")

    # ---- interventions -------------------------------------------------------
    def intervene(self, edits: list[Edit] | tuple[Edit, ...], token: int = -1, k: int = 10) -> InterventionResult:
        """Re-run the prompt with heads or neurons edited; compare the predictions at `token`."""
        return self.compare(self.with_edits(edits), token, k)

    def with_edits(self, edits: list[Edit] | tuple[Edit, ...]) -> Analysis:
        """The same prompt run again with the edits: a full Analysis (graph, contributions) of its own."""
        if not edits:
            raise ValueError("no edits given")
        return _analysis_of(self.runner, self.runner.trace(self.trace.token_ids, tuple(edits)))

    def compare(self, edited: Analysis, token: int = -1, k: int = 10) -> InterventionResult:
        """Predictions at `token` here and in an edited run (no model run)."""
        position = self.position(token)
        target = self.predictions(position, 1)[0]
        before, after = self.trace.logits_at(position), edited.trace.logits_at(position)
        return InterventionResult(
            edits=edited.trace.edits,
            token=position,
            target=target,
            before=self.predictions(position, k),
            after=edited.predictions(position, k),
            logit_before=float(before[target.token_id]),
            logit_after=float(after[target.token_id]),
            prob_before=float(before.softmax(-1)[target.token_id]),
            prob_after=float(after.softmax(-1)[target.token_id]),
            analysis=edited,
        )

    # ---- a target token and a contrast: direct effects, routes, patching ----------
    def target(self, token: int = -1, answer: int | str | None = None, contrast: int | str | None = None) -> dla.Target:
        """What to explain at `token`: logit(answer) (default: the top prediction), minus logit(contrast) if given."""
        return dla.make_target(self.runner, self.trace, self.position(token), answer, contrast)

    def contrast_target(self, token: int = -1, answer: int | str | None = None) -> dla.Target:
        """logit(A) - logit(B) at `token`, A the answer (default: the top prediction) and B the most likely other
        token: unlike logit(A) alone, this moves with p(A)."""
        a = self.target(token, answer).token_id
        b = next(p.token_id for p in self.predictions(token, 2) if p.token_id != a)
        return self.target(token, a, b)

    def log_prob_target(self, token: int = -1, answer: int | str | None = None) -> dla.Target:
        """log p(A) at `token` (A default: the top prediction): moves with p(A) even when a route shifts every logit."""
        return replace(self.target(token, answer), log_prob=True)

    def direct_effects(self, target: dla.Target | None = None) -> dla.DirectEffects:
        """Direct logit attribution of every component to the target (exact under the frozen final-norm scale)."""
        target = target or self.target()
        return self._memoised(("direct_effects", target), lambda: dla.direct_effects(self.runner, self.trace, target))

    def suggest_groups(self, token: int = -1, threshold: float = DEFAULT_THRESHOLD, node: str | None = None) -> list[groups.SuggestedGroup]:
        """Supernodes to propose among the route's states (to `token`, or to `node`), each with its reason."""
        sub = self.paths_to(token, threshold) if node is None else self.paths_to_node(node, threshold)
        return groups.suggest_groups(self, sub)

    def search_token(self, token: int | str, position: int = -1, k: int = 10, promote: bool = True) -> search.TokenSearch:
        """Which heads and neurons promote (or suppress) a token: in this prompt at `position`, and from the weights."""
        return search.search_token(self, token, position, k, promote)

    def probe_effects(self, direction: torch.Tensor, node: str | None = None) -> dla.ProbeEffects:
        """A linear probe w (d,) read at a node's residual state (default: the explained token's top node): w . x split
        exactly over the embedding, every head (and (head, source) part), neuron and bias below that node."""
        node = node or f"ffn:{self.n_layers - 1}:{self.trace.n_tokens - 1}"
        kind, layer, pos = self._node(node)
        w = torch.as_tensor(direction, dtype=torch.float32).reshape(-1)
        if w.shape != (self.trace.d_model,):
            raise ValueError(f"a direction must have shape ({self.trace.d_model},), the model's width; got {tuple(direction.shape)}")
        level = level_of(kind, layer)
        if self.trace.parallel and kind == "attn":
            raise ValueError("a parallel block has no state after attention: read the probe at its output (an ffn node)")
        along = dla.effects_along(self.runner, self.trace, w, pos, level)
        value = float(self.trace.state(level, pos).float() @ w.to(self.trace.resid[0].device))
        return dla.ProbeEffects(**vars(along), node=node, value=value)

    def target_lens(self, target: dla.Target | None = None) -> dla.LensGrid:
        """Logit lens of A, B and A - B at every node (level, position)."""
        target = target or self.target()
        return self._memoised(("target_lens", target), lambda: dla.lens_grid(self.runner, self.trace, target))

    def direct_edges(self, target: dla.Target | None = None, min_effect: float = DEFAULT_MIN_EFFECT) -> list[dla.DirectEdge]:
        """Boosters and suppressors: heads and FFNs whose |direct effect| >= min_effect logits, whatever their flow weight."""
        return dla.direct_edges(self.direct_effects(target), min_effect)

    def faithfulness(
        self, threshold: float = DEFAULT_THRESHOLD, target: dla.Target | None = None, ablation: str = "mean"
    ) -> faithfulness_module.Faithfulness:
        """How much of the target the route paths_to(target position, threshold) keeps on its own (one more forward pass).

        Default target: log p(A) of the top prediction, a measure that moves with p(A) (a logit difference against
        the runner-up can stay high while the route's p(A) is 0).
        """
        target = target or self.log_prob_target()
        return faithfulness_module.faithfulness(self.runner, self.trace, self.paths_to(target.position, threshold), target, ablation)

    def faithfulness_curve(
        self,
        thresholds: tuple[float, ...] = faithfulness_module.DEFAULT_THRESHOLDS,
        target: dla.Target | None = None,
        ablation: str = "mean",
        on_progress: Callable[[int, int], None] | None = None,
    ) -> faithfulness_module.FaithfulnessCurve:
        """Faithfulness against edges kept, one forward pass per threshold (default target as `faithfulness`).
        `on_progress(done, total)` counts the forward passes."""
        target = target or self.log_prob_target()
        subs = [self.paths_to(target.position, th) for th in thresholds]
        return faithfulness_module.faithfulness_curve(self.runner, self.trace, subs, target, ablation, on_progress)

    def qk_attribution(self, layer: int, head: int, query: int = -1, key: int = 0) -> qk.QKAttribution:
        """Why head (layer, head) attends from `query` to `key`: (query part x key part) pairs that sum to the score."""
        self._check_head(head)
        query, key = self.position(query), self.position(key)
        return self._memoised(("qk", layer, head, query, key), lambda: qk.qk_attribution(self.runner, self.trace, layer, head, query, key))

    def key_scores(self, layer: int, head: int, query: int = -1) -> qk.KeyScores:
        """The score of every key for one query of head (layer, head), and the attention weight each key got."""
        self._check_head(head)
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"layer {layer} is out of range: the model has {self.n_layers} layers")
        return qk.key_scores(self.trace, layer, head, self.position(query))

    def neuron_profile(self, layer: int, neuron: int) -> neurons.NeuronProfile:
        """A GLU neuron's gate, act(gate), up and product at every position, with GLUScope's sign quadrants."""
        return neurons.neuron_profile(self.runner, self.trace, layer, neuron)

    def patching(
        self,
        corrupted: str | TokenIds,
        target: dla.Target | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        sites: tuple[str, ...] = patching_module.GRIDS,
    ) -> patching_module.PatchingResult:
        """Activation patching: this prompt is the clean run, `corrupted` (same token count) the corrupted one.
        `sites` chooses the grids (resid, attn, ffn, heads; the others stay NaN); `on_progress(done, total)` counts the
        batched forward passes."""
        ids = _token_ids(self.runner, corrupted)
        target = target or self.target()
        return patching_module.patch_prompts(self.runner, self.trace.token_ids, ids, target, sites=sites, on_progress=on_progress)

    # ---- export ----------------------------------------------------------
    def to_dict(self, token: int = -1, threshold: float = DEFAULT_THRESHOLD, k: int = 10, node: str | None = None) -> dict:
        """The CLI's JSON contract: model, tokens, predictions and the paths_to graph (to `node` when one is given)."""
        sub = self.paths_to(token, threshold) if node is None else self.paths_to_node(node, threshold)
        return {
            "model": self.model_name,
            "tokens": list(self.tokens),
            "predictions": [{"token": p.token, "prob": p.score} for p in self.predictions(token, k)],
            "graph": {**({} if node is None else {"root": node}), **sub.to_dict()},
        }

    def to_json(self, token: int = -1, threshold: float = DEFAULT_THRESHOLD, k: int = 10) -> str:
        return json.dumps(self.to_dict(token, threshold, k), ensure_ascii=False)


@dataclass(frozen=True)
class InterventionResult:
    """Predictions at one token before and after edits, and the edited analysis."""

    edits: tuple[Edit, ...]
    token: int
    target: TokenScore  # the unedited prediction whose logit and probability are tracked
    before: list[TokenScore]
    after: list[TokenScore]
    logit_before: float
    logit_after: float
    prob_before: float
    prob_after: float
    analysis: Analysis


GRAPH_MODES = ("auto", "full", "on_demand")


def _analysis_of(runner: ModelRunner, trace: Trace, on_layer=None, timings: dict | None = None, graph: str = "auto") -> Analysis:
    """The analysis of a trace: the full graph, or (mode "on_demand", or "auto" for long prompts) an on-demand one."""
    if graph not in GRAPH_MODES:
        raise ValueError(f"graph must be one of {GRAPH_MODES}, got {graph!r}")
    if graph == "on_demand" or (graph == "auto" and trace.n_tokens > full_graph_max_tokens(runner.device)):
        return Analysis(runner, trace, None, OnDemandGraph(trace, runner.layer_weights), {**(timings or {}), "contributions_s": 0.0})
    start = time.perf_counter()
    contributions = compute_contributions(trace, runner.layer_weights, on_layer=on_layer)
    timings = {**(timings or {}), "contributions_s": time.perf_counter() - start}
    return Analysis(runner, trace, contributions, ContributionGraph(contributions), timings)


def _token_ids(runner: ModelRunner, prompt: str | TokenIds) -> torch.Tensor:
    """(T,) token ids of a prompt given as text or as ids (checked against the vocabulary)."""
    if isinstance(prompt, str):
        return runner.tokenize(prompt)
    try:
        ids = torch.as_tensor(prompt if isinstance(prompt, torch.Tensor) else list(prompt)).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as e:
        raise PromptError(f"token ids must be a sequence of integers: {e}") from None
    if ids.numel() == 0:
        raise PromptError("no token ids given")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise PromptError(f"token ids must be integers, got {ids.dtype}")
    n = dla.vocab_size(runner)
    if int(ids.min()) < 0 or int(ids.max()) >= n:
        raise PromptError(f"token ids must lie in [0, {n}): got {int(ids.min())}..{int(ids.max())}")
    return ids.long()


def analyze(
    runner: ModelRunner,
    prompt: str | TokenIds,
    max_tokens: int | None = None,
    on_progress: Callable[[float, str], None] | None = None,
    graph: str = "auto",
) -> Analysis:
    """Trace the prompt (text, or token ids) once and compute every contribution (graph="full"), or only
    those that paths reach, when first asked (graph="on_demand"; "auto" picks it for prompts longer than
    ondemand.full_graph_max_tokens: 256 tokens on a CPU, 2,048 on an accelerator).

    `on_progress(fraction, message)` reports the forward pass and each layer's attribution.
    """
    report = on_progress or (lambda _f, _m: None)
    ids = _token_ids(runner, prompt)
    if max_tokens is not None and ids.numel() > max_tokens:
        raise PromptError(f"the prompt has {ids.numel()} tokens; the limit is {max_tokens}")
    report(0.0, f"Running the model on {ids.numel()} tokens")
    start = time.perf_counter()
    trace = runner.trace(ids)
    traced = time.perf_counter()
    report(0.2, "Computing contributions")
    analysis = _analysis_of(
        runner,
        trace,
        on_layer=lambda done, total: report(0.2 + 0.8 * done / total, f"Contributions: layer {done}/{total}"),
        timings={"trace_s": traced - start},
        graph=graph,
    )
    release_freed_memory()  # the forward pass's and the attribution's temporaries: back to the system, not kept by malloc
    return analysis
