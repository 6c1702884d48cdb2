"""``reports/index.html``: one static page to look at the results and the data through.

Readers (:mod:`~classifiers.html.gather`, :mod:`~classifiers.html.audit`) take what the
stages wrote, :mod:`~classifiers.html.thumbnails` embeds the few images shown,
:mod:`~classifiers.html.page` wires them, and :mod:`~classifiers.html.render` fills the
jinja2 template. The page is one file with no script and no external resource.
"""

from classifiers.html.gather import Sources
from classifiers.html.page import Page, build_page
from classifiers.html.render import render, write_page

__all__ = ["Page", "Sources", "build_page", "render", "write_page"]
