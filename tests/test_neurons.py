"""GLU neuron profiles: gate, act(gate), up and their product rebuild the recorded activation."""

import pytest
import torch

import lmtt
from lmtt.analysis import _analysis_of
from lmtt.questions.neurons import NeuronError
from tests.tiny_models import token_ids


def test_profile_rebuilds_the_activation_or_refuses(tiny_runner):
    a = _analysis_of(tiny_runner, tiny_runner.trace(token_ids(6)))
    try:
        p = a.neuron_profile(a.n_layers - 1, 3)
    except NeuronError as e:
        assert "differs" in str(e)
        return
    assert torch.allclose(p.product, a.trace.neuron_activation(a.n_layers - 1, 3), atol=1e-5)
    assert torch.allclose(p.gate_act * p.up, p.product)
    assert set(p.quadrants) <= {"+ +", "+ -", "- +", "- -"}
    assert p.active_share == pytest.approx(float((p.gate_pre > 0).float().mean()))
    with pytest.raises(NeuronError, match="out of range"):
        a.neuron_profile(0, 10**6)


@pytest.mark.default_model
def test_profile_on_the_default_model(default_runner):
    a = lmtt.analyze(default_runner, "The capital of France is")
    top = a.direct_effects().top_neurons(1)[0]
    p = a.neuron_profile(top.layer, top.index)
    assert p.product.shape == (5,) and 0 <= p.active_share <= 1 and p.mean_abs > 0
