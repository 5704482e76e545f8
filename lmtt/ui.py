"""Streamlit widgets shared by every page: navigation, sidebar controls, caches and URL state.

Pages call `sidebar()` first. It draws the navigation (the built-in one is hidden
in .streamlit/config.toml so deep links work on a fresh server), restores the
view from `st.query_params` once per session, runs or fetches the cached
analysis, and writes the view back to the URL. Threshold, token and selection
changes only read the cached Analysis; they never run the model.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

import lmtt
from lmtt import figures
from lmtt.analysis import Analysis, InterventionResult
from lmtt.attribution import small_coords_correction
from lmtt.cache import BoundedCache
from lmtt.config import AppConfig, ConfigError, ModelEntry
from lmtt.edits import MODES, Edit
from lmtt.export import export_files
from lmtt.figures import describe_node, visible
from lmtt.graph import parse_node
from lmtt.interpret import Projection, TokenScore
from lmtt.limits import AnalysisGate, RateLimiter
from lmtt.loading import LoadError
from lmtt.runner import ModelRunner, PromptError, check_prompt

PAGES = (
    ("app.py", "Graph"),
    ("pages/contributions.py", "Contributions"),
    ("pages/interpretation.py", "Interpretation"),
    ("pages/compare.py", "Compare"),
    ("pages/dataset.py", "Dataset"),
)
THRESHOLD_MAX = 0.5
ss = st.session_state
log = logging.getLogger("lmtt.app")
if not log.handlers:  # one line per analysis on the server's stderr
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)


@dataclass(frozen=True)
class View:
    """What a page shows: the analysis and the user's choices on it."""

    config: AppConfig
    analysis: Analysis
    token: int  # position of the output token to explain
    threshold: float
    final_norm: bool
    node: str | None
    edge: str | None
    head: tuple[int, int] | None  # (layer, head)
    neuron: tuple[int, int] | None  # (layer, neuron)
    edits: tuple[Edit, ...] = ()  # interventions to compare against the plain run

    def focus(self) -> tuple[str, int, int]:
        """(kind, layer, position) of the selected node, else the output token's top node."""
        if self.node:
            return parse_node(self.node)
        return "ffn", self.analysis.n_layers - 1, self.token


def read_config() -> AppConfig | None:
    """config.yaml ($LMTT_CONFIG, else the repository's), or None after showing why it is broken."""
    try:
        return lmtt.load_config(os.environ.get("LMTT_CONFIG") or None)
    except ConfigError as e:
        st.error(f"{e}\n\nFix config.yaml and reload the page.")
        return None


@st.cache_resource(show_spinner=False)
def cached_runner(entry: ModelEntry) -> ModelRunner:
    """One runner per model for the whole process, shared by every session.

    The attribution kernel is compiled here too, so the first analysis is not the slow one.
    """
    runner = lmtt.load_model(entry)
    small_coords_correction.warm_up(runner.layer_weights[0].w_out.shape[-1])
    return runner


@st.cache_resource(show_spinner=False)
def analysis_cache(max_entries: int, ttl_s: float | None) -> BoundedCache[Analysis]:
    """Analyses per (model, prompt), bounded in entries and age, shared read-only between sessions."""
    return BoundedCache(max_entries, ttl_s)


@st.cache_resource(show_spinner=False)
def analysis_gate(limit: int) -> AnalysisGate:
    """At most `limit` analyses at once in this process; the others queue."""
    return AnalysisGate(limit)


# ---- state -----------------------------------------------------------------


def _parse_pair(raw: str | None, name: str, warnings: list[str]) -> tuple[int, int] | None:
    if not raw:
        return None
    m = re.fullmatch(r"(\d{1,4})\.(\d{1,6})", raw)
    if not m:
        warnings.append(f"Ignored {name}={raw!r} in the URL: expected LAYER.INDEX")
        return None
    return int(m.group(1)), int(m.group(2))


def _restore_from_url(config: AppConfig) -> None:
    """Once per session: the view the URL describes, with every bad value named and dropped."""
    if ss.get("_restored"):
        return
    qp, warnings = st.query_params, []
    ss._restored = True
    model = qp.get("model", config.default_model)
    if model not in config.models:
        warnings.append(f"Unknown model {model!r} in the URL; using {config.default_model!r}.")
        model = config.default_model
    ss.model = model
    prompt = qp.get("prompt")
    ss.prompt = prompt if prompt is not None else (config.sample_prompts[0] if config.sample_prompts else "")
    ss.run = (model, prompt) if prompt is not None else None
    ss.token = None
    if (raw := qp.get("token")) is not None:
        try:
            ss.token = int(raw)
        except ValueError:
            warnings.append(f"Ignored token={raw!r} in the URL: not an integer.")
    ss.threshold = config.default_threshold
    if (raw := qp.get("threshold")) is not None:
        try:
            value = float(raw)
            if not math.isfinite(value) or not 0 <= value <= THRESHOLD_MAX:
                raise ValueError
            ss.threshold = value
        except ValueError:
            warnings.append(f"Ignored threshold={raw!r} in the URL: expected a number from 0 to {THRESHOLD_MAX}.")
    ss.norm = qp.get("norm", "1") != "0"
    ss.compare = qp.get("compare", "")
    ss.dataset = qp.get("dataset", "")
    ss.node, ss.edge = qp.get("node"), qp.get("edge")
    ss.edits = []
    for raw in qp.get_all("edit"):
        try:
            ss.edits.append(str(Edit.parse(raw)))
        except ValueError as e:
            warnings.append(f"Ignored edit={raw!r} in the URL: {e}")
    ss.head = _parse_pair(qp.get("head"), "head", warnings)
    ss.neuron = _parse_pair(qp.get("neuron"), "neuron", warnings)
    ss._warnings = warnings


def _validate_against(analysis: Analysis) -> None:
    """Drop selections that do not fit this analysis (a stale URL, another prompt)."""
    warnings = ss.setdefault("_warnings", [])
    t = len(analysis.tokens)
    if ss.token is None:
        ss.token = t - 1
    elif not -t <= ss.token < t:
        warnings.append(f"Token {ss.token} is out of range for {t} tokens; showing the last token.")
        ss.token = t - 1
    ss.token %= t
    if ss.node:
        try:
            analysis.state(ss.node)
        except (ValueError, IndexError) as e:
            warnings.append(f"Ignored the selected node: {e}")
            ss.node = None
    if ss.edge and not _edge_fits(ss.edge, analysis):
        warnings.append("Ignored the selected edge: it does not fit this prompt.")
        ss.edge = None
    kept = []
    for raw in ss.get("edits", []):
        try:
            analysis.runner.check_edit(Edit.parse(raw))
            kept.append(raw)
        except (ValueError, IndexError) as e:
            warnings.append(f"Ignored the edit {raw}: {e}")
    ss.edits = kept
    for name, limit in (("head", analysis.n_heads), ("neuron", analysis.runner.layer_weights[0].w_down.shape[0])):
        pair = ss.get(name)
        if pair and not (0 <= pair[0] < analysis.n_layers and 0 <= pair[1] < limit):
            warnings.append(f"Ignored {name} {pair[0]}.{pair[1]}: out of range for this model.")
            ss[name] = None


def parse_edge(edge: str) -> tuple[str, int, int, int]:
    """(kind, target level, source position, target position) from the graph's edge handle."""
    _, kind, level, src, dst = edge.split("|")
    return kind, int(level), int(src), int(dst)


def _edge_fits(edge: str, analysis: Analysis) -> bool:
    try:
        kind, level, src, dst = parse_edge(edge)
    except ValueError:
        return False
    t = len(analysis.tokens)
    return kind in ("attention", "residual", "ffn") and 1 <= level <= 2 * analysis.n_layers and 0 <= src <= dst < t


def _write_url() -> None:
    params = {"model": ss.model, "threshold": f"{ss.threshold:g}", "norm": "1" if ss.norm else "0"}
    if ss.run:
        params["prompt"] = ss.run[1]
        if ss.token is not None:
            params["token"] = str(ss.token)
    for name in ("node", "edge", "compare", "dataset"):
        if ss.get(name):
            params[name] = ss[name]
    for name in ("head", "neuron"):
        if ss.get(name):
            params[name] = f"{ss[name][0]}.{ss[name][1]}"
    items = list(params.items()) + [("edit", e) for e in ss.get("edits", [])]
    current = [(k, v) for k in st.query_params for v in st.query_params.get_all(k)]
    if sorted(current) != sorted(items):
        st.query_params.from_dict({k: [v for kk, v in items if kk == k] for k in dict(items)})


def select_node(node: str | None) -> None:
    ss.node, ss.edge = node, None


def select_edge(edge: str) -> None:
    ss.edge = edge
    kind, level, _src, dst = parse_edge(edge)
    layer = (level - 1) // 2
    ss.node = f"{'attn' if level % 2 else 'ffn'}:{layer}:{dst}"


def add_edit(edit: Edit) -> None:
    if str(edit) not in ss.setdefault("edits", []):
        ss.edits = [*ss.edits, str(edit)]


def clear_edits() -> None:
    ss.edits = []


def select_head(layer: int, head: int) -> None:
    ss.head = (layer, head)


def select_neuron(layer: int, neuron: int) -> None:
    ss.neuron = (layer, neuron)


def focus_layer() -> int:
    """The layer of the selected node (0 for an embedding)."""
    return max(parse_node(ss.node)[1], 0)


def chart_click(key: str) -> dict | None:
    """The newest click on a plotly chart (on_select="rerun"), once: None when nothing new."""
    state = ss.get(key)
    points = list(state["selection"]["points"]) if state and state.get("selection") else []
    signature = repr(points)
    if not points or ss.get(f"_seen_{key}") == signature:
        return None
    ss[f"_seen_{key}"] = signature
    return dict(points[0])


# ---- widgets -----------------------------------------------------------------


def bound(key: str) -> dict:
    """Widget kwargs that keep `key` in session state across pages (widget state itself is per page)."""
    widget_key = f"_w_{key}"
    ss[widget_key] = ss.setdefault(key, "")

    def copy() -> None:
        ss[key] = ss[widget_key]

    return {"key": widget_key, "on_change": copy}


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
    _restore_from_url(config)
    with st.sidebar:
        st.selectbox("Model", list(config.models), **bound("model"))
        if config.sample_prompts:
            st.selectbox("Sample prompts", [""] + list(config.sample_prompts), key="_w_sample", on_change=_use_sample)
        st.text_area("Prompt", max_chars=config.max_prompt_chars, height=100, **bound("prompt"))
        if st.button("Run", type="primary", width="stretch"):
            ss.run = (ss.model, ss.prompt)
            ss.token = None
            select_node(None)
        with st.expander("Generate a continuation"):
            n_tokens = st.number_input("Tokens to generate", 1, 64, 8, key="gen_n")
            seed = st.number_input("Seed (0: greedy)", 0, 2**31 - 1, 0, key="gen_seed")
            generate = st.button("Generate and analyse", key="gen_go", width="stretch")
    if generate:
        _generate(config, int(n_tokens), int(seed) or None)
    for message in ss.pop("_warnings", []):
        st.warning(message)
    analysis = _current_analysis(config) if (require_analysis or ss.get("run")) else None
    if analysis is None:
        _write_url()
        return None
    _validate_against(analysis)
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
        _write_url()
        with st.expander("Copy link to this view"):
            base = st.context.url or ""
            st.code(f"{base}?{urlencode(st.query_params.to_dict())}", language=None)
    edits = tuple(Edit.parse(e) for e in ss.get("edits", []))
    return View(config, analysis, ss.token, ss.threshold, ss.norm, ss.node, ss.edge, ss.get("head"), ss.get("neuron"), edits)


def _generate(config: AppConfig, n_tokens: int, seed: int | None) -> None:
    """Extend the prompt with generated tokens and make the result the analysed prompt (one trace covers every token)."""
    model, prompt = ss.model, ss.prompt
    try:
        check_prompt(prompt, config.max_prompt_chars)
        runner = cached_runner(config.models[model])
        with st.spinner("Generating…"), analysis_gate(config.max_concurrent_analyses).slot():
            text = runner.generate(prompt, n_tokens, seed)
    except (PromptError, LoadError) as e:
        st.error(str(e))
        return
    ss.generated = (text, len(runner.tokenize(prompt)))
    ss.prompt = text
    ss.run, ss.token = (model, text), None
    select_node(None)


def _current_analysis(config: AppConfig) -> Analysis | None:
    if not ss.get("run"):
        st.info("Choose a model and a prompt in the sidebar, then press **Run**.")
        return None
    return fetch_analysis(config, *ss.run)


def fetch_analysis(config: AppConfig, model: str, prompt: str) -> Analysis | None:
    """The cached analysis of a prompt, computed (with progress) on a miss; None after showing why not."""
    if model not in config.models:
        st.error(f"Unknown model {model!r}: config.yaml lists {', '.join(config.models)}.")
        return None
    entry = config.models[model]
    bar = st.empty()
    try:
        check_prompt(prompt, config.max_prompt_chars)
        cache = analysis_cache(config.analysis_cache_entries, config.analysis_cache_ttl_s)
        analysis = cache.get((entry, prompt))
        if analysis is None:
            analysis = _run_analysis(config, entry, prompt, cache, bar)
        return analysis
    except (PromptError, LoadError) as e:
        st.error(str(e))
    except Exception as e:  # noqa: BLE001 - the app must keep serving; show what failed, not a traceback page
        log.exception("analysis failed")
        st.error(f"The analysis failed: {type(e).__name__}: {e}")
    finally:
        bar.empty()
    return None


def _run_analysis(config: AppConfig, entry: ModelEntry, prompt: str, cache: BoundedCache, bar) -> Analysis | None:
    """A cache miss: model load, then the analysis under the rate limit and the gate."""
    progress = bar.progress(0.0, text=f"Loading model {entry.name}… (the first load converts its weights, about 15 s)")
    runner = cached_runner(entry)

    def compute() -> Analysis:
        return lmtt.analyze(
            runner, prompt, max_tokens=config.max_prompt_tokens, on_progress=lambda f, msg: progress.progress(min(f, 1.0), text=msg)
        )

    return _limited(config, cache, (entry, prompt), compute, progress, entry.name, prompt)


def _limited(config: AppConfig, cache: BoundedCache, key, compute, progress, model: str, prompt: str):
    """Run `compute` for a cache miss: rate limit per session, a place in the queue, one log line."""
    if config.rate_limit_per_minute:
        limiter = ss.setdefault("_limiter", RateLimiter(config.rate_limit_per_minute))
        wait = limiter.try_acquire()
        if wait:
            st.warning(f"Rate limit: at most {config.rate_limit_per_minute} new analyses per minute. Try again in {math.ceil(wait)} s.")
            return None
    progress.progress(0.0, text="Waiting for a free slot…")

    def queued(position: int) -> None:
        progress.progress(0.0, text=f"The server is busy: you are number {position} in the queue.")

    start = time.perf_counter()
    with analysis_gate(config.max_concurrent_analyses).slot(on_wait=queued):
        result, hit = cache.get_or_compute(key, compute)
    session = ss.setdefault("_session_id", uuid.uuid4().hex[:8])
    text = "" if config.demo_mode else f" prompt={prompt[:60]!r}"
    edits = f" edits={len(key[2])}" if len(key) > 2 else ""
    log.info(
        "analysis model=%s tokens=%d seconds=%.3f cache=%s session=%s%s%s",
        model,
        len(result.tokens),
        time.perf_counter() - start,
        "hit" if hit else "miss",
        session,
        edits,
        text,
    )
    return result


def intervention(view: View) -> InterventionResult | None:
    """The view's edits against the plain run. The edited analysis is cached like the plain one,
    so a token or threshold change compares again without running the model."""
    if not view.edits:
        return None
    config, (model, prompt) = view.config, ss.run
    entry = config.models[model]
    cache = analysis_cache(config.analysis_cache_entries, config.analysis_cache_ttl_s)
    key = (entry, prompt, view.edits)
    edited = cache.get(key)
    if edited is None:
        bar = st.empty()
        try:
            progress = bar.progress(0.0, text="Running the model with the edits…")
            edited = _limited(config, cache, key, lambda: view.analysis.with_edits(view.edits), progress, model, prompt)
        finally:
            bar.empty()
    return None if edited is None else view.analysis.compare(edited, view.token)


# ---- tables ---------------------------------------------------------------------


def token_table(scores: list[TokenScore], column: str) -> pd.DataFrame:
    """Tokens as text cells (a dataframe never renders markup), whitespace made visible."""
    return pd.DataFrame(
        {"token": [visible(s.token) for s in scores], "id": [s.token_id for s in scores], column: [s.score for s in scores]}
    )


def projection_tables(proj: Projection, stacked: bool = False) -> None:
    """Promoted and suppressed tokens side by side (or one above the other in a narrow panel)."""
    left, right = (st.container(), st.container()) if stacked else st.columns(2)
    left.caption("Promoted")
    left.dataframe(token_table(proj.promoted, "logit"), hide_index=True, width="stretch")
    right.caption("Suppressed")
    right.dataframe(token_table(proj.suppressed, "logit"), hide_index=True, width="stretch")


def neuron_table(nc) -> pd.DataFrame:
    return pd.DataFrame({"neuron": nc.neurons.numpy(), "contribution": nc.contributions.numpy(), "activation": nc.activations.numpy()})


def token_md(token: str) -> str:
    """A token for Markdown-rendered text (captions, headers): visible whitespace, nothing interpreted."""
    return plain(visible(token))


def plain(text: str) -> str:
    """Text safe inside Markdown: Markdown, LaTeX ($) and HTML characters are escaped."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~$<>&:])", r"\\\1", text)


# ---- the selection panel (Graph page) ----------------------------------------------


def selection_panel(view: View) -> None:
    """For a node: logit lens and what its block promoted; for an attention edge: its heads."""
    a = view.analysis
    if view.edge:
        _edge_panel(view)
    elif view.node:
        st.subheader("Node")
        st.text(describe_node(a, view.node))
    else:
        st.info("Click a node to see its logit lens, or an edge handle to see its heads.")
        return
    node = view.node
    st.markdown("**Logit lens**" + ("" if view.final_norm else " (no final norm)"))
    st.dataframe(token_table(a.logit_lens(node, 10, final_norm=view.final_norm), "prob"), hide_index=True, width="stretch")
    kind = parse_node(node)[0]
    st.markdown("**What its block wrote**" if kind != "embedding" else "**The embedding itself**")
    projection_tables(a.update_tokens(node, 8), stacked=True)


def _edge_panel(view: View) -> None:
    a = view.analysis
    kind, level, src, dst = parse_edge(view.edge)
    layer = (level - 1) // 2
    st.subheader(f"{kind.capitalize()} edge")
    st.text(f"layer {layer}: {src} {visible(a.tokens[src])} → {dst} {visible(a.tokens[dst])}")
    if kind == "attention":
        per_head = a.head_contributions(layer, dst).per_source[:, src].numpy()
        st.metric("Weight (sum over heads)", f"{per_head.sum():.3f}")
        st.plotly_chart(figures.edge_heads_figure(per_head), key="edge_heads", width="stretch")
    else:
        weights = a.contributions.ffn if kind == "ffn" else (a.contributions.attn_resid if level % 2 else a.contributions.ffn_resid)
        st.metric("Weight", f"{float(weights[layer, dst]):.3f}")
    st.text(f"Into: {describe_node(a, view.node)}")


def download_buttons(analysis: Analysis, token: int, threshold: float) -> None:
    """The current view as files: graph (JSON, GraphML), contributions and predictions (CSV)."""
    with st.expander("Download this view"):
        mime = {"json": "application/json", "graphml": "application/xml", "csv": "text/csv"}
        for name, data in export_files(analysis, token, threshold).items():
            st.download_button(name, data, file_name=name, mime=mime[name.rsplit(".", 1)[1]], key=f"download_{name}", width="stretch")


def edit_controls(kind: str, layer: int, index: int, key: str) -> None:
    """Buttons that add an edit of this head or neuron to the interventions."""
    c1, c2, c3 = st.columns([2, 1, 1])
    mode = c1.selectbox("Intervention", MODES, key=f"{key}_mode", label_visibility="collapsed")
    factor = c2.number_input("factor", value=0.5, step=0.1, key=f"{key}_factor", label_visibility="collapsed", disabled=mode != "scale")
    if c3.button(f"Add {kind} {layer}.{index}", key=f"{key}_add", width="stretch"):
        add_edit(Edit(kind, layer, index, mode, factor if mode == "scale" else 0.0))
        st.rerun()


def intervention_panel(view: View) -> None:
    """Edits, before/after predictions and the two graphs side by side."""
    if not view.edits:
        st.info("No interventions yet: add a head or neuron edit (Head and Neuron tabs, or the Contributions page).")
        return
    st.text("Edits: " + ", ".join(str(e) for e in view.edits))
    if st.button("Clear the edits", key="clear_edits"):
        clear_edits()
        st.rerun()
    result = intervention(view)
    if result is None:
        return
    target = visible(result.target.token)
    c1, c2 = st.columns(2)
    c1.metric(f"logit of {target}", f"{result.logit_after:.3f}", f"{result.logit_after - result.logit_before:+.3f}")
    c2.metric(f"probability of {target}", f"{result.prob_after:.3f}", f"{result.prob_after - result.prob_before:+.3f}")
    left, right = st.columns(2)
    left.caption("Before")
    left.dataframe(token_table(result.before, "prob"), hide_index=True, width="stretch")
    right.caption("After")
    right.dataframe(token_table(result.after, "prob"), hide_index=True, width="stretch")
    left, right = st.columns(2)
    left.caption("Graph before")
    left.plotly_chart(
        figures.graph_figure(view.analysis, view.analysis.paths_to(result.token, view.threshold)), key="graph_before", width="stretch"
    )
    right.caption("Graph with the edits")
    right.plotly_chart(
        figures.graph_figure(result.analysis, result.analysis.paths_to(result.token, view.threshold)), key="graph_after", width="stretch"
    )


@st.cache_data(show_spinner=False, ttl=60, max_entries=4)
def dataset_summaries(folder: str) -> list[dict]:
    """The per-prompt summaries of a batch directory (re-read at most once a minute)."""
    from lmtt.batch import load_summaries

    try:
        return load_summaries(folder)
    except (OSError, ValueError):
        return []


def open_prompt(prompt: str) -> None:
    """Make `prompt` the analysed prompt (used by the Dataset page's links)."""
    ss.prompt = prompt
    ss.run, ss.token = (ss.model, prompt), None
    select_node(None)
