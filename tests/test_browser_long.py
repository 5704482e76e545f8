"""A long prompt (2,100 tokens: past FULL_GRAPH_MAX_TOKENS, so its graph is the on-demand one, and far past
EVERY_COLUMN_MAX_TOKENS) in Debian's Chromium: pasted, run, drawn legibly (only the touched columns), clicked.

It has its own server: the long analysis holds a few GB that the other browser tests should not share.
Screenshots and timings go to test-artifacts/ (look at the screenshot: an error or an empty chart is a failure).
"""

from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import Page, expect

from lmtt.engine.tokens import visible
from lmtt.tools.dashboard import watch
from tests.browser import (  # skips the module where Chromium is missing
    ARTIFACTS,
    click_point,
    click_point_until,
    full_draws,
    new_page,
    settled,
)

pytestmark = [pytest.mark.browser(group="shared-server"), pytest.mark.default_model]
expect.set_options(timeout=90_000)
N_TOKENS = 2100
MAX_DRAWN_COLUMNS = 200  # legible: a few screens at 32 px, not 2,100 columns


def long_prompt(n_tokens: int) -> tuple[str, str]:
    """(prompt, its last token): the Python reference topics cut to exactly n_tokens tokens of the default model."""
    from transformers import AutoTokenizer

    from lmtt.engine.config import EMBEDDED_GGUF
    from lmtt.engine.loading import converted_gguf, embedded_dir
    from lmtt.tools.dashboard import prompt_of

    tokenizer = AutoTokenizer.from_pretrained(converted_gguf(embedded_dir(), EMBEDDED_GGUF))
    prompt = prompt_of(tokenizer, n_tokens)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert len(ids) == n_tokens
    return prompt, tokenizer.decode(ids[-1:])


JS_TOKENS = "() => [...document.querySelector('.st-key-graph_box .js-plotly-plot')._fullData].find((t) => t.name === 'tokens').customdata"


# what glides while the page reruns: a transition or animation that takes time, on an element, an expander or a
# progress bar (each of its frames is drawn by Chromium on the cores that the analysis runs on); a step is fine
RUNNING_ICON_SHOWN_JS = """() => [...document.querySelectorAll('[data-testid="stStatusWidgetRunningIcon"]')]
  .some((el) => getComputedStyle(el).visibility !== 'hidden')"""
GLIDING_JS = """() => document.getAnimations().filter((a) => a.effect && a.effect.getTiming().duration > 0).map((a) => {
  const el = a.effect.target, what = a.transitionProperty || a.animationName;
  if (!el || !el.closest) return null;
  if (el.matches('[data-testid="stElementContainer"]')) return 'element ' + what;
  const box = el.closest('[data-testid="stExpander"], [data-testid="stProgress"]');
  return box ? box.dataset.testid + ' ' + what : null;
}).filter(Boolean)"""


def graph_drawn(page: Page) -> None:
    """The graph of the current run is on screen: its plot is drawn and the page has settled."""
    expect(page.locator(".st-key-graph_box .js-plotly-plot .x2tick").first).to_be_attached()
    settled(page)


def test_a_long_prompt_gets_a_legible_graph(browser, server):
    from lmtt.engine.ondemand import FULL_GRAPH_MAX_TOKENS
    from lmtt.viz.columns import EVERY_COLUMN_MAX_TOKENS

    assert N_TOKENS > FULL_GRAPH_MAX_TOKENS and N_TOKENS > EVERY_COLUMN_MAX_TOKENS  # the long-prompt paths, not the short ones
    prompt, last = long_prompt(N_TOKENS)
    ctx, page = new_page(browser, server, width=1600, height=1500)  # tall enough for the whole graph in the screenshot
    page.goto(server)
    settled(page)
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_role("textbox", name="Prompt").fill(prompt)  # as a paste: the whole text at once
    page.keyboard.press("Control+Enter")
    settled(page)

    watch(page)  # counts the full draws from here
    start = time.perf_counter()
    sidebar.get_by_role("button", name="Run").click()
    gliding = set()
    for _ in range(8):  # the first seconds of the run: the page dims, the sidebar's expanders too, the progress bar moves
        page.wait_for_timeout(400)
        gliding.update(page.evaluate(GLIDING_JS))
    assert not gliding, gliding  # they change in one step (STALE_CSS): each frame of a glide costs the analysis CPU
    # the on-demand paths: a still line, no spinner and its clock, and no running icon swapping its picture 5 times a
    # second (each redraw of this page took CPU from the paths)
    expect(page.get_by_text(f"Following the paths to token {N_TOKENS - 1}…")).to_be_visible(timeout=300_000)
    assert page.locator('[data-testid="stSpinner"]').count() == 0
    assert page.evaluate(RUNNING_ICON_SHOWN_JS) is False
    expect(page.get_by_text(f"lead to token {N_TOKENS - 1} ")).to_be_visible(timeout=300_000)
    graph_drawn(page)
    first_graph_s = time.perf_counter() - start
    # once: Streamlit's copy of a new figure (its theming) was drawn again in full, 1-1.4 s at 500 tokens
    assert full_draws(page, ".st-key-graph_box") == 1

    graph = page.locator(".st-key-graph_box .js-plotly-plot")
    top = graph.locator(".x2tick text").all_text_contents()
    assert top == graph.locator(".xtick text").all_text_contents()
    explained = f"{N_TOKENS - 1}: {visible(last)}"
    assert top[-1] == explained, top[-5:]
    gaps = [t for t in top if re.fullmatch(r"⋯ [\d,]+ tokens", t)]
    drawn = [t for t in top if t not in gaps]
    assert gaps and 1 < len(drawn) <= MAX_DRAWN_COLUMNS, (len(drawn), len(gaps))
    assert sum(int(re.sub(r"\D", "", t)) for t in gaps) + len(drawn) == N_TOKENS  # every token is drawn or counted in a gap
    label = graph.locator(".x2tick text").last.bounding_box()
    assert 0 < label["x"] < 1600 and 0 < label["y"] < 1500, "the explained token's label is off the first screen"

    start = time.perf_counter()
    click_point_until(page, f"ffn:29:{N_TOKENS - 1}", f"layer 29 after FFN, token {N_TOKENS - 1} ")  # the explained token's top node
    graph_drawn(page)
    node_click_s = time.perf_counter() - start
    assert full_draws(page, ".st-key-graph_box") == 1  # a node click rings the node and draws no graph
    expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible()  # its logit lens
    page.screenshot(path=str(ARTIFACTS / "graph-long-prompt.png"))

    edge = page.evaluate(
        "() => [...document.querySelector('.st-key-graph_box .js-plotly-plot')._fullData]"
        ".find((t) => t.name === 'edges').customdata.find((c) => c.startsWith('edge|attention|'))"
    )
    click_point(page, edge)
    expect(page.get_by_text("Click a head to see what it wrote")).to_be_visible()  # the edge panel: its heads
    graph_drawn(page)

    other = page.evaluate(JS_TOKENS)[-2]  # the drawn token left of the explained one: its ▲ explains it
    start = time.perf_counter()
    click_point(page, other)
    expect(page.get_by_text(f"lead to token {other.split('|')[1]} ")).to_be_visible(timeout=300_000)
    graph_drawn(page)
    token_click_s = time.perf_counter() - start
    assert page.locator(".st-key-graph_box .js-plotly-plot .x2tick").count() <= 2 * MAX_DRAWN_COLUMNS
    timings = {"tokens": N_TOKENS, "first_graph_s": round(first_graph_s, 1), "node_click_s": round(node_click_s, 1)}
    timings["token_click_s"] = round(token_click_s, 1)
    (ARTIFACTS / "graph-long-prompt-timings.json").write_text(json.dumps(timings) + "\n")
    print(timings)
    assert page.problems == [], page.problems
    ctx.close()
