"""`python -m lmtt.tools.dashboard`: the dashboard's own speed, measured in Debian's Chromium on a fresh server.

For prompts of 30, 500 and 4,000 tokens of English prose (default model): the time from pressing Run to a drawn graph,
the engine's time for the same analysis, and the time from a node click to the redrawn page; with `--repeats N`, N
different prompts of each size (medians, and the range of the app's time over the engine: this host's speed moves by
tens of per cent between runs). Then the long questions, patching, the faithfulness curve and a dataset run, from their
button to the drawn result, against the library's time (medians of three; the dataset, three sets of new prompts).
The app's times are read in the browser's own clock, from the press (pointerdown) to the page's last finish: its
script, or a chart's draw. The browser needs Playwright (a dev requirement) and /usr/bin/chromium.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache, partial
from pathlib import Path
from urllib.parse import quote

SIZES = (30, 500, 4000)
CLICKS = 3  # node clicks per size (their median is reported)
REPEATS = 3  # each question, in the library and in the app (medians)
QUESTION_PROMPT = ("The capital of France is", "The capital of Italy is")


@dataclass(frozen=True)
class GraphTiming:
    """Medians over `runs` prompts of `tokens` tokens (each a new prompt: a cache miss in the server)."""

    tokens: int
    engine_s: float  # lmtt.analyze and the paths to the last token, in this process, warm model
    first_graph_s: float  # Run pressed -> the graph drawn in the browser
    node_click_s: float  # a node clicked (after the hover that precedes a click) -> the page redrawn with its panel (median)
    over_s: float = math.nan  # the median of each prompt's first_graph_s - engine_s
    over_min_s: float = math.nan
    over_max_s: float = math.nan
    runs: int = 1
    # the size's first prompt: the engine in a new process (its memory as new to it as the server's is to the server's
    # first prompt of the size), and that prompt's first_graph_s
    fresh_engine_s: float = math.nan
    first_prompt_s: float = math.nan


@dataclass(frozen=True)
class QuestionTiming:
    question: str
    library_s: float
    app_s: float  # its button pressed -> the result drawn


@lru_cache(maxsize=2)
def _prose_ids(tokenizer) -> tuple[int, ...]:
    """The prose's token ids, once per tokenizer (a dataset question cuts a dozen prompts from it)."""
    from lmtt.tools.bench import natural_text

    return tuple(tokenizer(natural_text(), add_special_tokens=False)["input_ids"])


def prompt_of(tokenizer, n_tokens: int, skip: int = 0) -> str:
    """Exactly n_tokens tokens of the Python reference topics (English prose), from about token `skip` on: another
    prompt of the same length for each skip. A start moves on by a token while the decoded text would tokenize
    differently or begins or ends with white space (which a text box may not keep)."""
    ids = _prose_ids(tokenizer)
    for start in range(skip, skip + 50):
        text = tokenizer.decode(ids[start : start + n_tokens])
        if text == text.strip() and len(tokenizer(text, add_special_tokens=False)["input_ids"]) == n_tokens:
            return text
    raise ValueError(f"no {n_tokens}-token prompt starts near token {skip} of the prose")


REPEAT_SKIP = 997  # tokens between the starts of one size's prompts


SETTLED_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !!app && app.dataset.testConnectionState === "CONNECTED" && app.dataset.testScriptState === "notRunning";
}"""


def _settled(page, timeout_ms: int) -> None:
    """The app is connected and its script has finished. Checked every 50 ms: Playwright's expect() retries at 100,
    250, 500 and then every 1,000 ms, which would add up to a second to a timing."""
    page.wait_for_timeout(50)  # the script starts running a moment after the click
    page.wait_for_function(SETTLED_JS, polling=50, timeout=timeout_ms)


WATCH_JS = """() => {
  // from now on: when the user first presses (pointerdown), when the page last finished (its script or a plot's
  // draw), and each plot's full draws (plotly computing its data anew); read from window.__lmttWatch
  window.__lmttWatch = {pressed: null, done: null, draws: {}};
  const finished = () => { window.__lmttWatch.done = performance.now(); };
  const app = document.querySelector('[data-testid="stApp"]');
  if (!window.__lmttWatching) {  // once per page load: the listeners write to whichever record is current
    window.__lmttWatching = true;
    document.addEventListener('pointerdown', () => { window.__lmttWatch.pressed ??= performance.now(); }, true);
    new MutationObserver(() => { if (app.dataset.testScriptState === 'notRunning') finished(); })
      .observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
    let plots = 0;
    const hook = () => document.querySelectorAll('.js-plotly-plot').forEach((gd) => {
      if (gd.__lmttPlot || !gd.on) return;
      gd.__lmttPlot = ++plots;
      gd.on('plotly_afterplot', () => {
        finished();
        if (gd.__lmttData === gd.calcdata) return;  // drawn again without new data: Plotly.react found nothing changed
        gd.__lmttData = gd.calcdata;
        const draws = window.__lmttWatch.draws;
        draws[gd.__lmttPlot] = (draws[gd.__lmttPlot] || 0) + 1;
      });
    });
    new MutationObserver(hook).observe(document.body, {childList: true, subtree: true});
    hook();
  }
}"""


def watch(page) -> None:
    """Start timing (and counting draws) in the browser's own clock: see WATCH_JS and seconds_since_press."""
    page.evaluate(WATCH_JS)


def seconds_since_press(page, timeout_ms: int = 60_000) -> float:
    """From the press to the page's last finish (script or draw), in the browser's clock: what the user waits for,
    without Playwright's own polling and round trips (0.1-0.5 s a timing here). Waits for a finish after the press:
    a node's hover label carries the text that a click's panel is awaited by, so that wait alone could end before the
    click's rerun did (a 30-token run once read -8.4 s)."""
    finished = "() => window.__lmttWatch.done !== null && window.__lmttWatch.done > window.__lmttWatch.pressed"
    page.wait_for_function(finished, timeout=timeout_ms)
    _settled(page, timeout_ms)
    return page.evaluate("() => (window.__lmttWatch.done - window.__lmttWatch.pressed) / 1000")


def _graph_drawn(page, text: str, timeout_ms: int = 600_000) -> None:
    page.get_by_text(text).first.wait_for(state="visible", timeout=timeout_ms)
    page.locator(".st-key-graph_box .js-plotly-plot .x2tick").first.wait_for(state="attached", timeout=timeout_ms)
    _settled(page, timeout_ms)


NODE_XY_JS = """(node) => {
  const gd = document.querySelector('.st-key-graph_box .js-plotly-plot');
  const trace = gd._fullData.filter((t) => t.name === 'nodes').find((t) => t.customdata.includes(node));
  if (!trace) return null;
  const i = trace.customdata.indexOf(node);
  if (i < 0) return null;
  const l = gd._fullLayout, box = gd.getBoundingClientRect();
  return [box.left + l.xaxis._offset + l.xaxis.d2p(trace.x[i]), box.top + l.yaxis._offset + l.yaxis.d2p(trace.y[i])];
}"""


def _click_node(page, node: str) -> None:
    """Hover the node, as a hand does (plotly clicks the point it last hovered), then click it (timed from here)."""
    xy = page.evaluate(NODE_XY_JS, node)
    if xy is None:
        raise RuntimeError(f"node {node} is not drawn")
    page.mouse.move(xy[0], xy[1])
    page.locator(".js-plotly-plot .hoverlayer .hovertext").first.wait_for(state="attached", timeout=10_000)
    watch(page)
    page.mouse.click(xy[0], xy[1])


def graph_timings(page, base: str, runner, tokenizer, sizes=SIZES, repeats: int = 1) -> list[GraphTiming]:
    """Each size's medians over `repeats` prompts, in the order a researcher meets them (all sizes, then again); the
    first prompt of each size is also timed in the engine of a new process."""
    runs = [
        _graph_timing(page, base, runner, prompt_of(tokenizer, n, r * REPEAT_SKIP), n, fresh=r == 0) for r in range(repeats) for n in sizes
    ]
    return [summary([t for t in runs if t.tokens == n]) for n in sizes]


FRESH_ENGINE = """
import sys, time
import lmtt
from lmtt.analysis import DEFAULT_THRESHOLD
from lmtt.engine import attribution
runner = lmtt.load_model()
attribution.warm_up_for(runner)
prompt = sys.stdin.read()
start = time.perf_counter()
lmtt.analyze(runner, prompt).paths_to(-1, DEFAULT_THRESHOLD)
print(time.perf_counter() - start)
"""


def fresh_engine_s(prompt: str) -> float:
    """The engine's time for `prompt` (analysis and paths, as in _graph_timing) in a new process after its model loads,
    with the server's environment: what the library takes where the memory it needs is new to it, as the server's is
    on its first prompt of a size (this VM is slow to hand out memory a process has not used before)."""
    import os
    import subprocess
    import sys

    from lmtt.tools.serve import ROOT, SERVER_ENV

    env = {**os.environ, **SERVER_ENV}
    done = subprocess.run([sys.executable, "-c", FRESH_ENGINE], input=prompt, capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return float(done.stdout.split()[-1])


def summary(runs: list[GraphTiming]) -> GraphTiming:
    """One size's runs as medians, with the range of the app's time over the engine."""
    over = [t.first_graph_s - t.engine_s for t in runs]
    clicks = [t.node_click_s for t in runs if not math.isnan(t.node_click_s)]
    return GraphTiming(
        runs[0].tokens,
        round(statistics.median(t.engine_s for t in runs), 2),
        round(statistics.median(t.first_graph_s for t in runs), 2),
        round(statistics.median(clicks), 2) if clicks else math.nan,
        round(statistics.median(over), 2),
        round(min(over), 2),
        round(max(over), 2),
        len(runs),
        runs[0].fresh_engine_s,
        runs[0].first_graph_s,
    )


def _graph_timing(page, base: str, runner, prompt: str, n: int, fresh: bool = False) -> GraphTiming:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    import lmtt
    from lmtt.analysis import DEFAULT_THRESHOLD
    from lmtt.tools.bench import _timed

    # what the app draws first (an on-demand graph builds it here)
    engine_s, _ = _timed(lambda: lmtt.analyze(runner, prompt).paths_to(-1, DEFAULT_THRESHOLD))
    fresh_s = round(fresh_engine_s(prompt), 2) if fresh else math.nan  # before the app's run, never beside it
    page.goto(base)
    _settled(page, 120_000)
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_role("textbox", name="Prompt").fill(prompt)
    page.keyboard.press("Control+Enter")
    _settled(page, 120_000)
    watch(page)
    sidebar.get_by_role("button", name="Run").click()
    _graph_drawn(page, f"lead to token {n - 1} ")
    first = seconds_since_press(page)
    clicks = []
    for layer in range(28, 28 - CLICKS, -1):  # FFN nodes of the explained token, always drawn
        for _ in range(3):  # a click that plotly did not take (it selected nothing) is made again, and timed anew
            _click_node(page, f"ffn:{layer}:{n - 1}")
            try:  # the node's hover label carries the panel's text too: a click not taken is a press with no rerun
                _graph_drawn(page, f"layer {layer} after FFN, token {n - 1} ", 30_000)
                clicks.append(seconds_since_press(page, 30_000))
            except PlaywrightTimeout:
                continue
            break
        else:  # said and left out of the median, not a crash that loses the run's other timings
            print(f"{n} tokens: the click on ffn:{layer}:{n - 1} was not taken in three tries; not timed", flush=True)
    click_s = round(statistics.median(clicks), 2) if clicks else math.nan
    timing = GraphTiming(n, round(engine_s, 2), round(first, 2), click_s, round(first - engine_s, 2), fresh_engine_s=fresh_s)
    print(timing, flush=True)
    return timing


def _app_seconds(page, base: str, query: str, nav: str, button: str, drawn: str, fill: str | None = None) -> float:
    """From pressing the `button` of the page `nav` until the chart `drawn` (a CSS selector) is visible and the page has
    settled; `fill`: text typed first into the page's text area (the Dataset page's prompts). The page is reached as a
    researcher does, from the Graph page through the sidebar: a fresh browser tab would also load plotly.js for its
    first chart (about 2 s here), which the Graph page has done already."""
    page.goto(f"{base}/?{query}")
    _graph_drawn(page, "lead to token", 120_000)
    page.locator('[data-testid="stSidebar"]').get_by_role("link", name=nav).click()
    if fill is not None:
        box = page.locator('[data-testid="stMain"] textarea').first
        box.wait_for(state="visible", timeout=120_000)
        box.fill(fill)
        box.press("Control+Enter")  # Streamlit takes a text area's value on Ctrl+Enter (or on leaving it)
    page.get_by_role("button", name=button).wait_for(state="visible", timeout=120_000)
    _settled(page, 120_000)
    watch(page)
    page.get_by_role("button", name=button).click()
    page.locator(drawn).first.wait_for(state="visible", timeout=600_000)
    _settled(page, 600_000)
    return seconds_since_press(page)


def question_prompts(tokenizer, preface_tokens: int = 0) -> tuple[str, str]:
    """QUESTION_PROMPT, both after the same `preface_tokens` tokens of prose: longer questions, the same token count."""
    preface = prompt_of(tokenizer, preface_tokens) + "\n\n" if preface_tokens else ""
    return preface + QUESTION_PROMPT[0], preface + QUESTION_PROMPT[1]


QUESTIONS = ("patching", "curve", "dataset")
DATASET_PROMPTS, DATASET_TOKENS = 8, 12  # the Dataset question: 8 prompts of 12 tokens of prose
DATASET_SKIP = 20_000  # where its prompts start in the prose, far from the graph timings' prompts
DATASET_REPEAT_SKIP = 5_000  # between two repeats' first prompts: room for the lines it passes over


def dataset_prompts(tokenizer, repeat: int) -> list[str]:
    """The Dataset question's prompts for one repeat: new texts each time, so that the server's cache misses them, and
    one line each (the page reads a prompt a line)."""
    out, start = [], DATASET_SKIP + repeat * DATASET_REPEAT_SKIP
    while len(out) < DATASET_PROMPTS:
        text = prompt_of(tokenizer, DATASET_TOKENS, start)
        start += 100
        if "\n" not in text:
            out.append(text)
        if start > DATASET_SKIP + (repeat + 1) * DATASET_REPEAT_SKIP:
            raise ValueError(f"too few one-line {DATASET_TOKENS}-token prompts in the prose for repeat {repeat}")
    return out


def dataset_library(runner, prompts: list[str]) -> None:
    """What the Dataset page computes after Run, with the library: each prompt analysed and summarised, the summaries
    aggregated, and the GLU quadrants of the most frequent top neuron over the prompts."""
    import lmtt
    from lmtt.questions.batch import aggregate, summarize
    from lmtt.questions.neurons import glu_quadrants

    analyses = [lmtt.analyze(runner, p) for p in prompts]
    agg = aggregate([summarize(a, p) for a, p in zip(analyses, prompts)])
    layer, neuron = agg["frequent_neurons"][0][:2]
    glu_quadrants([(a.tokens, a.neuron_profile(int(layer), int(neuron))) for a in analyses])


def question_timings(page, base: str, runner, preface_tokens: int = 0, questions=QUESTIONS) -> list[QuestionTiming]:
    import lmtt
    from lmtt.tools.bench import _timed

    clean, corrupt = question_prompts(runner.tokenizer, preface_tokens)
    a = lmtt.analyze(runner, clean)
    query = f"prompt={quote(clean)}&corrupt={quote(corrupt)}"
    sets = [dataset_prompts(runner.tokenizer, r) for r in range(REPEATS)]

    asked = {  # name: (its row in the table, the library call for repeat r, the app's page, button, drawn chart, and fill)
        "patching": (  # the page's first tab: the residual stream
            "patching (the residual stream)",
            lambda r: a.patching(corrupt, sites=("resid",)),
            lambda r: ("Patching", "Run patching", ".js-plotly-plot .heatmaplayer"),
        ),
        "curve": (
            "faithfulness curve",
            lambda r: a.faithfulness_curve(),
            lambda r: ("Faithfulness", "Draw the faithfulness curve", ".js-plotly-plot .scatterlayer"),
        ),
        "dataset": (
            f"dataset run ({DATASET_PROMPTS} prompts of {DATASET_TOKENS} tokens, its tables and GLU quadrants)",
            lambda r: dataset_library(runner, sets[r]),
            lambda r: ("Dataset", f"Run {DATASET_PROMPTS} prompts", ".st-key-dataset_heads .js-plotly-plot", "\n".join(sets[r])),
        ),
    }
    out = []
    for name in questions:
        label, library, how = asked[name]
        library_s = statistics.median(_timed(partial(library, r))[0] for r in range(REPEATS))
        # each time a fresh session (page.goto), so the question is answered anew (the dataset: new prompts each time)
        app_s = statistics.median(_app_seconds(page, base, query, *how(r)) for r in range(REPEATS))
        out.append(QuestionTiming(label, round(library_s, 2), round(app_s, 2)))
        print(out[-1], flush=True)
    return out


def run(sizes=SIZES, preface_tokens: int = 0, questions=QUESTIONS, repeats: int = 1) -> dict:
    """Every dashboard timing, on one fresh server and one browser (nothing else should run on the machine)."""
    from playwright.sync_api import sync_playwright

    import lmtt
    from lmtt.engine import attribution
    from lmtt.tools.serve import CHROMIUM, CHROMIUM_ARGS, streamlit_server

    runner = lmtt.load_model()
    attribution.warm_up_for(runner)  # as the app's runner is, at its load
    tokenizer = runner.tokenizer
    with tempfile.TemporaryDirectory() as tmp, streamlit_server(Path(tmp) / "server.log") as (base, _pid), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1500, "height": 1100}).new_page()
        page.goto(base)  # the server loads its model on the first visit: not part of any timing
        _graph_drawn(page, "lead to token", 300_000)
        graphs = graph_timings(page, base, runner, tokenizer, sizes, repeats)
        questions = question_timings(page, base, runner, preface_tokens, questions)
        browser.close()
    return {"graphs": [asdict(g) for g in graphs], "questions": [asdict(q) for q in questions]}


def markdown(result: dict) -> str:
    lines = [
        "| tokens | prompts | engine (library) s | Run → graph drawn s | over the engine s (range) | node click → redrawn s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for g in result["graphs"]:
        click = "not taken" if math.isnan(g["node_click_s"]) else f"{g['node_click_s']:.2f}"
        spread = f" ({g['over_min_s']:+.2f} to {g['over_max_s']:+.2f})" if g["runs"] > 1 else ""
        times = f"{g['engine_s']:.2f} | {g['first_graph_s']:.2f} | {g['over_s']:+.2f}{spread}"
        lines.append(f"| {g['tokens']:,} | {g['runs']} | {times} | {click} |")
    lines += [
        "",
        "| tokens | the size's first prompt: Run → graph drawn s | its engine in a new process s | over it s |",
        "|---:|---:|---:|---:|",
    ]
    for g in result["graphs"]:
        if not math.isnan(g.get("fresh_engine_s", math.nan)):
            fresh = f"{g['first_prompt_s']:.2f} | {g['fresh_engine_s']:.2f} | {g['first_prompt_s'] - g['fresh_engine_s']:+.2f}"
            lines.append(f"| {g['tokens']:,} | {fresh} |")
    lines += ["", "| question | library s | app (button → drawn) s | app / library |", "|---|---:|---:|---:|"]
    for q in result["questions"]:
        lines.append(f"| {q['question']} | {q['library_s']:.2f} | {q['app_s']:.2f} | {q['app_s'] / q['library_s']:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    from lmtt.tools.report import RESULTS, write_section

    parser = argparse.ArgumentParser(prog="python -m lmtt.tools.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated prompt sizes in tokens ('' for none)")
    parser.add_argument("--preface-tokens", type=int, default=0, help="the questions' two prompts after this many tokens of prose")
    parser.add_argument("--questions", default=",".join(QUESTIONS), help=f"comma-separated, of {', '.join(QUESTIONS)} ('' for none)")
    parser.add_argument("--repeats", type=int, default=1, help="prompts of each size (each another text: a cache miss); medians")
    parser.add_argument("--out", default=str(RESULTS), help="markdown report to update ('' to skip)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    sizes, questions = tuple(int(s) for s in args.sizes.split(",") if s), tuple(q for q in args.questions.split(",") if q)
    result = run(sizes, args.preface_tokens, questions, args.repeats)
    print(json.dumps(result))
    if args.out:
        write_section("Dashboard", markdown(result), Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
