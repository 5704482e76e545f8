"""The logit lens's top token per cell agrees with the engine's per-token lens grid."""

import torch

from lmtt.questions.lens import top_token_grid


def test_top_tokens_have_rank_zero_and_their_probability(default_runner):
    import lmtt

    a = lmtt.analyze(default_runner, "The capital of France is")
    ids, probs = top_token_grid(a)
    assert ids.shape == probs.shape == (2 * a.n_layers + 1, len(a.tokens))
    assert int(ids[-1, -1]) == a.predictions(-1, 1)[0].token_id  # the output state's top token is the prediction
    for level, pos in ((0, 1), (30, 3), (2 * a.n_layers, 4)):
        p, rank = a.lens_grid(int(ids[level, pos]))
        assert int(rank[level, pos]) == 0
        assert torch.isclose(p[level, pos], probs[level, pos], atol=1e-5)


def test_the_followed_token_is_the_texts_own_not_bos():
    """A tokenizer that puts BOS first (as Llama's, Gemma's and Mistral's do): the lens follows the typed word."""
    from lmtt.engine.runner import ModelRunner
    from lmtt.questions.lens import follow_token
    from tests.tiny_models import tiny_model, tiny_tokenizer

    runner = ModelRunner(tiny_model("llama_gqa_bias"), tokenizer=tiny_tokenizer(bos=True), name="llama")
    assert runner.tokenize("w5 w7").tolist() == [1, 5, 7]  # a prompt does get its BOS
    assert follow_token(runner, "w5") == 5
    assert follow_token(runner, "w42 w7") == 42  # text of several tokens follows the first one


def test_an_analysis_answers_a_repeated_question_from_its_memo(monkeypatch):
    """A dashboard reruns its page on every click: the same lens grid, direct effects or QK pairs are computed once,
    and the memo stays bounded."""
    import lmtt.analysis as analysis_module
    from lmtt.analysis import analyze
    from lmtt.engine.runner import ModelRunner
    from lmtt.questions import lens
    from tests.tiny_models import tiny_model, token_ids

    a = analyze(ModelRunner(tiny_model("llama_gqa_bias"), tokenizer=None, name="llama"), token_ids(6))
    calls = []
    real = lens.top_token_grid
    monkeypatch.setattr(lens, "top_token_grid", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    first = a.top_lens_grid()
    assert a.top_lens_grid() is first and len(calls) == 1
    assert torch.equal(first[0], real(a)[0])  # the memo holds the plain function's answer
    assert a.top_lens_grid(final_norm=False) is not first and len(calls) == 2  # another question, another entry
    target = a.target(-1, 3)
    assert a.direct_effects(target) is a.direct_effects(a.target(-1, 3))  # equal targets share an entry
    monkeypatch.setattr(analysis_module, "MEMO_ENTRIES", 4)
    for key in range(6):
        a.qk_attribution(1, 0, 5, key)
    assert len(a._memo) == 4  # the least recently used answers went


def test_a_text_that_begins_with_bos_gets_no_second_one():
    """A chat template's text starts with BOS (Llama 3's <|begin_of_text|>, Gemma's <bos>): tokenized as a prompt, it
    had got a second one in front, so the model read another input than its template makes."""
    from lmtt.engine.runner import ModelRunner
    from tests.tiny_models import tiny_model, tiny_tokenizer

    runner = ModelRunner(tiny_model("llama_gqa_bias"), tokenizer=tiny_tokenizer(bos=True), name="llama")
    assert runner.tokenize("w5 w7").tolist() == [1, 5, 7]
    assert runner.tokenize("w1 w5 w7").tolist() == [1, 5, 7]  # "w1" is this tokenizer's BOS
