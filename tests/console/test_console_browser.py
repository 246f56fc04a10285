"""The console in a real browser: Playwright drives Debian's chromium (headless, nothing
downloaded) through sign-in, a toggle, an invalid and a valid save, a plugin resource and
sign-out, checks labels and contrast, and takes the README's screenshots.

CI (CI=true) fails when chromium or Playwright is missing; elsewhere the test skips, saying
what to install. CONSOLE_SCREENSHOTS=1 writes the screenshots into docs/ (committed), else
they go to the test's temp dir."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import REPO
from ..serverutil import KEY, RunningServer

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - only without the test extra
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STEP_MS = 15_000  # any one wait of the browser
BUDGET_S = 180  # the whole walk-through
WIDTHS = (1280, 400)
RESOURCE_LINK = "Simple C: simple-c status page"

# WCAG 2 contrast of every element's own text against the background it sits on.
CONTRAST_JS = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || c[3] > 0) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const el of document.body.querySelectorAll('*')) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length) continue;
    const a = lum(rgb(getComputedStyle(el).color)), b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const text = el.textContent.trim().slice(0, 30);
    if (ratio < 4.5) low.push(`${el.tagName} "${text}" ${ratio.toFixed(2)}`);
  }
  return low;
}"""
# Controls without a label (a <label for>, or a name from their content for buttons).
UNLABELLED_JS = """() => [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button')]
  .filter((el) => !(el.labels && el.labels.length) && !el.textContent.trim())
  .map((el) => el.outerHTML.slice(0, 80))"""


@pytest.fixture
def browser() -> Iterator[Browser]:
    missing = None
    if sync_playwright is None:
        missing = "the Python package playwright (pip install -e '.[test]')"
    elif not Path(CHROMIUM).is_file():
        missing = "chromium (apt-get install -y chromium)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the console's browser test needs {missing}; .ci/run installs it")
        pytest.skip(f"needs {missing}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def _shots_dir(tmp_path: Path) -> Path:
    return REPO / "docs" if os.environ.get("CONSOLE_SCREENSHOTS") == "1" else tmp_path


def _screenshots(
    page: Page, name: str, out: Path, prepare: Callable[[Page], None] | None = None
) -> None:
    """The page at each width, each in a page of its own: a resized page does not repaint
    its (out-of-process, sandboxed) viewer frame in headless chromium."""
    for width in WIDTHS:
        shot = page.context.new_page()
        shot.set_default_timeout(STEP_MS)
        try:
            shot.set_viewport_size({"width": width, "height": 900})
            shot.goto(page.url)
            if prepare is not None:
                prepare(shot)
            shot.screenshot(path=str(out / f"console-{name}-{width}.png"), full_page=True)
        finally:
            shot.close()


def _refuse_abc(page: Page) -> None:
    page.get_by_label("retries (integer)").fill("abc")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator(".field.invalid .error")).to_have_text("expected an integer, got 'abc'")


def _open_resource(page: Page) -> None:
    page.get_by_role("link", name=RESOURCE_LINK).click()
    expect(page.frame_locator("iframe[name=viewer]").locator("strong")).to_have_text("fast")


def _accessible(page: Page) -> None:
    assert page.evaluate(UNLABELLED_JS) == []
    low: list[Any] = page.evaluate(CONTRAST_JS)
    assert low == [], low


def test_an_operator_signs_in_toggles_configures_opens_a_resource_and_signs_out(
    console_server: RunningServer, browser: Browser, tmp_path: Path
) -> None:
    started = time.monotonic()
    service = console_server.service
    shots = _shots_dir(tmp_path)
    context = browser.new_context(
        base_url=console_server.base_url, viewport={"width": WIDTHS[0], "height": 900}
    )
    page = context.new_page()
    page.set_default_timeout(STEP_MS)
    try:
        # Sign in with the keyboard: the password field has focus, Enter submits.
        page.goto("/console")
        expect(page).to_have_url(f"{console_server.base_url}/console/sign-in")
        key = page.get_by_label("Management key")
        expect(key).to_have_attribute("type", "password")
        expect(key).to_be_focused()
        _accessible(page)
        page.keyboard.type(KEY)
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Plugins", level=1)).to_be_visible()
        cookie = next(c for c in context.cookies() if c["name"] == "cliproxy_console")
        assert cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict"
        _accessible(page)

        # Toggle a plugin from the list, by keyboard, and back.
        card = page.get_by_role("article").filter(has=page.get_by_role("link", name="knobs"))
        card.get_by_role("button", name="Disable knobs").focus()
        page.keyboard.press("Enter")
        expect(card.get_by_role("button", name="Enable knobs")).to_be_visible()
        expect(card.get_by_text("disabled", exact=True)).to_be_visible()
        assert service.config.plugin_entry("knobs").enabled is False
        card.get_by_role("button", name="Enable knobs").click()
        expect(card.get_by_text("serving", exact=True)).to_be_visible()
        assert service.config.plugin_entry("knobs").enabled is True
        _screenshots(page, "plugins", shots)

        # An invalid value: refused beside its field, nothing written.
        before = service.config_path.read_bytes()
        page.get_by_role("link", name="knobs").click()
        expect(page.get_by_role("heading", name="knobs", level=1)).to_be_visible()
        expect(page.get_by_role("img", name="knobs logo")).to_be_visible()
        _refuse_abc(page)
        expect(page.get_by_label("retries (integer)")).to_have_attribute("aria-invalid", "true")
        assert service.config_path.read_bytes() == before
        _accessible(page)
        _screenshots(page, "invalid", shots, _refuse_abc)

        # A valid value on simple-c, then its resource shows the value applied.
        page.goto("/console/plugins/simple-c")
        page.get_by_label("mode (enum)").select_option("fast")
        page.get_by_role("button", name="Save settings").click()
        expect(page.get_by_role("status")).to_contain_text("simple-c reconfigured")
        assert service.config.plugin_entry("simple-c").as_mapping()["mode"] == "fast"
        page.get_by_role("link", name=RESOURCE_LINK).click()
        viewer = page.frame_locator("iframe[name=viewer]")
        expect(viewer.locator("h1")).to_have_text("simple-c")
        expect(viewer.locator("strong")).to_have_text("fast")
        _screenshots(page, "plugin", shots, _open_resource)

        # Sign out: back to sign-in, and the console is closed again.
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_label("Management key")).to_be_visible()
        page.goto("/console")
        expect(page).to_have_url(f"{console_server.base_url}/console/sign-in")
    finally:
        context.close()
    assert time.monotonic() - started < BUDGET_S


def _shot(page: Page, name: str, out: Path, width: int = WIDTHS[0]) -> None:
    """One view at `width`, as it is now (a live page: not reloaded)."""
    page.set_viewport_size({"width": width, "height": 900})
    page.screenshot(path=str(out / f"console-{name}-{width}.png"), full_page=True)


def test_an_operator_installs_from_the_store_watches_metrics_and_reads_the_audit_log(
    views_server: RunningServer, browser: Browser, tmp_path: Path
) -> None:
    started = time.monotonic()
    host = views_server.service.host
    shots = _shots_dir(tmp_path)
    context = browser.new_context(
        base_url=views_server.base_url, viewport={"width": WIDTHS[0], "height": 900}
    )
    page = context.new_page()
    page.set_default_timeout(STEP_MS)
    try:
        page.goto("/console/sign-in")
        page.get_by_label("Management key").fill(KEY)
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Plugins", level=1)).to_be_visible()

        # The store: its plugins, the source that failed, and an install of an older version.
        page.get_by_role("link", name="Store").click()
        expect(page.get_by_role("heading", name="Store", level=1)).to_be_visible()
        expect(page.get_by_text("Sources that could not be read")).to_be_visible()
        card = page.get_by_role("article").filter(has_text="sp, a test plugin")
        card.get_by_label("Version").select_option("1.1.0")
        _accessible(page)
        card.get_by_role("button", name="Install sp").click()
        expect(card.get_by_role("status").filter(has_text="Installed")).to_contain_text(
            "Installed sp 1.1.0"
        )
        expect(card.get_by_text("Installing sp")).to_be_hidden()
        info = host.plugin("sp")
        assert info is not None
        assert info.registered
        page.reload()
        expect(page.get_by_text("update available")).to_be_visible()
        _accessible(page)
        _shot(page, "store", shots)
        page.set_viewport_size({"width": WIDTHS[0], "height": 900})

        # Metrics: the test plugin's calls, and the log tail live.
        for _ in range(3):
            host.call("tp", "echo", {"a": 1})
        page.get_by_role("link", name="Metrics").click()
        row = page.get_by_role("row").filter(has=page.get_by_role("link", name="tp", exact=True))
        expect(row.get_by_role("cell").nth(0)).to_have_text("3")
        expect(page.locator("#log-state")).to_have_text("Live.")
        logging.getLogger("cliproxy_host.tests.browser").warning("a line for the tail")
        expect(page.locator("#log-lines li").last).to_contain_text("a line for the tail")
        host.call("tp", "echo", {})
        # The table refreshes itself (every 5 s) with the new count.
        expect(row.get_by_role("cell").nth(0)).to_have_text("4", timeout=STEP_MS)
        _accessible(page)
        _shot(page, "metrics", shots)
        page.set_viewport_size({"width": WIDTHS[0], "height": 900})

        # The audit log: the console's install, then only sp's entries.
        page.get_by_role("link", name="Audit log").click()
        expect(page.get_by_role("heading", name="Audit log", level=1)).to_be_visible()
        expect(page.get_by_role("cell", name="POST /console/store/sp/install")).to_be_visible()
        page.get_by_label("Plugin", exact=True).fill("sp")
        page.keyboard.press("Enter")
        expect(page.get_by_role("table")).to_contain_text("1 entry for sp")
        _accessible(page)
        _shot(page, "audit", shots)
    finally:
        context.close()
    assert time.monotonic() - started < BUDGET_S
