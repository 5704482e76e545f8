"""The Target, Faithfulness and Patching pages in Debian's Chromium, from deep links on one server.

Screenshots go to test-artifacts/ (look at them: an error or an empty chart is a failure).
"""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect

from tests.browser import ARTIFACTS, open_fresh, open_tab, settled, share_link  # skips the module where Chromium is missing

pytestmark = [pytest.mark.browser(group="shared-server"), pytest.mark.default_model]
expect.set_options(timeout=90_000)
MARY_JOHN = "When Mary and John went to the store, John gave a drink to"
FRANCE = "The capital of France is"


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1500, "height": 1200})
    page = ctx.new_page()
    page.problems = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.problems.append(f"JS error: {e}"))
    yield page
    assert page.problems == []
    ctx.close()


def choose(page: Page, label: str, typed: str, tries: int = 3) -> None:
    """Pick the first option of a selectbox that matches what is typed into it. Enter waits for the filtered option,
    and the choice is checked (under load, an Enter before the list had filtered chose nothing: a CI run's Contrast B
    stayed "none")."""
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label)
    for _ in range(tries):
        box.click()
        page.keyboard.type(typed)
        page.get_by_role("option").filter(has_text=typed.strip()).first.wait_for(state="visible")
        page.keyboard.press("Enter")
        settled(page)
        if typed.strip() in (shown := box.get_by_role("combobox").input_value()):
            return
        page.keyboard.press("Escape")
    raise AssertionError(f"{label}: no option {typed!r} was chosen in {tries} tries; it shows {shown!r}")


def test_target_page_draws_the_suppressor_of_john(page, server, browser):
    page.goto(f"{server}/target?prompt={quote(MARY_JOHN)}")
    settled(page)
    expect(page.get_by_role("heading", name="Target")).to_be_visible()
    choose(page, "Target A", "John")
    expect(page.get_by_text("logit(␣John) at token 13")).to_be_visible()
    graph = page.locator(".js-plotly-plot").first
    expect(graph.get_by_text("L23.H3 -2.49")).to_be_visible()  # the dashed direct-effect edge's label
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "target-suppressor-john.png"), full_page=True)
    open_tab(page, "Heads")
    expect(page.locator(".js-plotly-plot .heatmaplayer").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "target-head-effects-john.png"), full_page=True)
    open_tab(page, "Logit lens")
    expect(page.get_by_text("Logit lens of logit(␣John)")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "target-lens-john.png"), full_page=True)
    open_tab(page, "Why a head attends")
    expect(page.get_by_text("Head L23.H3, query 13 → key 9")).to_be_visible()
    expect(page.get_by_text("the score of every key for query 13")).to_be_visible()
    choose(page, "Compare with key", "Mary")
    expect(page.get_by_text("Against token 1:")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "target-qk-23-3.png"), full_page=True)
    # issue 20: the link reproduces the target, the open tab and the QK keys in a fresh browser
    link = share_link(page)
    assert "tab=Why+a+head+attends" in link and "a=" in link and "qk_vs=1" in link, link
    fresh, other = open_fresh(browser, link)
    expect(other.get_by_role("tab", name="Why a head attends")).to_have_attribute("aria-selected", "true")
    expect(other.get_by_text("logit(␣John) at token 13")).to_be_visible()
    expect(other.get_by_text("Head L23.H3, query 13 → key 9")).to_be_visible()
    expect(other.get_by_text("Against token 1:")).to_be_visible()
    other.screenshot(path=str(ARTIFACTS / "link-target-qk-fresh.png"), full_page=True)
    fresh.close()
    # issue 19: A = ' John' belongs to this prompt. A new prompt's Target and Faithfulness pages explain ' Paris'.
    page.locator('[data-testid="stSidebar"]').get_by_role("textbox", name="Prompt").fill(FRANCE)
    page.get_by_role("button", name="Run").click()
    settled(page)
    expect(page.get_by_text("logit(␣Paris) at token 4")).to_be_visible()
    expect(page.get_by_text("John")).to_have_count(0)
    page.get_by_role("link", name="Faithfulness").click()
    settled(page)
    page.get_by_role("button", name="Draw the faithfulness curve").click()
    expect(page.get_by_text("log p(␣Paris)").first).to_be_visible()
    expect(page.get_by_text("John")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "faithfulness-after-new-prompt.png"), full_page=True)


def test_faithfulness_page_draws_the_curve(page, server):
    page.goto(f"{server}/faithfulness?prompt={quote(FRANCE)}")
    settled(page)
    expect(page.get_by_text("Faithfulness of log p(␣Paris) at threshold")).to_be_visible()
    page.get_by_role("button", name="Draw the faithfulness curve").click()  # issue 20: a long question runs on a button
    expect(page.locator(".js-plotly-plot .scatterlayer").first).to_be_visible()
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "faithfulness-curve-france.png"), full_page=True)
    # the table shows all 12 thresholds and its header: it had scrolled its last two (0.01 and 0, where faithfulness
    # climbs to 1) out of sight
    scroller = page.locator('[data-testid="stDataFrame"]').last.locator(".dvn-scroller")  # the grid's own scrolling box
    height, shown = scroller.evaluate("(el) => [el.scrollHeight, el.clientHeight]")
    assert height <= shown + 1, (height, shown)  # nothing to scroll to: every row is in view


CANCELLED = {  # page: (its button, what its progress line says, what Cancel leaves, the chart a finished run draws)
    "patching": (
        "Run patching", "forward passes done", r"Patching \(residual stream\) cancelled with \d+ of \d+ forward passes", ".js-plotly-plot"
    ),
    "faithfulness": ("Draw the faithfulness curve", "done", r"Faithfulness curve cancelled with \d+ of \d+ steps", ".js-plotly-plot"),
}


@pytest.mark.parametrize("path", CANCELLED)
def test_a_long_question_shows_progress_and_cancels(page, server, path):
    """Issue 20: a long patching run or faithfulness curve shows its steps and an estimate, and Cancel stops it and
    says where (a Cancel that only queued behind the question would let it finish and draw its result)."""
    button, progress, stopped, result = CANCELLED[path]
    clean = "When Mary and John went to the store, John gave a drink to Mary because she was thirsty after the long walk home. " * 4
    clean = clean.strip()  # 96 tokens: many batched passes, many seconds, so that Cancel lands while it runs
    corrupt = clean.replace("Mary", "Anna")
    page.goto(f"{server}/{path}?prompt={quote(clean)}&corrupt={quote(corrupt)}")
    settled(page)
    expect(page.get_by_text(f"Press {button}")).to_be_visible()  # nothing runs before the button
    page.get_by_role("button", name=button).click()
    expect(page.get_by_text(re.compile(rf"{progress} · \d+ s · about \d+ s left"))).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / f"{path}-progress.png"))
    expect(page.get_by_role("button", name=button)).to_have_count(0)  # replaced by Cancel, not left faded under the bar
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_text(re.compile(stopped))).to_be_visible()
    settled(page)
    expect(page.locator(result)).to_have_count(0)  # no result from the cancelled run
    page.screenshot(path=str(ARTIFACTS / f"{path}-cancelled.png"), full_page=True)


def test_patching_page_france_italy(page, server, browser):
    page.goto(f"{server}/patching?prompt={quote(FRANCE)}")
    settled(page)
    page.get_by_label("Find a vocabulary token").fill("Rome")
    page.keyboard.press("Enter")
    settled(page)
    choose(page, "Contrast B", "␣Rome ")
    page.get_by_label("Corrupted prompt").fill("The capital of Italy is")
    page.keyboard.press("Enter")
    settled(page)
    page.get_by_role("button", name="Run patching").click()
    expect(page.get_by_text("batched passes")).to_be_visible()
    expect(page.get_by_text("logit(␣Paris) - logit(␣Rome): clean")).to_be_visible()
    expect(page.locator(".js-plotly-plot .heatmaplayer").first).to_be_visible()
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "patching-france-italy.png"), full_page=True)
    open_tab(page, "Heads")  # each tab's grid is its own run
    expect(page.get_by_text("Press Run patching: it patches each head of every layer")).to_be_visible()
    page.get_by_role("button", name="Run patching").click()
    expect(page.locator(".js-plotly-plot .heatmaplayer").first).to_be_visible()
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "patching-france-italy-heads.png"), full_page=True)
    open_tab(page, "Residual stream")  # the residual stream's result is remembered: no second run
    expect(page.get_by_role("button", name="Run patching")).to_have_count(0)
    expect(page.locator(".js-plotly-plot .heatmaplayer").first).to_be_visible()
    open_tab(page, "Heads")
    # issue 20: the link carries the corrupted prompt, B and the tab; the fresh browser waits for its button (the tab
    # is drawn with the result: AppTest and the Target and Interpretation links check tabs)
    link = share_link(page)
    assert "tab=Heads" in link, link
    fresh, other = open_fresh(browser, link)
    expect(other.get_by_label("Corrupted prompt")).to_have_value("The capital of Italy is")
    expect(other.get_by_role("combobox", name="Contrast B")).to_have_value(re.compile("^␣Rome "))
    expect(other.get_by_text("Press Run patching")).to_be_visible()
    fresh.close()
