"""The report in a real browser: headless Chromium (Debian's package) driven by Playwright.

Skips where either is missing; CI installs both and sets POISE_REQUIRE_CHROMIUM=1, so there it runs."""

import os
import shutil

import pytest

from poise.report.html import write_report
from poise.report.view import RunView
from tests.report import fake_run

CHROMIUM = os.environ.get("POISE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

if not (CHROMIUM and sync_playwright):
    if os.environ.get("POISE_REQUIRE_CHROMIUM"):
        pytest.fail(f"POISE_REQUIRE_CHROMIUM is set but chromium ({CHROMIUM}) or playwright "
                    f"({sync_playwright is not None}) is missing: apt-get install chromium; pip install playwright",
                    pytrace=False)
    pytestmark = pytest.mark.skip(reason="needs chromium (apt-get install chromium) and playwright (pip install "
                                         "playwright)")


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _open(browser, path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    seen = {"console": [], "errors": [], "requests": [], "failed": [], "dialogs": []}
    page.on("console", lambda m: seen["console"].append((m.type, m.text)))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("requestfailed", lambda r: seen["failed"].append(r.url))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    return page, seen


def _ink(png_path) -> float:
    """Share of pixels that are not (near) white: 0 for a blank picture."""
    import matplotlib.image as mpimg
    img = mpimg.imread(png_path)[..., :3]
    return float((img.min(axis=2) < 0.9).mean())


@pytest.mark.parametrize("which", ["fake", "shipped"])
def test_report_renders_offline_with_no_console_errors(browser, tmp_path, which):
    run = fake_run.build(tmp_path / "run") if which == "fake" else fake_run.shipped(tmp_path / "run")
    view = RunView.load(run)
    report = write_report(view, tmp_path / "report.html")
    page, seen = _open(browser, report)
    try:
        assert seen["errors"] == [] and seen["dialogs"] == []  # the hostile <script> name never ran
        assert [m for m in seen["console"] if m[0] in ("error", "warning")] == []
        assert seen["requests"] == [report.resolve().as_uri()] and seen["failed"] == []  # the page, nothing else

        nodes = page.locator("#tree .node")
        assert nodes.count() == len(view.candidates)
        tree_box = page.locator("#tree").bounding_box()
        for i in range(nodes.count()):
            box = nodes.nth(i).bounding_box()
            assert box and box["width"] > 10 and box["height"] > 10
            assert tree_box["x"] <= box["x"] and box["x"] + box["width"] <= tree_box["x"] + tree_box["width"] + 1
        rows = page.locator("#leaderboard tbody tr")
        assert rows.count() == len(view.leaderboard())
        best = view.leaderboard()[0]
        assert f"#{best.id} {best.name}" in rows.nth(0).inner_text()
        assert rows.nth(0).is_visible()

        page.locator("#tree").screenshot(path=str(tmp_path / "tree.png"))
        page.locator("#leaderboard").screenshot(path=str(tmp_path / "leaderboard.png"))
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        assert _ink(tmp_path / "tree.png") > 0.01 and _ink(tmp_path / "leaderboard.png") > 0.02

        # the tree's colours are the scores': the best node is drawn in a different colour than the worst
        worst = view.leaderboard()[-1]
        fill = lambda c: page.locator(f"#tree .node[data-id='{c.id}'] circle").get_attribute("fill")
        assert fill(best) != fill(worst)

        # a node is a link to its candidate's section, which opens on arrival
        target = view.leaderboard()[-1]
        assert not page.locator(f"#sec-{target.id}").evaluate("d => d.open")
        page.locator(f"#tree .node[data-id='{target.id}']").click()
        page.wait_for_function(f"document.getElementById('sec-{target.id}').open")
        assert page.locator(f"#cand-{target.id} img.curves").is_visible()
        img = page.locator(f"#cand-{target.id} img.curves").evaluate("i => [i.complete, i.naturalWidth]")
        assert img[0] and img[1] > 300  # the embedded plot decoded
    finally:
        page.close()
