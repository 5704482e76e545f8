"""Checks that the decomposition adds up, for the model in front of the user.

Run on every model load (a short probe prompt) and by `python -m lmtt check`.
Each check compares two tensors that must be equal if lmtt's hooks, adapter
and maths are right for this model, and reports the relative error
max over rows of max|got - expected| / max|expected| in that row:

  logits          lmtt's traced logits vs the model's own forward pass
                  (transformers' eager attention and experts, not lmtt's)
  attention       per layer: every (head, source) part, plus the biases, vs the
                  attention update the residual received
  neurons         per layer: every neuron (or expert neuron) part, plus the
                  biases, vs the FFN update the residual received
  residual        embeddings plus every update vs the final residual state
  weights         lmtt's recomputed attention weights vs the model's eager weights

A check fails when its error exceeds the tolerance for the model's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmtt.engine.attribution import head_parts
from lmtt.engine.runner import ModelRunner, Trace

PROBE_PROMPT = "The capital of France is Paris. The capital of Italy is"
# per position (relative_error); bf16 keeps 8 bits: softmax of bf16 scores differs by |score| x 2^-8 from the float32 recomputation
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8, torch.bfloat16: 1e-1, torch.float16: 2e-2}
NAMES = ("logits", "attention", "neurons", "residual", "weights")


@dataclass(frozen=True)
class CheckResult:
    name: str
    error: float  # the largest relative error over layers
    tolerance: float
    where: str  # the layer (or "all") where the error is largest
    what: str  # the identity, in words

    @property
    def passed(self) -> bool:
        return self.error <= self.tolerance

    def line(self) -> str:
        status = "ok  " if self.passed else "FAIL"
        return f"{status} {self.name:<9} rel. error {self.error:.2e} (tolerance {self.tolerance:.0e}, worst at {self.where}): {self.what}"


@dataclass(frozen=True)
class CheckReport:
    model: str
    n_tokens: int
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    def worst(self) -> float:
        return max(r.error for r in self.results)


ROW_FLOOR = 1e-6  # a row under a millionth of the tensor's largest value is measured against that millionth


def relative_error(got: torch.Tensor, expected: torch.Tensor, position_dim: int = 0) -> float:
    """The largest error at any position relative to that position's own largest |value|.

    Per position, so that an outlier position (a sink's huge state) cannot hide the errors of the others.
    `position_dim` is the axis of positions (queries, for attention weights (H, T, T)); the rest is one row.
    Rows are floored at ROW_FLOOR x the tensor's largest value: a row of float zeros has no scale of its own.
    """
    got, expected = (x.double().cpu().movedim(position_dim, 0).flatten(1) for x in (got, expected))  # (T, rest)
    finite = torch.isfinite(expected)  # masked logits or weights may be -inf / 0 in both
    if not finite.any():
        return 0.0 if torch.equal(got.isfinite(), finite) else float("inf")
    size = expected.abs().where(finite, 0)  # (..., n)
    rows = size.amax(-1, keepdim=True)  # (..., 1) each row's own scale
    scale = rows.clamp_min(max(float(size.max()) * ROW_FLOOR, 1e-12))
    return float(((got - expected).abs() / scale)[finite].max())


def attention_sum(runner: ModelRunner, trace: Trace, layer: int) -> torch.Tensor:
    """(T, d) the sum of every (head, source) part at every position, plus the biases, as the residual received it."""
    w = runner.layer_weights[layer]
    raw = torch.stack([head_parts(trace, w, layer, i).sum((0, 1)) for i in range(trace.n_tokens)])  # (T, d)
    if w.b_out is not None:
        raw = raw + w.b_out
    return received_update(trace, "attn", layer, raw)


def neuron_sum(runner: ModelRunner, trace: Trace, layer: int) -> torch.Tensor:
    """(T, d) the sum of every neuron part at every position, plus the biases, as the residual received it."""
    w = runner.layer_weights[layer]
    raw = w.w_down.weighted_sum(trace.neuron_acts[layer], trace.neuron_ids[layer])  # (T, d), bounded steps
    if trace.ffn_bias[layer] is not None:
        raw = raw + trace.ffn_bias[layer]
    return received_update(trace, "ffn", layer, raw)


def received_update(trace: Trace, kind: str, layer: int, raw: torch.Tensor) -> torch.Tensor:
    """(T, d) raw sublayer outputs (T, d) as the residual received them: the frozen post-map, with its bias."""
    m = (trace.attn_map if kind == "attn" else trace.ffn_map)[layer]
    out = trace.received(kind, layer, raw)
    return out if m is None or m.bias is None else out + m.bias


def _worst(errors: list[float]) -> tuple[float, str]:
    layer = max(range(len(errors)), key=errors.__getitem__)
    return errors[layer], f"layer {layer}"


@torch.no_grad()
def eager_forward(runner: ModelRunner, ids: torch.Tensor):
    """The model's own forward pass, with transformers' eager attention (and experts), weights returned.

    Switches the model's implementation for one call and back: only call it
    where no other thread uses the runner (at load, or from the CLI).
    """
    model = runner.model
    experts = runner.adapter.experts is not None
    model.set_attn_implementation("eager")
    if experts:
        model.set_experts_implementation("eager")
    try:
        return model(input_ids=ids[None].to(runner.device), output_attentions=True, use_cache=False)
    finally:
        model.set_attn_implementation("lmtt")
        if experts:
            model.set_experts_implementation("lmtt")


def run_checks(runner: ModelRunner, prompt: str | torch.Tensor = PROBE_PROMPT) -> CheckReport:
    """Every identity on one prompt (one lmtt trace and one eager forward pass)."""
    ids = runner.tokenize(prompt) if isinstance(prompt, str) else prompt.reshape(-1)
    trace = runner.trace(ids)
    own = eager_forward(runner, ids)
    tol = TOLERANCE.get(next(runner.model.parameters()).dtype, 1e-4)
    n = trace.n_layers
    results = [CheckResult("logits", relative_error(trace.logits, own.logits[0]), tol, "all", "lmtt's logits = the model's own")]
    attn = [relative_error(attention_sum(runner, trace, layer), trace.attn_out[layer]) for layer in range(n)]
    results.append(CheckResult("attention", *_reorder(_worst(attn), tol), "head x source parts + bias = attention update"))
    ffn = [relative_error(neuron_sum(runner, trace, layer), trace.ffn_out[layer]) for layer in range(n)]
    results.append(CheckResult("neurons", *_reorder(_worst(ffn), tol), "neuron parts + bias = FFN update"))
    last = trace.resid[n].device  # a device map may spread the layers over devices
    total = trace.resid[0].to(last) + sum((trace.attn_out[layer] + trace.ffn_out[layer]).to(last) for layer in range(n))
    results.append(CheckResult("residual", relative_error(total, trace.resid[n]), tol, "all", "embeddings + every update = final state"))
    weights = [relative_error(trace.attention(layer), own.attentions[layer][0], position_dim=1) for layer in range(n)]
    results.append(CheckResult("weights", *_reorder(_worst(weights), tol), "recomputed attention weights = the model's eager weights"))
    return CheckReport(runner.name, int(ids.numel()), tuple(results))


def _reorder(worst: tuple[float, str], tol: float) -> tuple[float, float, str]:
    return worst[0], tol, worst[1]
