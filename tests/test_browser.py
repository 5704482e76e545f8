"""The real app in Debian's Chromium: deep links on a fresh server, clicks, pages, hostile tokens.

Screenshots go to test-artifacts/ (look at them: an error or an empty chart is a failure).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from lmtt.serve import CHROMIUM, CHROMIUM_ARGS, ROOT, streamlit_server

ARTIFACTS = ROOT / "test-artifacts"

if not Path(CHROMIUM).exists():
    message = f"!!! BROWSER TESTS SKIPPED: {CHROMIUM} is missing (apt-get install -y chromium) !!!"
    print(message, file=sys.stderr)
    pytest.skip(message, allow_module_level=True)

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.browser
expect.set_options(timeout=60_000)
PROMPT = "The capital of France is"
HOSTILE = "<img src=x onerror=alert(1)> and <script>alert(2)</script> **b** $x$ \u202eevil\u202c 👨\u200d👩"


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_server(tmp_path_factory.mktemp("server") / "server.log") as (base, _pid):
        yield base


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


def settled(page: Page) -> None:
    app = page.locator('[data-testid="stApp"]')
    expect(app).to_have_attribute("data-test-connection-state", "CONNECTED")
    page.wait_for_timeout(300)
    expect(app).to_have_attribute("data-test-script-state", "notRunning")
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)


def nav_links(page: Page) -> list[str]:
    return [t.strip() for t in page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"]').all_inner_texts()]


def test_a_deep_link_is_the_first_request_to_a_fresh_server(browser, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_server(tmp_path / "server.log") as (base, _pid):
        ctx, page = new_page(browser, base)
        page.goto(f"{base}/contributions?prompt={quote(PROMPT)}&node=attn:22:4")
        settled(page)
        expect(page.get_by_role("heading", name="Contributions")).to_be_visible()
        expect(page.get_by_text("Heads at layer 22")).to_be_visible()
        assert nav_links(page) == ["Graph", "Contributions", "Interpretation", "Compare", "Target", "Faithfulness", "Patching", "Dataset"]
        page.screenshot(path=str(ARTIFACTS / "deep-link-contributions.png"), full_page=True)
        assert page.problems == []
        ctx.close()


def test_run_click_a_node_and_visit_every_page(browser, server):
    ctx, page = new_page(browser, server)
    page.goto(server)
    settled(page)
    expect(page.get_by_text("press Run")).to_be_visible()
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_text("predicts ␣Paris")).to_be_visible()
    settled(page)
    nodes = page.locator(".js-plotly-plot .scatterlayer .trace:last-child path.point")
    expect(nodes).to_have_count(5 * 61)
    box = nodes.nth(5 * 61 - 1).bounding_box()  # the top node of the last token
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    expect(page.get_by_text("layer 29 after FFN, token 4 ␣is")).to_be_visible()
    expect(page.get_by_text("Logit lens")).to_be_visible()
    expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible()
    settled(page)
    assert "node=ffn%3A29%3A4" in page.url
    page.screenshot(path=str(ARTIFACTS / "graph-node-selected.png"), full_page=True)

    page.locator('[data-testid="stSidebar"]').get_by_role("link", name="Contributions").click()
    expect(page.get_by_role("heading", name="Contributions")).to_be_visible()
    expect(page.get_by_text("Top neurons at layer 29")).to_be_visible()
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "contributions.png"), full_page=True)

    page.locator('[data-testid="stSidebar"]').get_by_role("link", name="Interpretation").click()
    expect(page.get_by_role("heading", name="Interpretation")).to_be_visible()
    expect(page.get_by_text("Attention pattern")).to_be_visible()
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "interpretation.png"), full_page=True)
    page.get_by_role("tab", name="Logit lens").click()
    expect(page.locator(".js-plotly-plot .heatmaplayer").last).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "logit-lens.png"), full_page=True)
    assert page.problems == []
    ctx.close()


def test_hostile_tokens_render_as_text(browser, server):
    ctx, page = new_page(browser, server)
    page.goto(f"{server}/?prompt={quote(HOSTILE)}")
    settled(page)
    expect(page.get_by_text("which predicts")).to_be_visible()
    settled(page)
    # the markup is shown as text in the tick labels and no element was created from it
    ticks = " ".join(page.locator(".js-plotly-plot .xtick text").all_text_contents())
    assert "<" in ticks and "img" in ticks and "script" in ticks
    assert page.locator("img[src=x]").count() == 0
    assert page.locator("script:text('alert(2)')").count() == 0
    page.screenshot(path=str(ARTIFACTS / "hostile-tokens.png"), full_page=True)
    assert page.problems == [], page.problems
    ctx.close()


def test_sixty_tokens_stay_legible(browser, server):
    prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 6)
    ctx, page = new_page(browser, server, width=1600, height=1400)
    page.goto(f"{server}/?prompt={quote(prompt)}")
    settled(page)
    expect(page.get_by_text("which predicts")).to_be_visible()
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "graph-60-tokens.png"), full_page=True)
    assert page.problems == []
    ctx.close()


def test_interventions_render_side_by_side(browser, server):
    ctx, page = new_page(browser, server, width=1500, height=1300)
    edits = "&".join(f"edit=head:20.{h}:zero" for h in range(9))
    page.goto(f"{server}/interpretation?prompt={quote(PROMPT)}&{edits}")
    settled(page)
    page.get_by_role("tab", name="Intervene").click()
    expect(page.get_by_text("Graph with the edits")).to_be_visible()
    expect(page.get_by_text("probability of ␣Paris")).to_be_visible()
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "interventions.png"), full_page=True)
    assert page.problems == []
    ctx.close()


def test_compare_page_from_a_link(browser, server):
    ctx, page = new_page(browser, server, width=1500, height=1300)
    page.goto(f"{server}/compare?prompt={quote(PROMPT)}&compare={quote('The capital of Italy is')}")
    settled(page)
    expect(page.get_by_text("Edges whose contribution changed most")).to_be_visible()
    expect(page.get_by_text("predicts ␣Rome")).to_be_visible()
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)
    assert page.problems == []
    ctx.close()


def test_dataset_page_from_a_link(browser, server, tmp_path):
    from lmtt import batch
    from lmtt.loading import load_model

    out = tmp_path / "batch"
    prompts = ["The capital of France is", "The capital of Italy is", "The capital of Germany is"]
    batch.run_batch(load_model(), prompts, out)
    ctx, page = new_page(browser, server, width=1500, height=1200)
    page.goto(f"{server}/dataset?dataset={quote(str(out))}&head=23.4")
    settled(page)
    expect(page.get_by_text("3 prompts.")).to_be_visible()
    expect(page.get_by_text("Layer 23, head 4: the prompts where it mattered most")).to_be_visible()
    expect(page.locator(".js-plotly-plot .heatmaplayer").first).to_be_visible()
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "dataset.png"), full_page=True)
    assert page.problems == []
    ctx.close()


def test_generate_then_download_the_graph(browser, server, tmp_path):
    ctx, page = new_page(browser, server, width=1500, height=1300)
    page.goto(f"{server}/?prompt={quote(PROMPT)}")
    settled(page)
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("Generate a continuation").click()
    sidebar.get_by_role("button", name="Generate and analyse").click()
    expect(sidebar.get_by_role("textbox", name="Prompt")).to_have_value(
        re.compile(r"^The capital of France is Paris")
    )  # (AppTest checks the ✦)
    settled(page)
    assert "Paris" in page.url
    page.get_by_text("Download this view").click()
    with page.expect_download() as info:
        page.get_by_role("button", name="graph.json").click()
    path = tmp_path / "graph.json"
    info.value.save_as(path)
    data = json.loads(path.read_text())
    assert data["tokens"][:6] == ["The", " capital", " of", " France", " is", " Paris"] and data["edges"]
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "generate-download.png"), full_page=True)
    assert page.problems == []
    ctx.close()
