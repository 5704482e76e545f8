"""The fast engine against the plain reference implementation (the oracle)."""

import pytest
import torch

from lmtt import attribution
from lmtt.attribution import chunk_size, compute_contributions, proximity, renormalize
from tests import reference
from tests.tiny_models import token_ids

TOL = 1e-5


def assert_matches_oracle(fast, ref) -> None:
    names = ("attn_edges", "attn_resid", "ffn_resid", "ffn")
    for name, expected in zip(names, ref):
        got = getattr(fast, name).double()
        assert (got - expected).abs().max() <= TOL, name


def test_fast_engine_matches_the_oracle(tiny_runner):
    trace = tiny_runner.trace(token_ids(9))
    assert_matches_oracle(compute_contributions(trace, tiny_runner.layer_weights), reference.contributions(tiny_runner, trace))


def test_renormalising_threshold_matches_the_oracle(tiny_runner):
    trace = tiny_runner.trace(token_ids(7))
    fast = compute_contributions(trace, tiny_runner.layer_weights, renorm_threshold=0.05)
    assert_matches_oracle(fast, reference.contributions(tiny_runner, trace, renorm_threshold=0.05))


def test_chunking_never_changes_the_numbers(tiny_runner):
    trace = tiny_runner.trace(token_ids(13))
    whole = compute_contributions(trace, tiny_runner.layer_weights)
    tiny_budget = compute_contributions(trace, tiny_runner.layer_weights, budget_bytes=1)  # one query per chunk
    for name in ("attn_edges", "attn_resid"):
        assert torch.allclose(getattr(whole, name), getattr(tiny_budget, name), atol=1e-6)


def test_contributions_are_normalised_and_causal(tiny_runner):
    trace = tiny_runner.trace(token_ids(10))
    c = compute_contributions(trace, tiny_runner.layer_weights)
    assert torch.allclose(c.attn_edges.sum(-1) + c.attn_resid, torch.ones_like(c.attn_resid), atol=1e-5)
    assert torch.allclose(c.ffn + c.ffn_resid, torch.ones_like(c.ffn), atol=1e-6)
    assert torch.all(c.attn_edges.triu(diagonal=1) == 0)
    causal = torch.ones(trace.n_tokens, trace.n_tokens).tril().bool()
    assert torch.all(c.attn_edges[:, causal] > 0)  # every causal edge exists (eps floor)


def test_a_chunk_never_spans_the_whole_sequence():
    for t in (2, 16, 128, 1024, 4096):
        step = chunk_size(t, n_heads=9, d_model=576)
        assert step < t
        assert step * t * 9 * 576 * 4 <= max(attribution.DEFAULT_BUDGET_BYTES, t * 9 * 576 * 4)


def test_attention_chunks_stay_under_the_budget(tiny_runner, monkeypatch):
    """Spy on the kernel: the largest (C, J, H, d) block it is asked for is one chunk, never T x T x H x d."""
    trace = tiny_runner.trace(token_ids(16))
    seen = []
    real = attribution.l1_distances

    def spy(y, a, u):
        seen.append(a.numel() * y.shape[-1])
        return real(y, a, u)

    monkeypatch.setattr(attribution, "l1_distances", spy)
    budget = 16 * trace.n_heads * trace.resid.shape[-1] * 4 * 3  # three query rows
    compute_contributions(trace, tiny_runner.layer_weights, budget_bytes=budget)
    full = trace.n_tokens**2 * trace.n_heads * trace.resid.shape[-1]
    assert max(seen) <= 3 * trace.n_tokens * trace.n_heads * trace.resid.shape[-1] < full


def test_eager_and_fused_kernels_both_match_the_oracle(tiny_runner, monkeypatch):
    trace = tiny_runner.trace(token_ids(8))
    ref = reference.contributions(tiny_runner, trace)
    assert_matches_oracle(compute_contributions(trace, tiny_runner.layer_weights), ref)  # the default kernel
    monkeypatch.setattr(attribution, "l1_distances", attribution._l1_distances_eager)
    assert_matches_oracle(compute_contributions(trace, tiny_runner.layer_weights), ref)


def test_the_fused_kernel_is_used_where_a_compiler_exists():
    import shutil

    y, a, u = torch.randn(3, 8), torch.rand(3, 5, 2), torch.randn(5, 2, 8)
    attribution.l1_distances(y, a, u)
    if shutil.which("gcc") or shutil.which("g++"):
        assert attribution.l1_distances.mode == "fused"
    assert attribution.l1_distances.mode in ("fused", "eager")


def test_proximity_and_renormalize_on_known_numbers():
    y = torch.tensor([3.0, -1.0])
    parts = torch.tensor([[3.0, 0.0], [0.0, -1.0], [-5.0, 0.0]])
    # |y| = 4; |y - z| = 1, 3, 9 -> proximities 3, 1, eps
    assert torch.allclose(proximity(y, parts), torch.tensor([3.0, 1.0, attribution.EPS]))
    c = torch.tensor([[0.5, 0.3, 0.2]])
    assert torch.allclose(renormalize(c, 0.25), torch.tensor([[0.625, 0.375, 0.0]]))


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_renormalize_edge_thresholds(threshold):
    c = torch.tensor([[0.6, 0.4]])
    out = renormalize(c, threshold)
    assert torch.isfinite(out).all()
