"""A shared server: concurrent analyses on one model, hostile input in the UI and the CLI, hosting config."""

from __future__ import annotations

import gc
import json
import re
import threading
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from streamlit.testing.v1 import AppTest

import lmtt
from lmtt.engine.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    "The capital of France is",
    "The Eiffel Tower is in the city of",
    "Water boils at a temperature of",
    "One, two, three, four,",
    "The opposite of cold is",
    "My favourite colour is",
    "In 1492, Columbus sailed to",
    "The chemical symbol for gold is",
]


def same(a: lmtt.Analysis, b: lmtt.Analysis) -> bool:
    ca, cb = a.contributions, b.contributions
    return all(torch.equal(getattr(ca, n), getattr(cb, n)) for n in ("attn_edges", "attn_resid", "ffn_resid", "ffn")) and torch.equal(
        a.trace.logits, b.trace.logits
    )


def test_eight_threads_on_one_model_match_sequential_runs(default_runner):
    expected = [lmtt.analyze(default_runner, p) for p in PROMPTS]
    gc.collect()
    baseline = psutil.Process().memory_info().rss
    results: dict[int, lmtt.Analysis] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(PROMPTS))

    def work(k: int) -> None:
        try:
            barrier.wait()
            results[k] = lmtt.analyze(default_runner, PROMPTS[k])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(PROMPTS))]
    [t.start() for t in threads]
    [t.join(timeout=300) for t in threads]
    assert not any(t.is_alive() for t in threads), "deadlock: a thread did not finish"
    assert not errors, errors
    for k, analysis in enumerate(expected):
        assert same(results[k], analysis), f"prompt {k} differs from its sequential run"
    results.clear()
    gc.collect()
    grown_mb = (psutil.Process().memory_info().rss - baseline) / 2**20
    assert grown_mb < 300, f"RSS grew by {grown_mb:.0f} MB after the concurrent analyses were dropped"


def test_eight_apptest_sessions_at_once(default_runner, monkeypatch):
    """Eight sessions press Run at the same moment on the shared cached model.

    Each session's first (empty) run is sequential. AppTest also resets a process-wide flag at the start of every
    run (`PagesManager.uses_pages_directory = None`), and a run that reads it while another has just reset it
    registers no pages, so its `st.page_link` fails. A real server sets the flag once at start-up (the load test and
    the browser tests cover it); here AppTest gets a subclass to reset, and the flag the runs read stays set.
    """
    del default_runner  # loaded: the sessions share the cached runner
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import app_test

    monkeypatch.setattr(PagesManager, "uses_pages_directory", True)  # app.py has a pages/ folder
    monkeypatch.setattr(app_test, "PagesManager", type("AppTestPagesManager", (PagesManager,), {}))
    sessions = [AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run() for _ in PROMPTS]
    for at, prompt in zip(sessions, PROMPTS):
        at.sidebar.text_area(key="_w_prompt").input(prompt)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(sessions))

    def run(at: AppTest) -> None:
        try:
            barrier.wait()
            at.sidebar.button[0].click().run()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(at,)) for at in sessions]
    [t.start() for t in threads]
    [t.join(timeout=600) for t in threads]
    assert not errors and not any(t.is_alive() for t in threads)
    for at, prompt in zip(sessions, PROMPTS):
        assert not at.exception, at.exception
        assert at.query_params["prompt"] == prompt
        assert "which predicts" in " ".join(c.value for c in at.main.caption), prompt


# ---- hostile input in the UI --------------------------------------------------------------------------------

HOSTILE_PROMPTS = {
    "nul and control characters": "abc\x00def\x07\x1b[31m red",
    "RTL override and zero-width joiner": "abc\u202edcba \u200d\u200b x",
    "emoji with ZWJ sequences": "family: 👨\u200d👩\u200d👧 flag: 🏳️\u200d🌈",
    "script markup": "<script>alert(1)</script>",
    "img onerror": "<img src=x onerror=alert(1)>",
    "markdown and latex": "**bold** _it_ $x^2$ `code` [link](http://x) # head",
    "a single token": "Hello",
}


@pytest.mark.parametrize("prompt", list(HOSTILE_PROMPTS.values()), ids=list(HOSTILE_PROMPTS))
def test_hostile_prompts_are_analysed_as_text(prompt):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["prompt"] = prompt
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert "which predicts" in " ".join(c.value for c in at.main.caption)
    at.sidebar.slider(key="_w_threshold").set_value(0.0).run()  # every edge: the figure still builds
    assert not at.exception


@pytest.mark.parametrize(
    "prompt,message",
    [
        ("", None),  # no prompt in the URL: the empty state, not an error
        ("   \n\t ", "the prompt is empty"),
        ("x" * 100_000, "characters; the limit is"),
        ("7" * 5000, "tokens; the limit is"),  # one token per digit: over 4096 tokens, under 20,000 characters
    ],
)
def test_rejected_prompts_get_a_clear_message(prompt, message):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    if prompt:
        at.query_params["prompt"] = prompt
    at.run()
    assert not at.exception, at.exception
    if message:
        assert any(message in e.value for e in at.error), [e.value for e in at.error]


def test_demo_mode_refuses_long_prompts(tmp_path, monkeypatch):
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**raw, "demo_mode": True, "sample_prompts": []}))
    monkeypatch.setenv("LMTT_CONFIG", str(tmp_path / "config.yaml"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["prompt"] = "word " * 600  # about 600 tokens: fine on a private server, too long for a public demo
    at.run()
    assert not at.exception, at.exception
    assert any(re.search(r"the prompt has 60\d tokens; the limit is 512$", e.value) for e in at.error), [e.value for e in at.error]


def test_lone_surrogates_are_refused_before_tokenising(default_runner):
    """A URL cannot carry one (browsers send UTF-8), but the library and the CLI can be handed one."""
    from lmtt.engine.runner import PromptError

    with pytest.raises(PromptError, match=r"not valid Unicode: a lone surrogate \(U\+D800\) at character 5"):
        lmtt.analyze(default_runner, "lone \ud800 surrogate")


@pytest.mark.parametrize(
    "config_text,needle",
    [
        (None, "does not exist"),
        ("", "expected a mapping"),
        ("models: {m: {source: path, path: /nonexistent/model}}", "does not exist"),
        ("models: {m: {dtype: fp33}}", "models.m.dtype"),
        ("models: [unclosed", "not valid YAML"),
    ],
)
def test_broken_configs_and_missing_models_keep_the_app_serving(tmp_path, monkeypatch, config_text, needle):
    path = tmp_path / "config.yaml"
    if config_text is not None:
        path.write_text(config_text)
    monkeypatch.setenv("LMTT_CONFIG", str(path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["prompt"] = "hello"
    at.run()
    assert not at.exception, at.exception
    shown = [re.sub(r"\\(.)", r"\1", e.value) for e in at.error]  # as the page shows them: Markdown's escapes undone
    assert any(needle in e for e in shown), shown


def test_rate_limit_shows_a_warning(tmp_path, monkeypatch):
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw.update(rate_limit_per_minute=1, sample_prompts=[])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("LMTT_CONFIG", str(tmp_path / "config.yaml"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["prompt"] = "Rate limit probe one"
    at.run()
    assert "which predicts" in " ".join(c.value for c in at.main.caption)
    at.sidebar.text_area(key="_w_prompt").input("Rate limit probe two")
    at.sidebar.button[0].click().run()
    assert not at.exception
    assert any("Rate limit" in w.value for w in at.warning)


# ---- hostile input in the CLI ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--prompt", "x" * 100_000], "characters; the limit is"),
        (["--prompt", "7" * 5000], "tokens; the limit is"),
        (["--prompt", "The capital", "--token", "-99"], "out of range"),
        (["--prompt", "The capital", "--threshold", "-1"], "threshold"),
        (["--prompt", "The capital", "--config", "/nonexistent.yaml"], "does not exist"),
    ],
)
def test_cli_rejects_with_one_line(cli, args, needle):
    proc = cli("analyze", *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


@pytest.mark.parametrize(
    "prompt", [p for p in HOSTILE_PROMPTS.values() if "\x00" not in p], ids=[k for k, p in HOSTILE_PROMPTS.items() if "\x00" not in p]
)
def test_cli_analyses_hostile_text(cli, prompt):
    proc = cli("analyze", "--prompt", prompt, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tokens"]


# ---- hosting settings in config.yaml ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra,field",
    [
        ({"demo_mode": "yes"}, "demo_mode"),
        ({"max_concurrent_analyses": 0}, "max_concurrent_analyses"),
        ({"analysis_cache_ttl_s": -5}, "analysis_cache_ttl_s"),
        ({"rate_limit_per_minute": 1.5}, "rate_limit_per_minute"),
        ({"max_prompt_chars": True}, "max_prompt_chars"),
        ({"max_prompt_token": 10}, "max_prompt_token"),
    ],
)
def test_hosting_settings_are_validated(extra, field):
    with pytest.raises(ConfigError, match=rf"config.yaml: {field}\b"):
        parse_config({"models": {"m": {}}, **extra})


def test_demo_mode_keeps_prompts_out_of_the_log(tmp_path, monkeypatch, caplog):
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw.update(demo_mode=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**raw, "sample_prompts": []}))
    monkeypatch.setenv("LMTT_CONFIG", str(tmp_path / "config.yaml"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["prompt"] = "A secret prompt about zebras"
    with caplog.at_level("INFO", logger="lmtt.app"):
        at.run()
    lines = [r.getMessage() for r in caplog.records if r.name == "lmtt.app"]
    assert any(line.startswith("analysis model=smollm2-135m tokens=") for line in lines), lines
    assert not any("zebras" in line for line in lines)
    # the soak reads the analysis cache's size from these lines, to tell the cache from the rest of the RSS
    from lmtt.tools.loadtest import cache_mb_logged

    (tmp_path / "server.log").write_text("\n".join(lines))
    assert cache_mb_logged(tmp_path / "server.log") > 0  # the default model's analysis of this prompt: a few MB
