"""Activation patching between two prompts, and the patch hooks it runs on."""

import pytest
import torch

import lmtt
from lmtt.analysis import _analysis_of
from lmtt.engine.runner import PromptError
from lmtt.questions import patching
from tests.tiny_models import token_ids


def corrupt(ids: torch.Tensor, position: int) -> torch.Tensor:
    out = ids.clone()
    out[position] = (ids[position] % 90) + 3  # another token, never the same
    return out


def test_patching_the_one_changed_embedding_restores_everything(tiny_runner):
    clean = token_ids(7)
    corrupted = corrupt(clean, 2)
    a = _analysis_of(tiny_runner, tiny_runner.trace(clean))
    seen: list[tuple[int, int]] = []
    result = a.patching(corrupted, a.target(-1, None, a.predictions(-1, 2)[1].token_id), on_progress=lambda d, n: seen.append((d, n)))
    assert seen == [(k, result.passes + 2) for k in [0, *range(2, result.passes + 3)]]  # clean + corrupted, then each batched pass
    assert result.resid.shape == (a.n_layers, 7) and result.heads.shape == (a.n_layers, a.n_heads)
    # fractions of a small random-model difference: float error of a batched pass, in units of it
    tol = 1e-4 * (1 + abs(result.clean_value) + abs(result.corrupted_value)) / abs(result.clean_value - result.corrupted_value)
    # at layer 0 the block input is the embedding: only position 2 differs between the prompts
    assert result.resid[0, 2] == pytest.approx(1.0, abs=tol)
    assert torch.allclose(result.resid[0, torch.tensor([0, 1, 3, 4, 5, 6])], torch.zeros(6), atol=tol)
    # positions before the change carry nothing that differs, at any layer and site
    for grid in (result.resid, result.attn, result.ffn):
        assert torch.allclose(grid[:, :2], torch.zeros(a.n_layers, 2), atol=tol)
    assert result.passes == sum(-(-a.n_layers * w // 128) for w in (7, 7, 7, a.n_heads))


def test_a_heads_patch_equals_patching_its_context_by_hand(tiny_runner):
    clean, corrupted = token_ids(6), token_ids(6, seed=4)
    a = _analysis_of(tiny_runner, tiny_runner.trace(clean))
    b = a.predictions(-1, 2)[1].token_id
    target = a.target(-1, None, b)
    result = a.patching(corrupted, target)
    seen, _ = patching.record(tiny_runner, clean, ("head_context",))
    hd, layer, head = tiny_runner.head_dim, a.n_layers - 1, 1

    def by_hand(site, at, x):
        if site == "head_context" and at == layer:
            x = x.clone()
            x[0, :, head * hd : (head + 1) * hd] = seen["head_context", layer][:, head * hd : (head + 1) * hd]
            return x
        return None

    logits = tiny_runner.run_patched(corrupted[None], by_hand)[0, -1]
    m = float(logits[target.token_id] - logits[b])
    expected = (m - result.corrupted_value) / (result.clean_value - result.corrupted_value)
    assert float(result.heads[layer, head]) == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_hooks_do_nothing_outside_a_patch(tiny_runner):
    ids = token_ids(5)
    before = tiny_runner.trace(ids).logits
    tiny_runner.run_patched(ids[None], lambda site, layer, x: torch.zeros_like(x))
    assert torch.equal(tiny_runner.trace(ids).logits, before)


def test_logits_at_one_position_are_the_models_own_there(tiny_runner):
    """run_patched(at=k) unembeds position k only: the model's own logits there, with the hook gone afterwards."""
    ids = token_ids(6)
    own = tiny_runner.model(input_ids=ids[None]).logits.float()  # (1, T, V): the model's own pass, no lmtt hooks
    for k in (0, 3, 5):
        one = tiny_runner.run_patched(ids[None], lambda *_: None, at=k)
        assert one.shape == (1, 1, own.shape[-1])
        assert torch.allclose(one[0, 0], own[0, k], rtol=1e-4, atol=1e-5)
    assert tiny_runner.run_patched(ids[None], lambda *_: None).shape == own.shape  # no slicing left behind


def test_one_threads_single_position_pass_leaves_another_threads_pass_whole(tiny_runner):
    """Sessions share a model: while one thread's run_patched(at=) is inside the model, another thread's pass still
    unembeds every position (a hook on the shared module once sliced it, and a cached analysis lost its logits)."""
    import threading

    ids, inside, finish, out = token_ids(6), threading.Event(), threading.Event(), []

    def wait_inside(site, layer, x):
        if site == "resid" and layer == 0 and not inside.is_set():
            inside.set()
            finish.wait(60)

    other = threading.Thread(target=lambda: out.append(tiny_runner.run_patched(ids[None], wait_inside, at=4)))
    other.start()
    assert inside.wait(60)
    whole = tiny_runner.run_patched(ids[None], lambda *_: None)  # the other pass is paused inside the model meanwhile
    traced = tiny_runner.trace(ids).logits
    finish.set()
    other.join(60)
    assert whole.shape[1] == 6 and traced.shape[0] == 6 and out[0].shape[1] == 1
    assert torch.allclose(out[0][0, 0], whole[0, 4], rtol=1e-4, atol=1e-5)


def test_prompts_of_different_length_are_refused(tiny_runner):
    a = _analysis_of(tiny_runner, tiny_runner.trace(token_ids(5)))
    with pytest.raises(PromptError, match="same length"):
        a.patching(token_ids(6))


@pytest.mark.default_model
def test_france_italy_patching_finds_the_country(default_runner):
    a = lmtt.analyze(default_runner, "The capital of France is")
    italy = default_runner.tokenize("The capital of Italy is")
    # the residual grid only (2 batched passes instead of 9): the other sites are tested on the tiny models
    result = patching.patch_prompts(default_runner, a.trace.token_ids, italy, a.target(-1, " Paris", " Rome"), sites=("resid",))
    country = a.tokens.index(" France")
    assert result.clean_value > 0 > result.corrupted_value
    assert result.resid[0, country] == pytest.approx(1.0, abs=1e-3)
    assert float(result.resid[-1, -1]) > 0.5  # by the last layer the answer has moved to the last position
    others = [p for p in range(len(a.tokens)) if p != country]
    assert result.resid[0, others].abs().max() < 1e-3
