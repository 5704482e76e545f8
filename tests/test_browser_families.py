"""A researcher's own checkpoint: tiny Gemma-2, Qwen2-MoE and parallel GPT-NeoX models saved to disk, listed in a config.yaml,
opened in Chromium."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from lmtt.tools.serve import streamlit_server
from tests.browser import ARTIFACTS, drawn_nodes  # skips the module where Chromium is missing
from tests.tiny_models import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.browser(group="own-servers")
PROMPT = "w5 w17 w3 w42 w8 w11"  # six tokens of the tiny word-level vocabulary


def save(name: str, directory: Path) -> Path:
    tiny_model(name).save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return directory


def test_a_saved_gemma2_and_a_moe_open_from_config_yaml(browser, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    gemma, moe = save("gemma2", tmp_path / "gemma2"), save("qwen2_moe", tmp_path / "qwen2moe")
    neox = save("gpt_neox_parallel", tmp_path / "neox")
    config = tmp_path / "config.yaml"
    config.write_text(
        "default_model: tiny-gemma2\n"
        "models:\n"
        f"  tiny-gemma2:\n    source: path\n    path: {gemma}\n    dtype: float32\n    device: cpu\n"
        f"  tiny-moe:\n    source: path\n    path: {moe}\n    dtype: float32\n    device: cpu\n"
        f"  tiny-neox-parallel:\n    source: path\n    path: {neox}\n    dtype: float32\n    device: cpu\n"
        "max_prompt_tokens: 64\n"
    )
    with streamlit_server(tmp_path / "server.log", env={"LMTT_CONFIG": str(config)}) as (base, _pid):
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        app = page.locator('[data-testid="stApp"]')
        shots = (
            ("tiny-gemma2", "family-gemma2-graph.png"),
            ("tiny-moe", "family-moe-graph.png"),
            ("tiny-neox-parallel", "family-parallel-graph.png"),
        )
        for model, shot in shots:
            page.goto(f"{base}/?model={model}&prompt={quote(PROMPT)}")
            expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=60_000)
            page.get_by_role("button", name="Run").click()
            expect(page.get_by_text("predicts").first).to_be_visible(timeout=60_000)
            expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=60_000)
            n_layers = 3  # the three tiny configs have 3 layers: (2L + 1) node levels per token, L + 1 for parallel blocks
            levels = n_layers + 1 if model == "tiny-neox-parallel" else 2 * n_layers + 1
            assert drawn_nodes(page) == levels * 6  # every node
            expect(page.locator('[data-testid="stException"]')).to_have_count(0)
            expect(page.get_by_text("does not add up")).to_have_count(0)  # the load-time check passed
            page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
        assert errors == []
        page.close()
