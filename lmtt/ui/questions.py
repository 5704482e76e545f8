"""Controls of the question pages (Target, Faithfulness, Patching): the target/contrast picker, the QK tab's head and keys,
and a small result memo."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pandas as pd
import streamlit as st

from lmtt.analysis import Analysis
from lmtt.engine.tokens import readable_tokens, token_text, visible
from lmtt.questions.dla import DirectEffects, Target, TargetError, search_vocabulary
from lmtt.questions.faithfulness import FaithfulnessCurve
from lmtt.ui.markdown import plain
from lmtt.ui.progress import Steps, cancelled
from lmtt.ui.runs import intervention
from lmtt.ui.state import CHOICE_PARAMS, View, describe_edit, link_default, rewrite_link, ss

TOP = -1  # "the model's top prediction"
NONE = -2  # "no contrast"
RUNNER_UP = -3  # "the most likely token other than A"
LOG_PROB = -4  # "explain log p(A)" (routes only: it has no direct effects)
PAGE_DEFAULT = -5  # stored for B when the user left it at the page's default, so each page keeps its own default
MEMO_ENTRIES = 8
T = TypeVar("T")


def _name(analysis, token_id: int, probs) -> str:
    if token_id == TOP:
        return "top prediction"
    if token_id == NONE:
        return "none (explain logit(A))"
    if token_id == RUNNER_UP:
        return "runner-up (the most likely token other than A)"
    if token_id == LOG_PROB:
        return "none: explain log p(A) (moves with p(A))"
    return f"{visible(token_text(analysis.runner, token_id))}  (id {token_id}, p={float(probs[token_id]):.3f})"


def target_picker(view: View, a: Analysis | None = None, default_contrast: int = NONE) -> Target | None:
    """Target A and contrast B at the explained token of `a` (default: the view's analysis): top predictions,
    or any token found by search. `default_contrast` is NONE, RUNNER_UP or LOG_PROB (then log p(A) is offered:
    a page whose question has no direct effects). None on bad input."""
    a = a or view.analysis
    probs = a.trace.logits_at(view.token).softmax(-1)
    top = [p.token_id for p in a.predictions(view.token, 10)]
    with st.expander("Target and contrast", expanded=True):
        query = st.text_input("Find a vocabulary token (text contained in it)", key="q_search", placeholder="e.g. John")
        found = search_vocabulary(a.runner, query) if query else []
        if query and not found:
            st.caption(f"No token contains {visible(query)!r}.")
        chosen = [ss.get("q_target", TOP), ss.get("q_contrast", PAGE_DEFAULT)]
        chosen[1] = default_contrast if chosen[1] == PAGE_DEFAULT else chosen[1]
        vocab = a.trace.last_logits.shape[-1]
        for name, c in zip(("Target A", "Contrast B"), chosen):
            if c >= vocab:  # pinned from another model's run: say so, do not reuse it silently
                st.warning(f"{name} (token id {c}), kept from the last run, is not in this model's vocabulary of {vocab}: not used.")
        chosen = [c if c < vocab else d for c, d in zip(chosen, (TOP, NONE))]
        options = list(dict.fromkeys([*top, *found, *[c for c in chosen if c >= 0]]))
        c1, c2 = st.columns(2)
        a_options = [TOP, *options]
        b_options = list(dict.fromkeys([default_contrast, NONE, RUNNER_UP, *options]))
        if chosen[1] not in b_options:
            chosen[1] = default_contrast
        target_id = c1.selectbox(
            "Target A", a_options, index=a_options.index(chosen[0]), format_func=lambda i: _name(a, i, probs), key="_w_q_target"
        )
        contrast_id = c2.selectbox(
            "Contrast B", b_options, index=b_options.index(chosen[1]), format_func=lambda i: _name(a, i, probs), key="_w_q_contrast"
        )
    ss.q_target, ss.q_contrast = target_id, PAGE_DEFAULT if contrast_id == default_contrast else contrast_id
    rewrite_link()
    answer = None if target_id == TOP else target_id
    try:
        if contrast_id == RUNNER_UP:
            return a.contrast_target(view.token, answer)
        if contrast_id == LOG_PROB:
            return a.log_prob_target(view.token, answer)
        return a.target(view.token, answer, None if contrast_id == NONE else contrast_id)
    except TargetError as e:
        st.error(plain(str(e)))
        return None


QK_CHOICES = ("q_qk_layer", "q_qk_head", "q_qk_key", "q_qk_other")


def qk_picker(a: Analysis, target: Target, effects: DirectEffects, start: tuple[int, int]) -> tuple[int, int, int, int | None]:
    """(layer, head, key position, compared key or None) of the QK tab, from its four widgets.

    They start at `start` (the head the user came from, else the target's strongest head) and its strongest key; a
    new target or start head starts them afresh. A link's choices are kept on the first draw, when they fit."""
    scope = (target, start)
    keys = range(target.position + 1)

    def strongest(layer: int, head: int) -> int:
        return int(effects.head_sources[layer, head].abs().argmax())

    fits = {
        "q_qk_layer": lambda v: 0 <= v < a.n_layers,
        "q_qk_head": lambda v: 0 <= v < a.n_heads,
        "q_qk_key": lambda v: v in keys,
        "q_qk_other": lambda v: v is None or v in keys,
    }
    if ss.get("q_qk_scope") != scope:  # a link restores them before the first draw; a later scope change resets them
        first = "q_qk_scope" not in ss
        for name in QK_CHOICES:
            if first and name in ss and not fits[name](ss[name]):
                in_link = next(param for param, key, _kind in CHOICE_PARAMS["target"] if key == name)
                st.warning(f"Ignored {in_link}={ss[name]} in the link: out of range for this model and target.")
            if not first or (name in ss and not fits[name](ss[name])):
                ss.pop(name, None)
        ss.q_qk_scope = scope
    ss.setdefault("q_qk_layer", start[0])
    ss.setdefault("q_qk_head", start[1])

    def new_head() -> None:  # another head: its own strongest key, nothing to compare yet
        ss.pop("q_qk_key", None)
        ss.pop("q_qk_other", None)

    c1, c2, c3, c4 = st.columns(4)
    layer = int(c1.number_input("Layer", 0, a.n_layers - 1, key="q_qk_layer", on_change=new_head))
    head = int(c2.number_input("Head", 0, a.n_heads - 1, key="q_qk_head", on_change=new_head))
    ss.setdefault("q_qk_key", strongest(layer, head))
    ss.setdefault("q_qk_other", None)
    link_default(q_qk_layer=start[0], q_qk_head=start[1], q_qk_key=strongest(layer, head), q_qk_other=None)
    tokens = readable_tokens(a)
    key_pos = c3.selectbox("Key (source) token", keys, format_func=lambda p: f"{p}: {visible(tokens[p])}", key="q_qk_key")
    other_pos = c4.selectbox(
        "Compare with key",
        [None, *keys],
        format_func=lambda p: "none" if p is None else f"{p}: {visible(tokens[p])}",
        key="q_qk_other",
    )
    rewrite_link()
    return layer, head, int(key_pos), other_pos


def answered_on(view: View, follows_edits: bool = True) -> Analysis:
    """The analysis a question page answers on, said in words: the edited run when edits are active.

    A question that cannot run on edits (`follows_edits=False`) answers on the unedited model and says so.
    """
    if not view.edits:
        return view.analysis
    edits = ", ".join(describe_edit(e) for e in view.edits)
    if not follows_edits:
        st.info(f"These numbers are for the **unedited** model: this question does not apply edits ({edits}). "
                "Clear the edits (the button beside them, above) to hide this note.")  # fmt: skip
        return view.analysis
    result = intervention(view)
    if result is None:  # the analysis limit refused the edited run; the message is already shown
        st.info("These numbers are for the **unedited** model: the edited run could not be computed now.")
        return view.analysis
    st.info(f"These numbers are for the **edited** model ({edits}).")
    return result.analysis


def memo(key: tuple, compute: Callable):
    """A per-session cache of the last few results (a rerun of the page must not redo a faithfulness curve)."""
    cache: dict = ss.setdefault("_q_memo", {})
    if key not in cache:
        if len(cache) >= MEMO_ENTRIES:
            cache.pop(next(iter(cache)))
        cache[key] = compute()
    return cache[key]


def on_button(key: tuple, name: str, label: str, what: str, compute: Callable[[Steps], T], units: str = "forward passes") -> T | None:
    """A long question's result: remembered (see memo), or computed when the user presses `label`, with progress
    in `units` and Cancel. None until then: a keystroke elsewhere on the page never starts it."""
    if key in ss.get("_q_memo", {}):
        return ss["_q_memo"][key]
    if note := cancelled(name):
        st.warning(f"{note} Nothing was kept: press {label!r} to run it again.")
    slot = st.empty()
    if not slot.button(label, type="primary", key=f"run_{name}"):
        return None
    steps = Steps(name, what, units, at=(slot, st.empty()))  # pressed: Cancel and the bar replace the button and its note
    try:
        return memo(key, lambda: compute(steps))
    finally:
        steps.close()


def curve_table(curve: FaithfulnessCurve) -> tuple[pd.DataFrame, dict]:
    """The curve's points as a table and its column formats: fractions and logits to 3 decimals, probabilities in
    scientific notation (a route keeps p(A) anywhere from 1 to 1e-9: fixed decimals read "0.000", and plain 3
    significant digits mix "0.0000109" with "1.29e-9" in one column); the top prediction with visible white space.
    Columns are headed in the page's terms (m, A, route); the quantity and the ablation, the same in every row, are
    in the chart's title."""
    table = pd.DataFrame([p.to_dict() for p in curve.points]).drop(columns=["quantity", "ablation"])  # None: undefined
    table["top_route"] = table["top_route"].map(visible)
    heads = {"edges": "edges kept", "faithfulness": "faithfulness", "value_full": "m(model)", "value_route": "m(route)",
             "value_empty": "m(nothing)", "prob_kept": "p(A) kept", "prob_full": "p(A), model", "prob_route": "p(A), route"}  # fmt: skip
    columns = {
        name: st.column_config.NumberColumn(head, format="%.2e" if name.startswith("prob") else "%.3f" if name != "edges" else None)
        for name, head in heads.items()
    }
    return table, {**columns, "top_route": st.column_config.TextColumn("route's top prediction", width="medium")}
