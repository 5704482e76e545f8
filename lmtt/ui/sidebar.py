"""The sidebar every page draws first: navigation, controls, and the analysis to show."""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from lmtt.analysis import Analysis
from lmtt.config import AppConfig
from lmtt.edits import Edit
from lmtt.figures import visible
from lmtt.ui.questions import chat_wrapped
from lmtt.ui.runs import fetch_analysis, generate_continuation, read_config
from lmtt.ui.state import PAGES, THRESHOLD_MAX, View, bound, restore_from_url, select_node, ss, validate_against, write_url


def _use_sample() -> None:
    if ss._w_sample:
        ss.prompt = ss._w_sample


def _navigation() -> None:
    for path, title in PAGES:
        st.page_link(path, label=title)


def sidebar(require_analysis: bool = True) -> View | None:
    """Navigation, controls and the analysis; None (with a message shown) when there is nothing to show.

    Pages that work without an analysis (Dataset) pass require_analysis=False: no empty-state message.
    """
    with st.sidebar:
        _navigation()
        st.divider()
    config = read_config()
    if config is None:
        return None
    restore_from_url(config)
    with st.sidebar:
        st.selectbox("Model", list(config.models), **bound("model"))
        if config.sample_prompts:
            st.selectbox("Sample prompts", [""] + list(config.sample_prompts), key="_w_sample", on_change=_use_sample)
        st.text_area("Prompt", max_chars=config.max_prompt_chars, height=100, **bound("prompt"))
        chat = st.toggle("Chat template", key="chat", help="Wrap the prompt in the tokenizer's chat template (instruct models)")
        if st.button("Run", type="primary", width="stretch"):
            ss.run = (ss.model, chat_wrapped(config, ss.model, ss.prompt) if chat else ss.prompt)
            ss.token = None
            select_node(None)
        with st.expander("Generate a continuation"):
            n_tokens = st.number_input("Tokens to generate", 1, 64, 8, key="gen_n")
            seed = st.number_input("Seed (0: greedy)", 0, 2**31 - 1, 0, key="gen_seed")
            generate = st.button("Generate and analyse", key="gen_go", width="stretch")
    if generate:
        generate_continuation(config, int(n_tokens), int(seed) or None)
    for message in ss.pop("_warnings", []):
        st.warning(message)
    analysis = _current_analysis(config) if (require_analysis or ss.get("run")) else None
    if analysis is None:
        write_url()
        return None
    validate_against(analysis)
    if (report := analysis.runner.check_report) is not None and not report.passed:
        failed = "; ".join(f"{r.name}: relative error {r.error:.2e} > {r.tolerance:.0e} ({r.what})" for r in report.failures)
        st.error(f"**The decomposition does not add up for {report.model}**, so its contributions cannot be trusted. Failed: {failed}")
    for message in ss.pop("_warnings", []):
        st.warning(message)
    with st.sidebar:
        tokens = analysis.tokens
        generated_from = ss.generated[1] if ss.get("generated") and ss.generated[0] == ss.run[1] else len(tokens)
        st.selectbox(
            "Token to explain",
            range(len(tokens)),
            format_func=lambda p: f"{p}: {visible(tokens[p])}" + (" ✦" if p >= generated_from else ""),
            help="✦ marks generated tokens: each one's graph is that of a prompt ending there (attention is causal).",
            **bound("token"),
        )
        st.slider("Contribution threshold", 0.0, THRESHOLD_MAX, step=0.005, format="%.3f", **bound("threshold"))
        st.toggle("Final norm before unembedding", help="Apply the model's final norm in the logit lens.", **bound("norm"))
        write_url()
        with st.expander("Copy link to this view"):
            base = st.context.url or ""
            st.code(f"{base}?{urlencode(st.query_params.to_dict())}", language=None)
    edits = tuple(Edit.parse(e) for e in ss.get("edits", []))
    return View(config, analysis, ss.token, ss.threshold, ss.norm, ss.node, ss.edge, ss.get("head"), ss.get("neuron"), edits)


def _current_analysis(config: AppConfig) -> Analysis | None:
    if not ss.get("run"):
        st.info("Choose a model and a prompt in the sidebar, then press **Run**.")
        return None
    return fetch_analysis(config, *ss.run)
