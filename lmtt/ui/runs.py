"""Running things for the app: config, the cached model and analyses, limits, logging, generation."""

from __future__ import annotations

import logging
import math
import sys
import time
import uuid
from collections.abc import Callable

import streamlit as st

import lmtt
from lmtt.analysis import Analysis, InterventionResult
from lmtt.engine import attribution
from lmtt.engine.chat import chat_prompt
from lmtt.engine.config import AppConfig, ConfigError, ModelEntry
from lmtt.engine.loading import LoadError
from lmtt.engine.runner import ModelRunner, PromptError, check_prompt
from lmtt.ui.cache import BoundedCache
from lmtt.ui.limits import AnalysisGate, RateLimiter
from lmtt.ui.markdown import plain
from lmtt.ui.progress import Gate
from lmtt.ui.state import View, ss, start_run

log = logging.getLogger("lmtt.app")
if not log.handlers:  # one line per analysis on the server's stderr
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)


def read_config() -> AppConfig | None:
    """config.yaml (`-- --config PATH`, $LMTT_CONFIG, else the repository's: lmtt.engine.config.find_config), or None after showing why."""
    try:
        return lmtt.load_config(None, sys.argv)
    except ConfigError as e:
        st.error(f"{plain(str(e))}\n\nFix config.yaml and reload the page.")
        return None


@st.cache_resource(show_spinner=False)
def cached_runner(entry: ModelEntry) -> ModelRunner:
    """One runner per model for the whole process, shared by every session.

    The attribution kernel is compiled here too, so the first analysis is not the slow one.
    """
    runner = lmtt.load_model(entry)
    attribution.warm_up_for(runner)
    return runner


# evicted analyses a full collection waits for (their cycles hold them till then): a long prompt's go at once, the
# small prompts of a dataset run together (a collection takes 0.1-0.5 s here)
COLLECT_AFTER_BYTES = 128 * 2**20


def analysis_cache(config: AppConfig) -> BoundedCache[Analysis]:
    """Analyses per (model, prompt), bounded in entries, age and memory, shared read-only between sessions."""
    return _analysis_cache(config.analysis_cache_entries, config.analysis_cache_ttl_s, config.analysis_cache_mb)


@st.cache_resource(show_spinner=False)
def _analysis_cache(max_entries: int, ttl_s: float | None, max_mb: int) -> BoundedCache[Analysis]:
    return BoundedCache(
        max_entries, ttl_s, max_bytes=max_mb * 2**20, size_of=lambda a: a.nbytes, collect_after_bytes=COLLECT_AFTER_BYTES
    )


@st.cache_resource(show_spinner=False)
def analysis_gate(limit: int) -> AnalysisGate:
    """At most `limit` analyses at once in this process; the others queue."""
    return AnalysisGate(limit)


def chat_wrapped(config: AppConfig, model: str, prompt: str) -> str:
    """The prompt in the model's chat template; the prompt itself (and an error shown) when that is impossible."""
    try:
        return chat_prompt(cached_runner(config.models[model]), prompt)
    except (PromptError, LoadError) as e:
        st.session_state.setdefault("_warnings", []).append(f"Chat template not applied: {e}")
        return prompt


def generate_continuation(config: AppConfig, n_tokens: int, seed: int | None) -> None:
    """Extend the prompt with generated tokens and make the result the analysed prompt (one trace covers every token).
    With the chat template on, the model continues the prompt's chat form (its reply), and the box then holds that
    form and the reply, with the toggle off: Run would otherwise wrap the template's text in it again."""
    model, prompt = ss.model, ss.prompt
    if ss.get("chat"):
        prompt = chat_wrapped(config, model, prompt)  # the text itself where the template cannot apply (it says why)
    wrapped = prompt != ss.prompt
    try:
        check_prompt(prompt, config.max_prompt_chars)
        runner = cached_runner(config.models[model])
        with st.spinner("Generating…"), analysis_gate(config.max_concurrent_analyses).slot():
            full = runner.generate(prompt, n_tokens, seed)
    except (PromptError, LoadError) as e:
        st.error(plain(f"{e} (counted with the chat template's text)" if wrapped else str(e)))
        return
    special = getattr(runner.tokenizer, "all_special_tokens", [])
    text = stop_at_special(full, prompt, special)
    if text == prompt:
        st.info("The model ended the text right away (its first token was end-of-text): nothing to add.")
        return
    ss.prompt, ss.chat = text, ss.get("chat", False) and not wrapped
    start_run(model, text, generated_from=len(runner.tokenize(prompt)))
    if text != full:  # shown after the rerun, with the sidebar's other messages
        made = len(runner.tokenize(text)) - ss.generated_from
        end = next((s for s in special if s and full.startswith(s, len(text))), "end-of-text")
        ss.setdefault("_warnings", []).append(
            f"Generation stopped after {made} of {n_tokens} tokens: the model wrote its end token ({end}), which never "
            "enters the prompt."
        )
    st.rerun()  # redraw the sidebar with the extended prompt


def stop_at_special(text: str, prompt: str, special: list[str]) -> str:
    """The generated text cut at the first special token (end-of-text): it never goes into the prompt box."""
    generated = text[len(prompt) :]
    cuts = [generated.find(s) for s in special if s and s in generated]
    return prompt + (generated[: min(cuts)] if cuts else generated)


def fetch_analysis(config: AppConfig, model: str, prompt: str) -> Analysis | None:
    """The cached analysis of a prompt, computed (with progress) on a miss; None after showing why not."""
    if model not in config.models:
        st.error(f"Unknown model {model!r}: config.yaml lists {', '.join(config.models)}.")
        return None
    entry = config.models[model]
    bar = st.empty()
    try:
        check_prompt(prompt, config.max_prompt_chars)
        cache = analysis_cache(config)
        analysis = cache.get((entry, prompt))
        if analysis is None:
            analysis = _run_analysis(config, entry, prompt, cache, bar)
        return analysis
    except (PromptError, LoadError) as e:
        st.error(plain(str(e)))
    except Exception as e:  # noqa: BLE001 - the app must keep serving; show what failed, not a traceback page
        log.exception("analysis failed")
        st.error(plain(f"The analysis failed: {type(e).__name__}: {e}"))
    finally:
        bar.empty()
    return None


def _run_analysis(config: AppConfig, entry: ModelEntry, prompt: str, cache: BoundedCache, bar) -> Analysis | None:
    """A cache miss: model load, then the analysis under the rate limit and the gate."""
    progress = bar.progress(0.0, text=f"Loading model {entry.name}… (the first load converts its weights, about 15 s)")
    runner = cached_runner(entry)

    ids = runner.tokenize(prompt)  # once: the cache's size estimate and the analysis read the same ids

    def compute() -> Analysis:
        return lmtt.analyze(runner, ids, max_tokens=config.max_prompt_tokens, on_progress=throttled(progress))

    return _limited(config, cache, (entry, prompt), compute, progress, entry.name, prompt, len(ids))


def throttled(bar, every_s: float = 0.5) -> Callable[[float, str], None]:
    """A progress bar's update at most every `every_s` (progress.Gate: 30 layers of a 500-token prompt sent 31 in 5 s)."""
    due = Gate(every_s)

    def update(fraction: float, text: str) -> None:
        if due():
            bar.progress(min(fraction, 1.0), text=text)

    return update


def _limited(config: AppConfig, cache: BoundedCache, key, compute, progress, model: str, prompt: str, tokens: int):
    """Run `compute` for a cache miss of a `tokens`-token analysis: rate limit per session, a place in the queue, one log
    line."""
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
        result, hit = cache.get_or_compute(key, compute, units=tokens)
    session = ss.setdefault("_session_id", uuid.uuid4().hex[:8])
    text = "" if config.demo_mode else f" prompt={prompt[:60]!r}"
    edits = f" edits={len(key[2])}" if len(key) > 2 else ""
    log.info(
        "analysis model=%s tokens=%d seconds=%.3f cache=%s cache_mb=%.0f session=%s%s%s",
        model,
        len(result.tokens),
        time.perf_counter() - start,
        "hit" if hit else "miss",
        cache.nbytes / 2**20,  # what the analysis cache holds now: the soak subtracts it from the RSS
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
    cache = analysis_cache(config)
    key = (entry, prompt, view.edits)
    edited = cache.get(key)
    if edited is None:
        bar = st.empty()
        try:
            progress = bar.progress(0.0, text="Running the model with the edits…")
            edited = _limited(
                config, cache, key, lambda: view.analysis.with_edits(view.edits), progress, model, prompt, len(view.analysis.tokens)
            )
        finally:
            bar.empty()
    return None if edited is None else view.analysis.compare(edited, view.token)


def dataset_limit(config: AppConfig) -> int:
    """How many prompts one Dataset batch may have (a public demo gets fewer)."""
    return 20 if config.demo_mode else 200


def dataset_neuron(config: AppConfig, model: str, prompts: list[str], layer: int, neuron: int) -> list:
    """(tokens, NeuronProfile) of one GLU neuron in each prompt, from the analyses the Dataset run cached."""
    out = []
    for prompt in prompts:
        analysis = _dataset_analysis(config, config.models[model], prompt)
        out.append((analysis.tokens, analysis.neuron_profile(layer, neuron)))
    return out


def _dataset_analysis(config: AppConfig, entry, prompt: str):
    """One Dataset prompt's analysis, cached like the app's."""
    runner = cached_runner(entry)
    ids = runner.tokenize(prompt)  # once: the cache's size estimate and the analysis read the same ids
    with analysis_gate(config.max_concurrent_analyses).slot():
        analysis, _ = analysis_cache(config).get_or_compute(
            (entry, prompt), lambda: lmtt.analyze(runner, ids, max_tokens=config.max_prompt_tokens), units=len(ids)
        )
    return analysis


def run_dataset(
    config: AppConfig, model: str, prompts: list[str], summaries: list[dict], errors: list[str], on_progress: Callable[[int, int], None]
) -> None:
    """Summarise every prompt for the Dataset page (each analysis cached like the app's) into `summaries`, and what
    failed into `errors`, as they finish: a cancelled run keeps the prompts already done."""
    from lmtt.questions.batch import summarize

    entry = config.models[model]
    for i, prompt in enumerate(prompts):
        on_progress(i, len(prompts))
        try:
            check_prompt(prompt, config.max_prompt_chars)
            summaries.append(summarize(_dataset_analysis(config, entry, prompt), prompt))
        except PromptError as e:
            errors.append(f"line {i + 1}: {e}")
    on_progress(len(prompts), len(prompts))
