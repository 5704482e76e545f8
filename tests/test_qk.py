"""QK attribution on every family: the pairs sum to the recorded score, and the scores they rebuild give the model's
own attention weights (its eager implementation), and each part matches a float64 re-derivation from the weights."""

import pytest
import torch

import lmtt
from lmtt.analysis import _analysis_of
from lmtt.questions import qk
from tests.tiny_models import tiny_model, token_ids

N_TOKENS = 8


def _analysis(runner):
    return _analysis_of(runner, runner.trace(token_ids(N_TOKENS)))


def test_pairs_sum_to_the_score(tiny_runner):
    a = _analysis(tiny_runner)
    extra = 1 if tiny_runner.adapter.position_embedding else 0  # learned positions are a part of their own
    for layer, head, query, key in ((0, 0, 7, 7), (a.n_layers - 1, 3, 7, 2), (a.n_layers - 1, 1, 4, 0)):
        result = a.qk_attribution(layer, head, query, key)
        assert len(result.parts) == 2 * layer + 2 + extra  # embedding, attn and FFN of every earlier layer, bias
        assert float(result.pairs.sum()) == pytest.approx(result.score, rel=1e-4, abs=1e-5)
        assert torch.allclose(result.query_parts.sum(), result.pairs.sum())


def test_key_differences_are_the_models_log_ratios(tiny_runner):
    """Oracle: the model's own eager attention weights. s_ij1 - s_ij2 = log(w_ij1 / w_ij2) for every pair of keys the
    query attends to, with s the sum of the pairs after the family's attention softcap. Sinks only add to the
    denominator, and a sliding window's masked keys have no weight, so neither is skipped."""
    eager = tiny_model(tiny_runner.name)  # the same seeded weights, transformers' eager attention
    a = _analysis(tiny_runner)
    layer, head, query = a.n_layers - 1, 1, N_TOKENS - 1
    with torch.no_grad():
        weights = eager(token_ids(N_TOKENS)[None], output_attentions=True).attentions[layer][0, head, query].detach()  # (T,)
    keys = [j for j in range(query + 1) if weights[j] > 1e-6]
    assert len(keys) >= 2
    scores = torch.tensor([float(a.qk_attribution(layer, head, query, j).pairs.sum()) for j in keys])
    if (cap := a.trace.softcaps[layer]) is not None:
        scores = torch.tanh(scores / cap) * cap
    log_w = weights[keys].double().log()
    assert torch.allclose((scores - scores[0]).double(), log_w - log_w[0], atol=2e-4)
    every = a.key_scores(layer, head, query)  # the page's bar of every key: recorded scores, lmtt's weights
    assert torch.allclose(every.weights, weights, atol=1e-5)
    raw = torch.tensor([float(a.qk_attribution(layer, head, query, j).pairs.sum()) for j in keys])
    assert torch.allclose(every.scores[keys], raw, rtol=1e-4, atol=1e-5)


def test_the_folded_table_keeps_the_largest_parts_and_sums_to_the_score(default_runner):
    a = lmtt.analyze(default_runner, "When Mary and John went to the store, John gave a drink to")
    result = a.qk_attribution(23, 3, -1, 9)
    rows, cols, table = result.folded(12)
    assert table.shape == (13, 13) and rows[-1] == cols[-1] == "rest (36)"  # 48 parts: 12 shown, 36 folded
    assert float(table.sum()) == pytest.approx(result.score, rel=1e-4)
    biggest = result.parts[int(result.query_parts.abs().argmax())]
    assert biggest in rows


def _float64_rms(x, weight, eps):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def test_qwen3_parts_match_a_float64_rederivation():
    """Input RMSNorm and the per-head q/k RMSNorms frozen at the real pass's scales, q_proj/k_proj, then the
    model's rotary tables: each part's query and key, then every pair, in float64."""
    runner = lmtt.ModelRunner(tiny_model("qwen3"), tokenizer=None, name="qwen3")
    a = _analysis(runner)
    layer, head, query, key, hd = 1, 2, 7, 3, runner.head_dim
    block = runner.blocks[layer]
    attn, ln = block.self_attn, block.input_layernorm
    cos, sin = runner.model.model.rotary_emb(a.trace.resid[0][None], torch.arange(N_TOKENS)[None])  # (1, T, hd)

    def side(pos, proj, qk_norm, unit):
        parts = [a.trace.resid[0][pos]] + [t[pos] for l in range(layer) for t in (a.trace.attn_out[l], a.trace.ffn_out[l])]
        parts = torch.stack(parts).double()  # (P-1, d)
        x = parts.sum(0)
        s = 1 / torch.sqrt(x.pow(2).mean() + ln.variance_epsilon)  # the input norm's scale at this position
        w = proj.weight.double()[unit * hd : (unit + 1) * hd]  # (hd, d)
        raw = parts * s * ln.weight.double() @ w.T  # (P-1, hd): no bias in Qwen3's projections
        whole = raw.sum(0)
        s_q = 1 / torch.sqrt(whole.pow(2).mean() + qk_norm.variance_epsilon)  # the q/k norm's scale, frozen
        normed = raw * s_q * qk_norm.weight.double()
        c, sn = cos[0, pos].double(), sin[0, pos].double()
        half = hd // 2
        rotated = normed * c + torch.cat([-normed[:, half:], normed[:, :half]], -1) * sn
        return torch.cat([rotated, torch.zeros(1, hd, dtype=torch.float64)])  # the bias part is zero here

    kv = int(a.trace.kv_index[head])
    with torch.no_grad():
        expected = a.trace.scales[layer] * side(query, attn.q_proj, attn.q_norm, head) @ side(key, attn.k_proj, attn.k_norm, kv).T
    got = a.qk_attribution(layer, head, query, key).pairs.double()
    assert torch.allclose(got, expected, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("family", ["gpt2", "opt"])
def test_learned_positions_are_a_part_of_their_own(family):
    """The "pos" part is the position embedding's own row (OPT's table is offset by 2), and "emb" the token's."""
    runner = lmtt.ModelRunner(tiny_model(family), tokenizer=None, name=family)
    a = _analysis(runner)
    result = a.qk_attribution(1, 0, 6, 2)
    assert result.parts == ("emb", "pos", "L0.attn", "L0.FFN", "bias")  # blocks named as the Target page names them
    parts = qk.residual_parts(runner, a.trace, 1, torch.tensor([2, 6]))  # (2, P-1, d)
    table = runner.model.transformer.wpe if family == "gpt2" else runner.model.model.decoder.embed_positions
    offset = 0 if family == "gpt2" else 2
    assert torch.allclose(parts[:, 1], table.weight[torch.tensor([2, 6]) + offset].float(), atol=1e-6)
    tokens = runner.model.get_input_embeddings().weight[a.trace.token_ids[[2, 6]]].float()
    assert torch.allclose(parts[:, 0], tokens, atol=1e-6)


def test_gpt2_parts_match_a_float64_rederivation():
    """No rotary, a LayerNorm (centred, with a bias) and a fused Conv1D c_attn: q_a = W_Q(s g ⊙ (z_a - mean z_a)),
    and the bias part W_Q beta + b_Q."""
    runner = lmtt.ModelRunner(tiny_model("gpt2"), tokenizer=None, name="gpt2")
    a = _analysis(runner)
    layer, head, query, key, hd = 2, 3, 6, 1, runner.head_dim
    block = runner.blocks[layer]
    d = a.trace.d_model
    w, b = block.attn.c_attn.weight.double(), block.attn.c_attn.bias.double()  # (d, 3d), (3d,)

    def side(pos, offset):
        rows = [a.trace.resid[0][pos]] + [t[pos] for l in range(layer) for t in (a.trace.attn_out[l], a.trace.ffn_out[l])]
        parts = torch.stack(rows).double()
        x = parts.sum(0)
        s = 1 / torch.sqrt((x - x.mean()).pow(2).mean() + block.ln_1.eps)
        centred = (parts - parts.mean(-1, keepdim=True)) * s * block.ln_1.weight.double()
        cols = slice(offset + head * hd, offset + (head + 1) * hd)
        bias = block.ln_1.bias.double() @ w[:, cols] + b[cols]
        return torch.cat([centred @ w[:, cols], bias[None]])  # (P, hd): emb (token + position as one), updates, bias

    with torch.no_grad():
        expected = a.trace.scales[layer] * side(query, 0) @ side(key, d).T
    got = a.qk_attribution(layer, head, query, key).pairs.double()
    got = torch.cat([got[:1] + got[1:2], got[2:]])  # token + position rows, then the same for columns
    got = torch.cat([got[:, :1] + got[:, 1:2], got[:, 2:]], 1)
    assert torch.allclose(got, expected, atol=1e-5 * float(expected.abs().max()))


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
