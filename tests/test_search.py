"""Search components by token: float64 re-derivations from the modules' weights, and the DLA entries in context."""

import pytest
import torch

import lmtt
from lmtt.analysis import _analysis_of
from lmtt.questions import search
from tests.tiny_models import tiny_model, token_ids


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float = 0.0) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean() + eps) * (weight + offset)


@pytest.mark.parametrize("family", ["llama_gqa_bias", "gemma2"])
def test_weight_scores_match_a_float64_rederivation(family):
    """d_A = g_final ⊙ W_U[A] (Gemma: 1 + w; no centring for RMSNorm). A neuron: its down_proj column through the FFN's
    post-norm gain along d_A. A head: W_O^h W_V n(E[A]) along d_A (the value bias left out), n the layer's input norm."""
    runner = lmtt.ModelRunner(tiny_model(family), tokenizer=None, name=family)
    model, token = runner.model, 11
    offset = 1.0 if family == "gemma2" else 0.0
    with torch.no_grad():
        d = model.model.norm.weight.double() + offset
        d = d * model.lm_head.weight[token].double()
        neurons = search.neuron_weight_scores(runner, search.unembedding_direction(runner, token).float())
        heads = search.head_copy_scores(runner, token, search.unembedding_direction(runner, token).float())
        for layer, block in enumerate(model.model.layers):
            down = block.mlp.down_proj.weight.double()  # (d, N)
            post = getattr(block, "post_feedforward_layernorm", None)
            d_ffn = d if post is None else d * (post.weight.double() + offset)
            assert torch.allclose(neurons[layer, : down.shape[1]].double(), down.T @ d_ffn, rtol=1e-4, atol=1e-5)
            ln = block.input_layernorm
            eps = getattr(ln, "variance_epsilon", None) or ln.eps
            n = _rms(model.model.embed_tokens.weight[token].double(), ln.weight.double(), eps, offset)
            attn = block.self_attn
            hd = runner.head_dim
            v = attn.v_proj.weight.double() @ n  # (K * hd,): no bias
            post_attn = getattr(block, "post_attention_layernorm", None) if family == "gemma2" else None
            d_attn = d if post_attn is None else d * (post_attn.weight.double() + offset)
            for h in range(runner.n_heads):
                kv = h // (runner.n_heads // runner.n_kv)
                out = attn.o_proj.weight.double()[:, h * hd : (h + 1) * hd] @ v[kv * hd : (kv + 1) * hd]  # (d,)
                assert float(heads[layer, h]) == pytest.approx(float(out @ d_attn), rel=1e-4, abs=1e-5)


def test_in_context_hits_are_the_direct_effects(tiny_runner):
    a = _analysis_of(tiny_runner, tiny_runner.trace(token_ids(8)))
    found = a.search_token("<7>", k=5)
    effects = a.direct_effects(a.target(-1, "<7>"))
    expected = [float(effects.heads[h.layer, h.index]) for h in found.in_context_heads]
    assert [h.score for h in found.in_context_heads] == pytest.approx(expected)
    assert found.in_context_heads[0].score == pytest.approx(float(effects.heads.max()))
    down = a.search_token("<7>", k=5, promote=False)
    assert down.in_context_neurons[0].score == pytest.approx(float(effects.neurons.min()))
    assert down.weight_heads[0].score <= down.weight_heads[-1].score
