"""The report in a real browser: headless Chromium opens ``index.html`` from a ``file://``
URL, every thumbnail and plot decodes, and nothing is logged as an error."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from classifiers.html import build_page, write_page
from classifiers.html.screenshot import CHROMIUM, chromium, screenshot
from tests.classifiers.test_html_report import OLD, make_report_inputs

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason=f"{CHROMIUM} is absent: install Debian's chromium (CI's .ci/run does)",
)

# Whether each <img> finished loading with pixels: a broken data URI has naturalWidth 0.
DECODED = "Array.from(document.images, image => image.complete && image.naturalWidth > 0)"


@pytest.fixture
def page_file(tmp_path: Path) -> Path:
    path = tmp_path / "reports" / "index.html"
    write_page(path, build_page(make_report_inputs(tmp_path), [OLD]))
    return path


def test_page_loads_with_every_image_decoded_and_no_errors(page_file: Path) -> None:
    errors: list[str] = []
    with chromium() as browser:
        tab = browser.new_page()
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda error: errors.append(str(error)))
        response = tab.goto(page_file.as_uri(), wait_until="load")
        decoded = tab.evaluate(DECODED)
        title = tab.title()
    assert response is not None and response.ok
    assert title == "shapes: heads on stored codes"
    assert len(decoded) > 20 and all(decoded), decoded
    assert errors == []


def test_screenshot_is_a_png_of_the_viewport(page_file: Path, tmp_path: Path) -> None:
    png = tmp_path / "docs" / "report.png"
    screenshot(page_file, png, width=800, height=600)
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (800, 600)
