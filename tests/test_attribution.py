"""The fast engine against the plain reference implementation (the oracle)."""

import pytest
import torch

from lmtt.engine import attribution
from lmtt.engine.attribution import chunk_size, compute_contributions, proximity, renormalize
from tests import reference
from tests.tiny_models import token_ids

TOL = 1e-5


def assert_matches_oracle(fast, ref, tol: float = TOL) -> None:
    names = ("attn_edges", "attn_resid", "ffn_resid", "ffn")
    for name, expected in zip(names, ref):
        got = getattr(fast, name).double()
        assert (got - expected).abs().max() <= tol, (name, float((got - expected).abs().max()))


def test_fast_engine_matches_the_oracle(tiny_runner):
    trace = tiny_runner.trace(token_ids(9))
    assert_matches_oracle(compute_contributions(trace, tiny_runner.layer_weights), reference.contributions(tiny_runner, trace))


@pytest.mark.parametrize("room", ["layout only", "neither"])
def test_the_full_graph_without_dense_head_values_matches_the_oracle(tiny_runner, monkeypatch, room):
    """Past DENSE_LAYER_MAX_BYTES (an 8B model at T=1024) u is not kept, or neither u nor its layout: the same numbers."""
    trace = tiny_runner.trace(token_ids(9))
    u_bytes = trace.n_tokens * trace.n_heads * trace.resid[0].shape[-1] * 4
    monkeypatch.setattr(attribution, "DENSE_LAYER_MAX_BYTES", {"cpu": u_bytes if room == "layout only" else 0})
    assert_matches_oracle(compute_contributions(trace, tiny_runner.layer_weights), reference.contributions(tiny_runner, trace))


def test_renormalising_threshold_matches_the_oracle(tiny_runner):
    trace = tiny_runner.trace(token_ids(7))
    fast = compute_contributions(trace, tiny_runner.layer_weights, renorm_threshold=0.05)
    assert_matches_oracle(fast, reference.contributions(tiny_runner, trace, renorm_threshold=0.05))


def test_chunking_never_changes_the_numbers(tiny_runner):
    trace = tiny_runner.trace(token_ids(13))
    whole = compute_contributions(trace, tiny_runner.layer_weights)
    tiny_budget = compute_contributions(trace, tiny_runner.layer_weights, budget_bytes=1)  # one query per chunk
    for name in ("attn_edges", "attn_resid", "ffn"):
        assert torch.allclose(getattr(whole, name), getattr(tiny_budget, name), atol=1e-6)


def test_contributions_are_normalised_and_causal(tiny_runner):
    trace = tiny_runner.trace(token_ids(10))
    c = compute_contributions(trace, tiny_runner.layer_weights)
    if tiny_runner.parallel:  # one node per block: heads, residual and FFN split its output together
        assert torch.allclose(c.attn_edges.sum(-1) + c.attn_resid + c.ffn, torch.ones_like(c.attn_resid), atol=1e-5)
        assert torch.all(c.ffn_resid == 0)
    else:
        assert torch.allclose(c.attn_edges.sum(-1) + c.attn_resid, torch.ones_like(c.attn_resid), atol=1e-5)
        assert torch.allclose(c.ffn + c.ffn_resid, torch.ones_like(c.ffn), atol=1e-6)
    assert torch.all(c.attn_edges.triu(diagonal=1) == 0)
    causal = torch.ones(trace.n_tokens, trace.n_tokens).tril().bool()
    assert torch.all(c.attn_edges[:, causal] > 0)  # every causal edge exists (eps floor)


def test_chunks_stay_under_the_memory_budget():
    for t in (2, 16, 128, 1024, 4096, 65536):
        step = chunk_size(t, n_heads=9)
        assert step == 1 or step * t * 9 * 4 * attribution.CHUNK_TENSORS <= attribution.DEFAULT_BUDGET_BYTES
        assert step <= attribution.MAX_CHUNK


def test_attention_chunks_stay_under_the_budget(tiny_runner, monkeypatch):
    """Spy on the kernel: every chunk it sees is a few query rows, never the whole T x T x H."""
    trace = tiny_runner.trace(token_ids(16))
    seen = []
    real = attribution.attention_proximities

    def spy(y, a, hv):
        seen.append(a.shape[0])
        return real(y, a, hv)

    monkeypatch.setattr(attribution, "attention_proximities", spy)
    budget = 16 * trace.n_heads * 4 * attribution.CHUNK_TENSORS * 3  # three query rows
    compute_contributions(trace, tiny_runner.layer_weights, budget_bytes=budget)
    assert max(seen) == 3 and len(seen) == trace.n_layers * 6


def test_split_proximities_equal_the_plain_formula(tiny_runner):
    """The GEMM + small-coordinate method against |y| - |y - a u| summed over every coordinate."""
    trace = tiny_runner.trace(token_ids(12))
    hv = attribution.head_values(trace, tiny_runner.layer_weights[1], 1)
    y = trace.mid(1)
    a = trace.attention(1).permute(1, 2, 0).contiguous()  # (T, T, H)
    plain = y.abs().sum(-1)[:, None, None] - (y[:, None, None, :] - a[..., None] * hv.u[None]).abs().sum(-1)
    split = attribution.attention_proximities(y, a, hv)
    assert (split - plain).abs().max() <= 1e-5 * y.abs().sum(-1).max()


def test_eager_and_fused_kernels_both_match_the_oracle(tiny_runner, compiled_kernels, monkeypatch):
    trace = tiny_runner.trace(token_ids(8))
    ref = reference.contributions(tiny_runner, trace)
    monkeypatch.setattr(attribution, "EAGER_BELOW", 0)  # tiny inputs would otherwise skip the compiled kernel
    assert_matches_oracle(compute_contributions(trace, tiny_runner.layer_weights), ref)
    assert attribution.small_coords_correction.mode == ("fused" if has_compiler() else "eager")
    monkeypatch.setattr(attribution, "small_coords_correction", attribution._small_coords_eager)
    monkeypatch.setattr(attribution, "loose_exact", attribution._loose_exact_eager)
    assert_matches_oracle(compute_contributions(trace, tiny_runner.layer_weights), ref)


def has_compiler() -> bool:
    import shutil

    return bool(shutil.which("gcc") or shutil.which("g++"))


def test_the_fused_kernel_is_used_where_a_compiler_exists(compiled_kernels):
    attribution.warm_up(576)
    for kernel in (attribution.small_coords_correction, attribution.loose_exact):
        assert kernel.mode == ("fused" if has_compiler() else "eager")


def test_a_warmed_up_kernel_compiles_nothing_more(compiled_kernels):
    """warm_up compiles the kernel once, and an analysis's calls (other sizes, one query row, J equal to the layout's
    sources) reuse it. Each recompile cost 2-5 s: the first 4,000-token graph compiled twice more, once for a guard on
    warm_up's `with torch.device(...)` and once for a chunk of one row. (The layouts have a padding column, so J < T.)"""
    if not has_compiler():
        pytest.skip("no C++ compiler here: the kernels run eagerly, nothing compiles")
    attribution.warm_up(576)
    k = attribution.small_coords(576)
    gen = torch.Generator().manual_seed(0)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for c, j, t in ((1, 700, 701), (2, 900, 1000), (64, 333, 334), (5, 4000, 4001)):
            args = (torch.randn(c, k, generator=gen), torch.randint(0, 20, (c, k), generator=gen),
                    torch.rand(c, j, 9, generator=gen), torch.randn(20, t, 9, generator=gen))  # fmt: skip
            expected = torch.zeros(c, j, 9)
            for q in range(c):  # the plain sum over the K coordinates, one query at a time
                y, u = args[0][q], args[3][args[1][q], :j]  # (K,), (K, J, H)
                expected[q] = (y.abs()[:, None, None] - (y[:, None, None] - args[2][q] * u).abs()).sum(0)
            got = attribution.small_coords_correction(*args)
            assert (got - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max())), (c, j, t)


def test_proximity_and_renormalize_on_known_numbers():
    y = torch.tensor([3.0, -1.0])
    parts = torch.tensor([[3.0, 0.0], [0.0, -1.0], [-5.0, 0.0]])
    # |y| = 4; |y - z| = 1, 3, 9 -> proximities 3, 1, eps
    assert torch.allclose(proximity(y, parts), torch.tensor([3.0, 1.0, attribution.EPS]))
    c = torch.tensor([[0.5, 0.3, 0.2]])
    assert torch.allclose(renormalize(c, 0.25), torch.tensor([[0.625, 0.375, 0.0]]))


@pytest.mark.parametrize(("threshold", "expected"), [(0.0, [[0.6, 0.4]]), (0.5, [[1.0, 0.0]]), (1.0, [[0.0, 0.0]])])
def test_renormalize_edge_thresholds(threshold, expected):
    """Threshold 0 keeps everything; one above every part keeps nothing, and gives zeros, not NaN."""
    assert torch.allclose(renormalize(torch.tensor([[0.6, 0.4]]), threshold), torch.tensor(expected))
