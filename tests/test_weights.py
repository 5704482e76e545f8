"""Weights stay where they are, in the model's dtype: views, not float32 copies; float32 a slice at a time.

References are the modules' own parameters read in float64, never lmtt's views of them.
"""

from __future__ import annotations

import pytest
import torch

from lmtt.engine import values
from lmtt.engine.adapters import linear_weight, resolve
from lmtt.engine.check import run_checks
from lmtt.engine.runner import ModelRunner
from tests.tiny_models import tiny_model, token_ids

# dense (GPT-2's Conv1D, biases), mixtures of experts (shared expert; transposed experts with biases)
FAMILIES = ("gpt2", "llama_gqa_bias", "mixtral", "qwen2_moe", "gpt_oss")


@pytest.fixture(scope="module", params=FAMILIES)
def bf16_runner(request) -> ModelRunner:
    return ModelRunner(tiny_model(request.param).to(torch.bfloat16), tokenizer=None, name=request.param)


def _shares_storage(view: torch.Tensor, parameter: torch.Tensor) -> bool:
    return view.untyped_storage().data_ptr() == parameter.untyped_storage().data_ptr()


def _expected_rows(runner: ModelRunner, layer: int) -> torch.Tensor:
    """(N, d) float64 value vectors from the block's modules: each expert's down-projection, then the shared one."""
    a, block = runner.adapter, runner.blocks[layer]
    if a.experts is None or (moe := resolve(block, a.experts)) is None:
        return linear_weight(resolve(block, a.down_proj), a.conv1d).double().T  # (N, d)
    down = moe.down_proj.double()  # (E, d, N), or (E, N, d) when transposed
    rows = [down[e] if moe.is_transposed else down[e].T for e in range(down.shape[0])]
    if a.shared_expert:
        rows.append(resolve(block, f"{a.shared_expert}.down_proj").weight.double().T)
    return torch.cat(rows)


def test_layer_weights_are_views_of_the_parameters_in_the_models_dtype(bf16_runner):
    a = bf16_runner.adapter
    for layer, (block, w) in enumerate(zip(bf16_runner.blocks, bf16_runner.layer_weights)):
        assert w.w_out.dtype == torch.bfloat16 and w.w_down.dtype == torch.bfloat16
        assert _shares_storage(w.w_out, resolve(block, a.out_proj).weight), f"layer {layer}: W_O was copied"
        params = {p.untyped_storage().data_ptr() for p in block.parameters()}
        assert all(b.untyped_storage().data_ptr() in params for b in w.w_down.blocks), f"layer {layer}: W_down was copied"


def test_value_vectors_are_the_weights_rows_in_float32(bf16_runner):
    g = torch.Generator().manual_seed(0)
    for layer, w in enumerate(bf16_runner.layer_weights):
        expected = _expected_rows(bf16_runner, layer)  # (N, d)
        assert w.w_down.shape == expected.shape
        ids = torch.randint(0, expected.shape[0], (5, 7), generator=g)
        got = w.w_down[ids]
        assert got.dtype == torch.float32 and got.shape == (5, 7, expected.shape[1])
        assert torch.equal(got.double(), expected[ids])  # bf16 -> float32 is exact
        last = expected.shape[0] - 1
        assert torch.equal(w.w_down[last].double(), expected[last]) and torch.equal(w.w_down[-1], w.w_down[last])
    with pytest.raises(IndexError, match="out of range"):
        bf16_runner.layer_weights[0].w_down[bf16_runner.layer_weights[0].w_down.shape[0]]


def test_weighted_sums_in_small_steps_equal_one_float64_product(bf16_runner, monkeypatch):
    monkeypatch.setattr(values, "BUDGET_BYTES", 1)  # one row, or one position, per step
    g = torch.Generator().manual_seed(1)
    w = bf16_runner.layer_weights[0].w_down
    expected_rows = _expected_rows(bf16_runner, 0)
    acts = torch.randn(6, 11, generator=g)  # (T, M)
    ids = torch.randint(0, w.shape[0], (6, 11), generator=g)
    expected = torch.einsum("tm,tmd->td", acts.double(), expected_rows[ids])
    assert torch.allclose(w.weighted_sum(acts, ids).double(), expected, rtol=1e-5, atol=1e-5)
    dense = torch.randn(6, w.shape[0], generator=g)
    assert torch.allclose(w.weighted_sum(dense).double(), dense.double() @ expected_rows, rtol=1e-5, atol=1e-5)


def test_the_unembedding_is_upcast_a_slice_at_a_time(bf16_runner, monkeypatch):
    monkeypatch.setattr(values, "BUDGET_BYTES", 64)  # a few vocabulary rows per slice
    x = torch.randn(3, bf16_runner.model.config.hidden_size, generator=torch.Generator().manual_seed(2))
    w = bf16_runner.unembed_modules[-1].weight.double()  # (V, d)
    expected = bf16_runner.scale_logits(x.double() @ w.T)
    assert torch.allclose(bf16_runner.unembed_direction(x).double(), expected, rtol=1e-5, atol=1e-4)


def test_the_identities_hold_on_the_bf16_model(bf16_runner):
    """The load-time checks (grouped experts against transformers' own eager experts among them) at bf16's tolerance."""
    report = run_checks(bf16_runner, token_ids(12))
    assert report.passed, [r.line() for r in report.failures]


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe", "gpt_oss", "olmoe", "qwen3_moe"])
def test_grouped_experts_equal_transformers_own_experts(name):
    """lmtt's experts forward (one matmul per expert) against transformers' eager one, module by module, in float32."""
    model = tiny_model(name)
    runner = ModelRunner(model, tokenizer=None, name=name)
    ids = token_ids(16)[None]
    with torch.no_grad():
        ours = runner.model(input_ids=ids, output_hidden_states=True).hidden_states
        model.set_experts_implementation("eager")
        try:
            theirs = runner.model(input_ids=ids, output_hidden_states=True).hidden_states
        finally:
            model.set_experts_implementation("lmtt")
    for layer, (x, y) in enumerate(zip(ours, theirs)):
        scale = float(y.abs().max())
        assert float((x - y).abs().max()) <= 1e-5 * scale, f"{name}: layer {layer} differs"
