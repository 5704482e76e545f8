"""The trace reproduces the model's own tensors, and its parts sum back to them."""

import threading

import pytest
import torch

from lmtt.engine import check
from lmtt.engine.edits import Edit
from lmtt.questions import shares as interpret
from tests.tiny_models import token_ids

RTOL = 1e-5


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL) -> bool:
    """Relative to the size of b: |a - b|_max <= rtol * |b|_max (plus a tiny floor)."""
    return bool((a - b).abs().max() <= rtol * b.abs().max() + 1e-6)


def test_logits_equal_the_models_own(tiny_runner):
    """The pass unembeds only the last position; every other position's logits come from its final state when read
    (Trace.logits_at, Trace.logits). Each equals the model's own full pass, to float rounding."""
    ids = token_ids(11)
    trace = tiny_runner.trace(ids)
    with torch.no_grad():
        own = tiny_runner.model(input_ids=ids[None]).logits[0].float()  # (T, V)
    assert trace.last_logits.shape == own[-1].shape
    assert close(trace.logits, own)
    for position in (0, 5, 10, -1, -11):
        assert close(trace.logits_at(position), own[position]), position


def test_recomputed_attention_equals_eager_attention(tiny_runner):
    """lmtt's attention reproduces transformers' eager attention: its weights and the model's logits."""
    from tests.tiny_models import tiny_model

    eager = tiny_model(tiny_runner.name)  # the same seed: the same weights
    eager.set_attn_implementation("eager")
    ids = token_ids(10)
    with torch.no_grad():
        out = eager(input_ids=ids[None], output_attentions=True)
    trace = tiny_runner.trace(ids)
    assert close(trace.logits, out.logits[0])
    for layer, weights in enumerate(out.attentions):
        assert close(trace.attention(layer), weights[0]), f"layer {layer}"


def test_attention_rows_and_key_prefixes_agree_with_the_full_matrix(tiny_runner):
    trace = tiny_runner.trace(token_ids(9))
    full = trace.attention(1)
    assert torch.allclose(trace.attention(1, slice(3, 6), n_keys=6), full[:, 3:6, :6], atol=1e-6)


def test_logit_lens_of_last_state_is_the_models_logits(tiny_runner):
    ids = token_ids(9)
    trace = tiny_runner.trace(ids)
    with torch.no_grad():
        own = tiny_runner.model(input_ids=ids[None]).logits[0].float()  # (T, V)
    assert close(tiny_runner.unembed(trace.resid[-1]), own)


def test_residual_is_continuous_across_layers(tiny_runner):
    """resid[l+1] is both the state after layer l's FFN and the input of layer l+1,
    and it is the state after attention plus the FFN update."""
    trace = tiny_runner.trace(token_ids(10))
    for layer in range(trace.n_layers):
        assert close(trace.mid(layer) + trace.ffn_out[layer], trace.resid[layer + 1]), f"layer {layer}"


def test_attention_parts_sum_to_the_attention_update(tiny_runner):
    """Every (head, source) part as the residual received it (post-norm, multiplier), plus the biases."""
    trace = tiny_runner.trace(token_ids(12))
    for layer in range(trace.n_layers):
        assert close(check.attention_sum(tiny_runner, trace, layer), trace.attn_out[layer]), f"layer {layer}"
        position = 7
        parts = interpret.head_source_parts(tiny_runner, trace, layer, position)  # (J, H, d)
        bias = check.attention_sum(tiny_runner, trace, layer)[position] - parts.sum((0, 1))
        assert torch.allclose(parts.sum((0, 1)) + bias, trace.attn_out[layer][position], atol=1e-5)


def test_ffn_parts_sum_to_the_ffn_update(tiny_runner):
    """Every neuron (or expert neuron) part as the residual received it, plus the biases."""
    trace = tiny_runner.trace(token_ids(12))
    for layer in range(trace.n_layers):
        assert close(check.neuron_sum(tiny_runner, trace, layer), trace.ffn_out[layer]), f"layer {layer}"


def test_every_check_passes_on_every_family(tiny_runner):
    report = check.run_checks(tiny_runner, token_ids(10))
    assert report.passed, [r.line() for r in report.failures]
    assert {r.name for r in report.results} == set(check.NAMES)


def test_attention_weights_are_causal_distributions(tiny_runner):
    trace = tiny_runner.trace(token_ids(8))
    for layer in range(trace.n_layers):
        a = trace.attention(layer)  # (H, T, T)
        assert torch.all(a.triu(diagonal=1) == 0)
        if trace.sinks[layer] is None:
            assert torch.allclose(a.sum(-1), torch.ones_like(a.sum(-1)), atol=1e-5)
        else:  # GPT-OSS: each head's sink takes exp(s_h) / (exp(s_h) + sum_j exp(score_j)) of the row
            scores = torch.einsum("hid,hjd->hij", trace.queries[layer], trace.keys[layer][trace.kv_index]) * trace.scales[layer]
            scores = scores + (
                trace.masks[layer]
                if trace.masks[layer] is not None
                else torch.zeros(8, 8).masked_fill(torch.ones(8, 8).triu(1).bool(), float("-inf"))
            )
            sink = trace.sinks[layer][:, None]
            expected = 1 - torch.exp(sink) / (torch.exp(sink) + torch.exp(scores).sum(-1))
            assert torch.allclose(a.sum(-1), expected, atol=1e-5)


def test_hooks_are_silent_outside_a_trace(tiny_runner):
    """A plain forward pass on the shared model records nothing and still works."""
    with torch.no_grad():
        out = tiny_runner.model(input_ids=token_ids(5)[None]).logits
    assert out.shape[1] == 5


def test_two_threads_tracing_at_once_get_their_own_tensors(tiny_runner):
    prompts = [token_ids(7 + k, seed=k) for k in range(4)]
    expected = [tiny_runner.trace(p) for p in prompts]
    results: dict[int, object] = {}
    barrier = threading.Barrier(len(prompts))

    def work(k: int) -> None:
        barrier.wait()
        for _ in range(3):
            results[k] = tiny_runner.trace(prompts[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, trace in enumerate(expected):
        got = results[k]
        assert torch.equal(got.token_ids, trace.token_ids)
        assert torch.equal(got.logits, trace.logits)
        for name in ("resid", "attn_out", "ffn_out", "queries", "keys", "values", "neuron_acts"):
            assert all(torch.equal(x, y) for x, y in zip(getattr(got, name), getattr(trace, name))), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_are_traced_in_float32(dtype):
    """Contributions are computed in float32 even when the model runs in half precision."""
    from lmtt.engine.attribution import compute_contributions
    from lmtt.engine.runner import ModelRunner
    from tests.tiny_models import tiny_model

    runner = ModelRunner(tiny_model("llama_gqa_bias").to(dtype), tokenizer=None, name="half")
    trace = runner.trace(token_ids(9))
    assert all(t.dtype == torch.float32 for t in (*trace.resid, *trace.attn_out, *trace.queries, trace.logits))
    c = compute_contributions(trace, runner.layer_weights)
    assert torch.allclose(c.attn_edges.sum(-1) + c.attn_resid, torch.ones_like(c.attn_resid), atol=1e-5)
    for layer in range(trace.n_layers):  # the half-precision model's own rounding, not ours
        assert close(trace.mid(layer) + trace.ffn_out[layer], trace.resid[layer + 1], rtol=2e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["gemma2", "mixtral", "gpt_oss", "granite"])
def test_the_load_checks_pass_in_half_precision(name, dtype):
    """The dtype's tolerance leaves room for the model's own rounding: no false alarm on a bf16 checkpoint."""
    from lmtt.engine.runner import ModelRunner
    from tests.tiny_models import tiny_model

    report = check.run_checks(ModelRunner(tiny_model(name).to(dtype), tokenizer=None, name=name), token_ids(12))
    assert report.passed, [r.line() for r in report.failures]
    assert all(r.tolerance == check.TOLERANCE[dtype] for r in report.results)


def test_patches_replace_what_the_model_computes(tiny_runner):
    """patch(site, layer, x): the sites used by activation patching and route knock-outs."""
    ids, other = token_ids(9), token_ids(9, seed=5)
    clean, corrupt = tiny_runner.trace(ids), tiny_runner.trace(other)
    # the whole block input of layer 1 from the other prompt: everything after it is the other prompt's
    swapped = tiny_runner.trace(ids, patch=lambda site, layer, x: corrupt.resid[1][None] if (site, layer) == ("resid", 1) else None)
    assert close(swapped.logits, corrupt.logits)
    assert torch.equal(swapped.resid[0], clean.resid[0])
    # zeroing every head's context at layer 1 is the same as the zero edit of every head
    zeroed = tiny_runner.trace(ids, patch=lambda site, layer, x: x * 0 if (site, layer) == ("head_context", 1) else None)
    edited = tiny_runner.trace(ids, tuple(Edit("head", 1, h) for h in range(tiny_runner.n_heads)))
    assert close(zeroed.logits, edited.logits)
    # the FFN update the residual receives, taken from the other prompt at one layer
    ffn = tiny_runner.trace(ids, patch=lambda site, layer, x: corrupt.ffn_out[0][None] if (site, layer) == ("ffn_update", 0) else None)
    if tiny_runner.residual_multiplier is None:
        assert torch.allclose(ffn.ffn_out[0], corrupt.ffn_out[0], atol=1e-6)
    assert not torch.allclose(ffn.logits, clean.logits)


def test_a_patched_pass_decomposes_exactly_or_refuses(tiny_runner):
    """A patch of neuron activations is recorded after it, so the neurons' parts still sum to the FFN update the
    model computed. A patch that replaces a state, a head context or an update (after a post-norm on Gemma-2/3 and
    OLMo-2, where the scale would be fitted to an output the input never made) is refused by every graph."""
    from lmtt.engine.attribution import compute_contributions
    from lmtt.engine.ondemand import OnDemandGraph

    ids = token_ids(9)
    if tiny_runner.layer_weights[0].n_experts == 0:  # dense FFNs have the neuron_acts site
        halved = tiny_runner.trace(ids, patch=lambda site, layer, x: x * 0.5 if (site, layer) == ("neuron_acts", 0) else None)
        assert not halved.replaced
        assert close(check.neuron_sum(tiny_runner, halved, 0), halved.ffn_out[0])
        compute_contributions(halved, tiny_runner.layer_weights)
    for site in ("resid", "head_context", "attn_update", "ffn_update"):
        replaced = tiny_runner.trace(ids, patch=lambda s, layer, x, site=site: x * 1.5 if (s, layer) == (site, 0) else None)
        assert replaced.replaced == (f"{site} L0",)
        with pytest.raises(ValueError, match="cannot be decomposed"):
            compute_contributions(replaced, tiny_runner.layer_weights)
        with pytest.raises(ValueError, match="cannot be decomposed"):
            OnDemandGraph(replaced, tiny_runner.layer_weights)
