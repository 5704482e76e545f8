"""The sidebar every page draws first: navigation, controls, and the analysis to show."""

from __future__ import annotations

import streamlit as st

from lmtt.analysis import Analysis
from lmtt.engine.config import AppConfig
from lmtt.engine.edits import Edit
from lmtt.engine.tokens import readable_tokens, visible
from lmtt.ui.markdown import excerpt, plain
from lmtt.ui.panels import graph_view
from lmtt.ui.runs import chat_wrapped, fetch_analysis, generate_continuation, read_config
from lmtt.ui.state import (
    PAGES,
    THRESHOLD_MAX,
    View,
    bound,
    clear_edits,
    describe_edit,
    restore_from_url,
    show_link,
    sidebar_input,
    ss,
    start_run,
    validate_against,
    write_url,
)

NOTE_PROMPT_CHARS = 60  # of the shown run's prompt, in the note that the sidebar's prompt is another
INTRO = (
    "**lmtt shows how a language model reaches its next-token prediction.** The graph below is the default prompt's "
    "information flow: tokens are columns, layers are rows, and each line is a contribution large enough to matter "
    "(blue: attention, red: FFN). Click a node to see what the model believes there (logit lens), click an edge's dot "
    "to split it by head, and click a head to zero it and see the prediction change. Type your own prompt in the "
    "sidebar and press **Run**."
)


def _use_sample() -> None:
    """A chosen sample prompt fills the box and runs, as if Run were pressed."""
    if ss._w_sample:
        ss.prompt = ss._w_sample
        ss._run_now = True


def _navigation() -> None:
    for path, title in PAGES:
        st.page_link(path, label=title)


def sidebar(page: str, require_analysis: bool = True) -> View | None:
    """Navigation, controls and the analysis of the open `page`; None (with a message shown) when there is nothing to show.

    Pages that work without an analysis (Dataset) pass require_analysis=False: no empty-state message.
    """
    ss._link_at = None  # set again where the link is shown (a page without an analysis has none)
    with st.sidebar:
        _navigation()
        st.divider()
    graph_view()
    config = read_config()
    if config is None:
        return None
    restore_from_url(config)
    if ss.pop("_link_chat", False):  # a link's chat=1: its text is analysed in the chat template, as Run does
        wrapped = chat_wrapped(config, ss.model, ss.prompt)
        ss.chat = wrapped != ss.prompt  # off where the template cannot be applied (chat_wrapped says why)
        ss.run = (ss.model, wrapped)
        ss._run_box = sidebar_input()  # the run came from the box as it now is (toggle off where it could not apply)
    with st.sidebar:
        st.selectbox("Model", list(config.models), **bound("model"))
        if config.sample_prompts:
            st.selectbox("Sample prompts", [""] + list(config.sample_prompts), key="_w_sample", on_change=_use_sample)
        # no max_chars: a browser would cut (or drop) an over-long paste silently; Run says what is wrong instead
        st.text_area("Prompt", height=100, **bound("prompt"))
        chat = st.toggle("Chat template", help="Wrap the prompt in the tokenizer's chat template (instruct models)", **bound("chat", False))
        if st.button("Run", type="primary", width="stretch") or ss.pop("_run_now", False):
            ss.intro = False
            if len(ss.prompt) > config.max_prompt_chars:
                st.error(
                    f"The prompt has {len(ss.prompt):,} characters; this server analyses at most {config.max_prompt_chars:,}. "
                    "Shorten it and press Run again: your text stays in the box, and the page still shows the last run's analysis."
                )
            else:
                wrapped = chat_wrapped(config, ss.model, ss.prompt) if chat else ss.prompt
                start_run(ss.model, wrapped)
        st.toggle(
            "Pin edits and selections",
            key="pin",
            help="On: a new Run, prompt or model keeps the edits, the selected node, edge, head and neuron, and the compare prompt.",
        )
        with st.expander("Generate a continuation"):
            n_tokens = st.number_input("Tokens to generate", 1, 64, 8, key="gen_n")
            seed = st.number_input("Seed (0: greedy)", 0, 2**31 - 1, 0, key="gen_seed")
            generate = st.button("Generate and analyse", key="gen_go", width="stretch")
    if generate:
        ss.intro = False
        generate_continuation(config, int(n_tokens), int(seed) or None)
    show_warnings()
    if ss.get("intro") and page == "graph":
        st.markdown(INTRO)
    analysis = _current_analysis(config) if (require_analysis or ss.get("run")) else None
    if analysis is None:
        write_url(page)
        return None
    validate_against(analysis)
    if (report := analysis.runner.check_report) is not None and not report.passed:
        failed = "; ".join(f"{r.name}: relative error {r.error:.2e} > {r.tolerance:.0e} ({r.what})" for r in report.failures)
        st.error(f"**The decomposition does not add up for {report.model}**, so its contributions cannot be trusted. Failed: {failed}")
    show_warnings()
    with st.sidebar:
        tokens = readable_tokens(analysis)
        generated_from = ss.get("generated_from") or len(tokens)
        st.selectbox(
            "Token to explain",
            range(len(tokens)),
            format_func=lambda p: f"{p}: {visible(tokens[p])}" + (" ✦" if p >= generated_from else ""),
            help="The graph explains the prediction made at this token. ✦ marks generated tokens: each one's graph is "
            "that of a prompt ending there (attention is causal). Clicking a token's ▲ under the graph chooses it too.",
            **bound("token"),
        )
        st.slider("Contribution threshold", 0.0, THRESHOLD_MAX, step=0.005, format="%.3f", **bound("threshold"))
        st.toggle("Final norm before unembedding", help="Apply the model's final norm in the logit lens.", **bound("norm"))
        with st.expander("Copy link to this view"):
            show_link(page)
    if require_analysis:  # the Dataset page runs its prompts with the sidebar's model, whatever the last run's
        not_run_note(config, analysis)
    edits = tuple(Edit.parse(e) for e in ss.get("edits", []))
    edits_chip(edits)
    return View(config, analysis, ss.token, ss.threshold, ss.norm, ss.node, ss.edge, ss.get("head"), ss.get("neuron"), edits)


def show_warnings() -> None:
    """The messages that the sidebar's steps left (a link's bad values, a chat template not applied, an early end of
    generation), once, as typed: they quote what the user typed or linked."""
    for message in ss.pop("_warnings", []):
        st.warning(plain(message))


def not_run_note(config: AppConfig, analysis: Analysis) -> None:
    """On every page, while the sidebar's prompt, chat template or model is not the one analysed (an edit not yet run,
    or a prompt refused as too long): which run the page shows. Run's own message is gone once the user changes page."""
    box, (model, prompt) = sidebar_input(), ss.run
    if box == ss.get("_run_box", box) and ss.get("model", model) == model:
        return
    shown = excerpt(ss.get("_run_box", (prompt,))[0], NOTE_PROMPT_CHARS)  # the user's words (not a chat template's)
    if len(box[0]) > config.max_prompt_chars:
        why = f"The sidebar's prompt has {len(box[0]):,} characters, over this server's {config.max_prompt_chars:,}: "
        why += "shorten it and press **Run**."
    else:
        why = "The sidebar's prompt, chat template or model has changed since: press **Run** to analyse it."
    st.info(f"This page shows the last run: {model}, {len(analysis.tokens):,} tokens, “{shown}”. {why}", icon=":material/history:")


def edits_chip(edits: tuple[Edit, ...]) -> None:
    """A visible reminder on every page that the model is being edited, with one click to clear."""
    if not edits:
        return
    n = len(edits)
    text = f"✎ {n} edit{'s' if n > 1 else ''} active: " + ", ".join(describe_edit(e) for e in edits)
    with st.container(horizontal=True, vertical_alignment="center", key="edits_chip"):
        st.markdown(f":orange-badge[{text}]")
        st.button("Clear edits", key="chip_clear", type="tertiary", icon=":material/close:", on_click=clear_edits)


def _current_analysis(config: AppConfig) -> Analysis | None:
    if not ss.get("run"):
        st.info("Choose a model and a prompt in the sidebar, then press **Run**.")
        return None
    return fetch_analysis(config, *ss.run)

