"""QK attribution: (query part x key part) pairs sum to the recorded attention score."""

import pytest
import torch

import lmtt
from lmtt.analysis import _analysis_of
from lmtt.questions import qk
from tests.tiny_models import tiny_model, token_ids

ROPE_FAMILIES = ("llama_gqa_bias", "mistral", "mistral_sliding_window", "qwen2", "gemma")


@pytest.mark.parametrize("family", ROPE_FAMILIES)
def test_pairs_sum_to_the_score(family):
    runner = lmtt.ModelRunner(tiny_model(family), tokenizer=None, name=family)
    a = _analysis_of(runner, runner.trace(token_ids(8)))
    for layer, head, query, key in ((0, 0, 7, 7), (a.n_layers - 1, 3, 7, 2), (a.n_layers - 1, 1, 4, 0)):
        result = a.qk_attribution(layer, head, query, key)
        assert len(result.parts) == 2 * layer + 2  # embedding, attn and FFN of every earlier layer, bias
        assert float(result.pairs.sum()) == pytest.approx(result.score, rel=1e-4, abs=1e-5)
        assert torch.allclose(result.query_parts.sum(), result.pairs.sum())


def test_the_score_is_the_one_the_softmax_saw(tiny_runner):
    """Oracle: softmax over keys of the recorded scores reproduces the trace's attention weights."""
    a = _analysis_of(tiny_runner, tiny_runner.trace(token_ids(6)))
    try:
        scores = torch.tensor([a.qk_attribution(0, 1, 5, j).score for j in range(6)])
    except qk.QKError as e:  # refused (another layout, q/k norms, another rotary): a counted skip, with its reason
        pytest.skip(f"QK attribution refuses {tiny_runner.name}: {e}")
    if a.trace.sinks and a.trace.sinks[0] is not None:
        pytest.skip("attention sinks add a column to the softmax")
    weights = a.trace.attention(0, slice(5, 6))[1, 0]
    if a.trace.softcaps and (cap := a.trace.softcaps[0]) is not None:
        scores = torch.tanh(scores / cap) * cap
    if a.trace.masks[0] is not None:
        scores = scores + a.trace.masks[0][5]
    assert torch.allclose(scores.softmax(-1), weights, atol=1e-5)


def test_bad_indices(tiny_runner):
    a = _analysis_of(tiny_runner, tiny_runner.trace(token_ids(5)))
    with pytest.raises((qk.QKError, IndexError)):
        a.qk_attribution(0, 0, 1, 3)  # key after the query
    with pytest.raises(IndexError):
        a.qk_attribution(0, 99, 4, 0)


@pytest.mark.default_model
def test_head_23_3_on_the_default_model(default_runner):
    a = lmtt.analyze(default_runner, "When Mary and John went to the store, John gave a drink to")
    result = a.qk_attribution(23, 3, -1, 9)  # the last token looking at the second ' John'
    assert float(result.pairs.sum()) == pytest.approx(result.score, rel=1e-4)
    assert len(result.parts) == 2 * 23 + 2
