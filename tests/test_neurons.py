"""GLU neuron profiles: gate, act(gate), up and their product rebuild the recorded activation."""

import pytest
import torch

import lmtt
from lmtt.analysis import _analysis_of
from lmtt.engine.adapters import resolve
from lmtt.questions.neurons import NeuronError
from tests.tiny_models import token_ids

GATED = {
    "llama_gqa_bias", "llama3_rope_scaling", "mistral", "mistral_sliding_window", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
    "olmo2", "phi3", "granite", "cohere", "smollm3",
}  # fmt: skip
MOE = {"mixtral", "olmoe", "qwen2_moe", "qwen3_moe", "gpt_oss"}


def _down_proj_inputs(runner, ids, layer) -> torch.Tensor:
    """(T, N) what the model itself fed its down-projection: a plain forward hook, no lmtt recording."""
    seen = {}
    module = resolve(runner.blocks[layer], runner.adapter.down_proj)
    handle = module.register_forward_pre_hook(lambda _m, args: seen.setdefault("x", args[0].detach()[0].float()))
    try:
        with torch.no_grad():
            runner.model(input_ids=ids[None])
    finally:
        handle.remove()
    return seen["x"]


def test_profile_rebuilds_the_models_own_activation(tiny_runner):
    """Every gated family through its adapter; MoE and ungated FFNs are refused by name (tiny_models lists all 21)."""
    ids = token_ids(6)
    a = _analysis_of(tiny_runner, tiny_runner.trace(ids))
    family = tiny_runner.name
    layer = a.n_layers - 1
    if family in MOE:
        with pytest.raises(NeuronError, match="mixture of experts"):
            a.neuron_profile(layer, 3)
        return
    if family not in GATED:
        with pytest.raises(NeuronError, match="not gated"):
            a.neuron_profile(layer, 3)
        return
    p = a.neuron_profile(layer, 3)
    expected = _down_proj_inputs(tiny_runner, ids, layer)[:, 3]  # (T,)
    assert torch.allclose(p.product, expected, atol=1e-5 * max(1.0, float(expected.abs().max())))
    assert torch.allclose(p.gate_act * p.up, p.product)
    assert set(p.quadrants) <= {"+ +", "+ -", "- +", "- -"}
    assert p.active_share == pytest.approx(float((p.gate_pre > 0).float().mean()))
    with pytest.raises(NeuronError, match="out of range"):
        a.neuron_profile(0, 10**6)


def test_the_gated_list_covers_every_tiny_family():
    from tests.tiny_models import FAMILIES

    ungated = {"gpt2", "opt", "gpt_neox_parallel", "gpt_neox_sequential", "gptj", "phi", "starcoder2"}
    assert set(FAMILIES) == GATED | MOE | ungated


@pytest.mark.default_model
def test_profile_on_the_default_model(default_runner):
    a = lmtt.analyze(default_runner, "The capital of France is")
    top = a.direct_effects().top_neurons(1)[0]
    p = a.neuron_profile(top.layer, top.index)
    assert p.product.shape == (5,) and 0 <= p.active_share <= 1 and p.mean_abs > 0


def test_glu_quadrants_over_prompts_hand_built():
    """Two prompts, five positions: the counts, shares, means and the largest examples of each sign quadrant."""
    from lmtt.questions.neurons import NeuronProfile, glu_quadrants

    def profile(gate, up):
        g, u = torch.tensor(gate), torch.tensor(up)
        return NeuronProfile(0, 0, g, g.clamp_min(0), u, g.clamp_min(0) * u)  # a ReLU gate: act(g) = max(g, 0)

    first = (("a", "b", "c"), profile([1.0, 2.0, -1.0], [3.0, -1.0, 2.0]))  # + +: 3.0; + -: -2.0; - +: 0
    second = (("d", "e"), profile([0.5, -2.0], [4.0, -1.0]))  # + +: 2.0; - -: 0
    stats = {s.quadrant: s for s in glu_quadrants([first, second], k=2)}
    assert [stats[q].count for q in ("+ +", "+ -", "- +", "- -")] == [2, 1, 1, 1]
    assert stats["+ +"].share == pytest.approx(0.4) and stats["+ +"].mean_activation == pytest.approx(2.5)
    assert stats["+ +"].examples == [(3.0, 0, 0, "a"), (2.0, 1, 0, "d")]
    assert stats["+ -"].mean_activation == pytest.approx(-2.0) and stats["- +"].mean_activation == 0.0
