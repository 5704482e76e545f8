"""What every browser test module imports first: Debian's Chromium (or a failure that says how to get it); the artifacts folder.

Browser tests are part of `make test`. They are skipped only when the user asks for it, with LMTT_SKIP_BROWSER=1.

Also the helpers that the browser tests share: a recorded page, and clicking a plotly point by its customdata.
The `browser` and `server` fixtures live in tests/conftest.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from lmtt.tools.dashboard import SETTLED_JS
from lmtt.tools.serve import CHROMIUM, ROOT

ARTIFACTS = ROOT / "test-artifacts"

SKIP_VARIABLE = "LMTT_SKIP_BROWSER"

if os.environ.get(SKIP_VARIABLE) == "1":
    message = f"!!! BROWSER TESTS SKIPPED: {SKIP_VARIABLE}=1 is set !!!"
    print(message, file=sys.stderr)
    pytest.skip(message, allow_module_level=True)
if not Path(CHROMIUM).exists():
    pytest.fail(
        f"{CHROMIUM} is missing, so the browser tests cannot run. Install Debian's Chromium "
        f"(`sudo apt-get install -y chromium`, or `make browser` as root), or skip them on purpose with {SKIP_VARIABLE}=1.",
        pytrace=False,
    )


def new_page(browser, base: str, width: int = 1400, height: int = 1100):
    """A fresh session that records JS errors, dialogs and any request leaving loopback."""
    ctx = browser.new_context(viewport={"width": width, "height": height})
    page = ctx.new_page()
    page.problems = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.problems.append(f"JS error: {e}"))
    page.on("dialog", lambda d: (page.problems.append(f"dialog fired: {d.message}"), d.dismiss()))
    page.on(
        "request",
        lambda r: (
            page.problems.append(f"external request: {r.url}")
            if not r.url.startswith((base, "data:", "blob:", base.replace("http", "ws")))
            else None
        ),
    )
    return ctx, page


POINT_JS = """([match, half]) => {
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    const layout = gd._fullLayout, box = gd.getBoundingClientRect();
    for (const trace of [...gd._fullData].reverse()) {  // the last match: for a token, its handle above the graph
      const data = trace.customdata || [];
      const xa = layout[trace.xaxis.replace('x', 'xaxis')], ya = layout[trace.yaxis.replace('y', 'yaxis')];
      const at = (x, y) => [box.left + xa._offset + xa.d2p(x), box.top + ya._offset + ya.d2p(y)];
      for (let i = 0; i < data.length; i++) {
        if (trace.type === 'heatmap') {  // customdata per cell: [row][column]
          const c = data[i].findIndex((d) => JSON.stringify(d) === JSON.stringify(match));
          if (c >= 0) return at(trace.x[c], trace.y[i]);
          continue;
        }
        if (JSON.stringify(data[i]) !== JSON.stringify(match)) continue;
        return at(trace.x[i], half ? trace.y[i] / 2 : trace.y[i]);
      }
    }
  }
  return null;
}"""


def point_xy(page: Page, customdata, bar: bool = False) -> tuple[float, float]:
    """Where the plotly point (or the middle of the bar) whose customdata is `customdata` is, in whichever chart has it."""
    expect(page.locator(".js-plotly-plot .xtick").first).to_be_attached()
    xy = page.evaluate(POINT_JS, [customdata, bar])
    assert xy is not None, f"no point with customdata {customdata!r}"
    return xy


def click_point(page: Page, customdata, bar: bool = False) -> None:
    """Hover first, as a hand does: plotly clicks the point it last hovered, and its hover is throttled.

    A fixed pause was not enough on a loaded 2-core machine (the click landed before the hover and did nothing),
    so wait for plotly's hover label to appear, nudging the pointer once if it has not after a while.
    """
    xy = point_xy(page, customdata, bar)
    label = page.locator(".js-plotly-plot .hoverlayer .hovertext").first
    for dx in (0, 1):
        page.mouse.move(xy[0] + dx, xy[1])
        try:
            label.wait_for(state="attached", timeout=5_000)
            break
        except PlaywrightTimeout:
            continue
    page.mouse.click(xy[0] + dx, xy[1])


def outside_plots(page: Page, text: str):
    """`text` in the page but not in a chart: a node's hover label says what its panel says, so a click that selected
    nothing still showed the text (a CI run waited for a button of the panel that never came)."""
    return page.get_by_text(text).and_(page.locator(":not(.js-plotly-plot *)"))


def click_point_until(page: Page, customdata, text: str, tries: int = 3) -> None:
    """Click a plotly point until `text` shows outside the charts: on a loaded 2-core machine a click now and then
    selects nothing (two CI runs lost the edge click even after the hover label showed). The last try waits the full
    timeout."""
    for _ in range(tries - 1):
        click_point(page, customdata)
        try:
            outside_plots(page, text).first.wait_for(state="visible", timeout=15_000)
            return
        except PlaywrightTimeout:
            settled(page)
    click_point(page, customdata)
    expect(outside_plots(page, text).first).to_be_visible()


CONNECTED_JS = "() => document.querySelector('[data-testid=\"stApp\"]')?.dataset.testConnectionState === 'CONNECTED'"


def settled(page) -> None:
    """Wait until the app is connected and its script has finished, with no exception shown.

    A fresh page is "not running" until its first run starts, so the connection comes first; the script starts a
    moment after a click, hence the pause. Then the state is checked every 50 ms (the dashboard tool's check):
    expect() retries at 100, 250 and 500 ms and then every second, which added up to a second to each of the suite's
    hundred waits."""
    page.wait_for_function(CONNECTED_JS, polling=50, timeout=120_000)
    page.wait_for_timeout(300)
    page.wait_for_function(SETTLED_JS, polling=50, timeout=120_000)
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)


def open_tab(page: Page, name: str) -> None:
    """Click one of a page's tabs and wait for the rerun it starts (the open tab is in the link).

    One CI run's click on the Interpretation page's Head tab showed nothing of that tab for 30 s, on a loaded 2-core
    machine (Streamlit disables a tab while a run has not yet redrawn it). A tab that is not selected once the page
    has settled is clicked again, once; the second miss fails, naming the tab that is open instead."""
    tab = page.get_by_role("tab", name=name, exact=True)
    for _ in range(2):
        tab.click()
        settled(page)
        if tab.get_attribute("aria-selected") == "true":
            return
    expect(tab, f"the {name!r} tab is still not open; open: {page_state(page)['tabs']}").to_have_attribute("aria-selected", "true")


PAGE_STATE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  const text = (sel) => [...document.querySelectorAll(sel)].filter((e) => e.checkVisibility()).map((e) => e.innerText.trim().slice(0, 300));
  return {
    script: app ? `${app.dataset.testConnectionState}/${app.dataset.testScriptState}` : 'no app',
    tabs: [...document.querySelectorAll('[role="tab"][aria-selected="true"]')].map((t) => t.innerText.trim()),
    alerts: text('[data-testid="stAlert"]'),
    exceptions: text('[data-testid="stException"]'),
  };
}"""


def page_state(page: Page) -> dict:
    """What a failed browser test's page showed: its URL, the script's state, the open tabs, the alerts and exceptions in sight."""
    try:
        return {"url": page.url, **page.evaluate(PAGE_STATE_JS)}
    except Exception as e:  # a closed or crashed page: say so instead of hiding the test's own failure
        return {"url": page.url, "unreadable": repr(e)}


def share_link(page: Page) -> str:
    """The text of the sidebar's "Copy link to this view"."""
    sidebar = page.locator('[data-testid="stSidebar"]')
    code = sidebar.locator('[data-testid="stCode"]')
    if not code.is_visible():
        sidebar.get_by_text("Copy link to this view").click()
    return code.inner_text()


def open_fresh(browser, link: str, width: int = 1500, height: int = 1200):
    """(context, page) of a fresh browser context on `link`, settled: what a colleague sees from a shared link."""
    ctx = browser.new_context(viewport={"width": width, "height": height})
    page = ctx.new_page()
    page.goto(link)
    settled(page)
    return ctx, page


NODES_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].map((gd) =>
  (gd._fullData || []).filter((t) => t.name === 'nodes').reduce((n, t) => n + t.x.length, 0)).find((n) => n > 0) || 0"""


def drawn_nodes(page: Page) -> int:
    """How many graph nodes the page's graph has drawn (its "nodes" traces: faint, the route's, the selected one)."""
    expect(page.locator(".js-plotly-plot .scatterlayer .trace path.point").first).to_be_attached()
    return page.evaluate(NODES_JS)


def full_draws(page: Page, selector: str) -> int:
    """How many times the plot at `selector` was drawn in full since `watch(page)` (0 for a plot drawn before)."""
    return page.evaluate(
        "(sel) => window.__lmttWatch.draws[document.querySelector(sel + ' .js-plotly-plot').__lmttPlot] || 0", selector
    )
