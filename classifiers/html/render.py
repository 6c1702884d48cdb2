"""The page as HTML, from one jinja2 template with autoescaping on, written atomically."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jinja2

from classifiers.html.page import Page
from classifiers.html.thumbnails import THUMB_SIDE
from features.files import atomic_open

__all__ = ["number", "percent", "render", "write_page"]


def number(value: Any, spec: str = ".3f") -> str:
    """A figure for the page: ``n/a`` for a missing or non-finite value, never ``nan``."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return format(value, spec)


def percent(value: Any) -> str:
    """A fraction in [0, 1] as a percentage, ``n/a`` when it is missing or not finite."""
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}\u00a0%"


_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("classifiers.html", "templates"),
    autoescape=True,  # labels and paths come from folder names: never trust them as HTML
    undefined=jinja2.StrictUndefined,  # a misspelt field fails the render, not the reader
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_ENVIRONMENT.filters.update(number=number, percent=percent)


def render(page: Page) -> str:
    return _ENVIRONMENT.get_template("index.html.j2").render(page=page, side=THUMB_SIDE)


def write_page(path: Path, page: Page) -> int:
    """Write the page whole or not at all; returns its size in bytes."""
    data = render(page).encode()
    with atomic_open(path, "wb") as stream:
        stream.write(data)
    return len(data)
