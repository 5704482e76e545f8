"""Generation: greedy and seeded continuations; one trace of the result explains every generated token."""

import pytest
import torch

import lmtt
from lmtt.engine.runner import PromptError

PROMPT = "The capital of France is"


def test_greedy_continuation_and_causality(default_runner):
    text = default_runner.generate(PROMPT, 4)
    assert text.startswith(PROMPT + " Paris")
    prompt_only, extended = lmtt.analyze(default_runner, PROMPT), lmtt.analyze(default_runner, text)
    t = len(prompt_only.tokens)
    assert extended.tokens[:t] == prompt_only.tokens
    # as if the prompt ended at each position: the same logits and contributions up to it
    assert torch.allclose(extended.trace.logits[:t], prompt_only.trace.logits, atol=1e-4)
    assert torch.allclose(extended.contributions.attn_edges[:, :t, :t], prompt_only.contributions.attn_edges, atol=1e-5)
    ext, own = extended.paths_to(t - 1, 0.04).edges(), prompt_only.paths_to(-1, 0.04).edges()
    assert [(e["source"], e["target"], e["kind"]) for e in ext] == [(e["source"], e["target"], e["kind"]) for e in own]
    assert [e["weight"] for e in ext] == pytest.approx([e["weight"] for e in own], abs=1e-5)


def test_sampling_is_reproducible_with_a_seed(default_runner):
    assert default_runner.generate(PROMPT, 6, seed=3) == default_runner.generate(PROMPT, 6, seed=3)


@pytest.mark.parametrize("n", [0, 1000])
def test_token_counts_are_bounded(default_runner, n):
    with pytest.raises(PromptError):
        default_runner.generate(PROMPT, n)
