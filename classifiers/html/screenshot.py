"""Headless Chromium for the page: the browser test opens it, the docs' screenshot is taken
with it. Needs the ``playwright`` package (a dev dependency) and Debian's ``chromium``.

``python -m classifiers.html.screenshot reports/index.html docs/report.png``
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from features.errors import UserError
from features.files import atomic_path

if TYPE_CHECKING:
    from playwright.sync_api import Browser

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "chromium", "screenshot"]

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; playwright's own download is not used
# No sandbox (containers lack user namespaces), no GPU, and nothing that phones home.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed on exit."""
    if not CHROMIUM.is_file():
        raise UserError(
            f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        raise UserError("playwright is not installed: pip install -e '.[dev]'") from error
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


def screenshot(html: Path, png: Path, width: int = 1200, height: int = 900) -> None:
    """A PNG of the top of the page at ``html``, as a reader first sees it."""
    with chromium() as browser:
        tab = browser.new_page(viewport={"width": width, "height": height})
        tab.goto(Path(html).resolve().as_uri(), wait_until="load")
        with atomic_path(Path(png)) as tmp:
            tab.screenshot(path=str(tmp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("html", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args()
    screenshot(args.html, args.png, args.width, args.height)


if __name__ == "__main__":
    main()
