"""One page's data, wired from the readers: the only place that knows every input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from classifiers.html.audit import Audit, read_audit
from classifiers.html.gather import (
    HeadReport,
    Images,
    Plot,
    Sources,
    Standing,
    read_heads,
    read_plots,
    read_standings,
    read_summary,
)

__all__ = ["RANDOM_WEIGHTS_WARNING", "Page", "build_page"]

RANDOM_WEIGHTS_WARNING = (
    "codes from RANDOM weights: these figures check the pipeline, "
    "they say nothing about transfer learning"
)


@dataclass(frozen=True)
class Page:
    """What ``index.html.j2`` renders; ``audit`` is None when no audit has run."""

    title: str
    warning: str  # empty unless the codes come from random weights
    standings: list[Standing]
    plots: list[Plot]
    heads: list[HeadReport]
    audit: Audit | None


def build_page(sources: Sources, extra_heads: Sequence[str] = ()) -> Page:
    """The page for the best head plus ``extra_heads`` (``<head>-<feature set>`` names)."""
    summary = read_summary(sources.summary)
    images = Images(sources.manifest, sources.data)
    return Page(
        title=f"{sources.data.name}: heads on stored codes",
        warning=RANDOM_WEIGHTS_WARNING if summary.get("random_weights") else "",
        standings=read_standings(summary),
        plots=read_plots(sources.plots),
        heads=read_heads(summary, extra_heads, sources, images),
        audit=read_audit(sources.audit, images),
    )
