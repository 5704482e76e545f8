"""Shared controls of the Target, Faithfulness and Patching pages: the target/contrast picker and a small result memo."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from lmtt.engine.chat import chat_prompt
from lmtt.engine.config import AppConfig
from lmtt.engine.loading import LoadError
from lmtt.engine.runner import PromptError
from lmtt.questions.dla import Target, TargetError, search_vocabulary
from lmtt.ui.runs import cached_runner
from lmtt.ui.state import View, ss
from lmtt.viz.figures import visible

TOP = -1  # "the model's top prediction"
NONE = -2  # "no contrast"
MEMO_ENTRIES = 8


def _name(analysis, token_id: int, probs) -> str:
    if token_id == TOP:
        return "top prediction"
    if token_id == NONE:
        return "none (explain logit(A))"
    return f"{visible(analysis.runner.decode(token_id))}  (id {token_id}, p={float(probs[token_id]):.3f})"


def target_picker(view: View) -> Target | None:
    """Target A and contrast B at the explained token: top predictions, or any token found by search. None on bad input."""
    a = view.analysis
    probs = a.trace.logits[view.token].softmax(-1)
    top = [p.token_id for p in a.predictions(view.token, 10)]
    with st.expander("Target and contrast", expanded=True):
        query = st.text_input("Find a vocabulary token (text contained in it)", key="q_search", placeholder="e.g. John")
        found = search_vocabulary(a.runner, query) if query else []
        if query and not found:
            st.caption(f"No token contains {visible(query)!r}.")
        chosen = [ss.get("q_target", TOP), ss.get("q_contrast", NONE)]
        vocab = a.trace.logits.shape[-1]
        chosen = [c if c < vocab else d for c, d in zip(chosen, (TOP, NONE))]  # from another model
        options = list(dict.fromkeys([*top, *found, *[c for c in chosen if c >= 0]]))
        c1, c2 = st.columns(2)
        a_options, b_options = [TOP, *options], [NONE, *options]
        target_id = c1.selectbox(
            "Target A", a_options, index=a_options.index(chosen[0]), format_func=lambda i: _name(a, i, probs), key="_w_q_target"
        )
        contrast_id = c2.selectbox(
            "Contrast B", b_options, index=b_options.index(chosen[1]), format_func=lambda i: _name(a, i, probs), key="_w_q_contrast"
        )
    ss.q_target, ss.q_contrast = target_id, contrast_id
    try:
        return a.target(view.token, None if target_id == TOP else target_id, None if contrast_id == NONE else contrast_id)
    except TargetError as e:
        st.error(str(e))
        return None


def chat_wrapped(config: AppConfig, model: str, prompt: str) -> str:
    """The prompt in the model's chat template; the prompt itself (and an error shown) when that is impossible."""
    try:
        return chat_prompt(cached_runner(config.models[model]), prompt)
    except (PromptError, LoadError) as e:
        st.session_state.setdefault("_warnings", []).append(f"Chat template not applied: {e}")
        return prompt


def memo(key: tuple, compute: Callable):
    """A per-session cache of the last few results (a rerun of the page must not redo a faithfulness curve)."""
    cache: dict = ss.setdefault("_q_memo", {})
    if key not in cache:
        if len(cache) >= MEMO_ENTRIES:
            cache.pop(next(iter(cache)))
        cache[key] = compute()
    return cache[key]
