"""What every browser test module imports first: Debian's Chromium, or a loud skip of the module; the artifacts folder.

The `browser` and `server` fixtures live in tests/conftest.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lmtt.serve import CHROMIUM, ROOT

ARTIFACTS = ROOT / "test-artifacts"

if not Path(CHROMIUM).exists():
    message = f"!!! BROWSER TESTS SKIPPED: {CHROMIUM} is missing (apt-get install -y chromium) !!!"
    print(message, file=sys.stderr)
    pytest.skip(message, allow_module_level=True)


def settled(page) -> None:
    """Wait until the app is connected and its script has finished, with no exception shown."""
    from playwright.sync_api import expect

    app = page.locator('[data-testid="stApp"]')
    expect(app).to_have_attribute("data-test-connection-state", "CONNECTED")
    page.wait_for_timeout(300)
    expect(app).to_have_attribute("data-test-script-state", "notRunning")
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)
