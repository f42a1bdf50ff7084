"""Report sections written by pipelines outside the study's default run (robustness, external sets, ...).

Each such pipeline saves one ``ReportSection`` (a title, a caption, a table and/or a figure) through
``datasets.ReportSectionDataset``; the reporting pipeline reads every section present through
``datasets.ReportSectionsDataset`` and adds its slides before the conclusions. So
``kedro run --pipelines robustness`` followed by ``kedro run --pipelines reporting`` puts the robustness slide
in report.pdf, and a study that never ran robustness has no such slide.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from deepfake_kedro.reporting import figure_pixels, image_slide, table_slide

SECTION_ORDER = ("demo_check", "external", "robustness", "generalisation", "attribution")
"""Slide order of the known sections; any other section follows them, by name."""
CAPTION_WIDTH = 150
"""Characters per caption line on a slide."""


@dataclass(frozen=True, eq=False)
class ReportSection:
    """What one pipeline contributes to report.pdf.

    Attributes:
        name: The section's key (``robustness``, ``external``, ...): its folder and its place in the deck.
        title: Slide title.
        caption: One or two sentences under the table / figure: what is measured and how to read it.
        table: A table slide (numbers are rounded for reading), or None.
        image: A figure slide as RGB pixels (``reporting.figure_pixels``), or None.
        experiments: ``<phase>.<experiment>`` (or an attribution model, ``attribution.<name>``) -> fingerprint of
            each experiment whose results it shows; the report leaves the section out once one of them has
            changed (``out_of_date``).
        threshold_rule: The ``evaluation.threshold`` rule of the thresholds its numbers were taken at (the
            external sets' accuracy at each package threshold), or None when it applies none; the report leaves
            the section out once the rule is another.
        left_out: True for the slide that stands in for a section left out as out of date.
    """

    name: str
    title: str
    caption: str
    table: pd.DataFrame | None = None
    image: np.ndarray | None = None
    experiments: Mapping[str, str] = field(default_factory=dict)
    threshold_rule: str | None = None
    left_out: bool = False

    @classmethod
    def with_figure(cls, name: str, title: str, caption: str, figure: Figure | None = None,
                    table: pd.DataFrame | None = None, experiments: Mapping[str, str] | None = None,
                    threshold_rule: str | None = None) -> ReportSection:
        """A section whose figure is rendered to pixels now (closed to pyplot; it can still be saved)."""
        return cls(name, title, caption, table, figure_pixels(figure) if figure is not None else None,
                   dict(experiments or {}), threshold_rule)


def out_of_date(section: ReportSection, changed: Mapping[str, tuple[str, Sequence[str]]], rerun: str) -> ReportSection:
    """The slide that stands in for ``section`` once experiments it shows have changed since it was made.

    Args:
        section: The section as its pipeline wrote it.
        changed: Each changed experiment -> the fingerprint the current parameters resolve it to, and its
            ``key: old -> new`` changes (empty when the old config is no longer stored; ``evaluation.threshold``
            when only the threshold rule changed).
        rerun: The ``kedro run`` that writes the section again.
    """
    table = pd.DataFrame([{"experiment": label, "changed since the section was made": "; ".join(keys) or "?",
                           "config (then -> now)": f"{section.experiments[label]} -> {now}"}
                          for label, (now, keys) in changed.items()])
    caption = (f"Left out: this section shows {', '.join(changed)} as trained and evaluated before the current "
               f"parameters changed them, so its numbers no longer describe the study's models. Run {rerun}, then "
               "the report again, to bring it back.")
    return ReportSection(section.name, f"{section.title}: left out, out of date", caption, table,
                         experiments=section.experiments, threshold_rule=section.threshold_rule, left_out=True)


def section_slides(section: ReportSection) -> list[Figure]:
    """The section's slides: its table, then its figure (each with the caption)."""
    slides = []
    # Figure slides do not wrap their note; long captions would run off the page.
    caption = "\n".join(textwrap.fill(line, CAPTION_WIDTH) for line in section.caption.splitlines())
    if section.table is not None and len(section.table):
        slides.append(table_slide(section.title, section.table, caption))
    if section.image is not None:
        title = section.title if not slides else f"{section.title} (figure)"
        slides.append(image_slide(title, section.image, caption))
    return slides


def ordered(sections: Iterable[ReportSection]) -> list[ReportSection]:
    """Sections in ``SECTION_ORDER``, unknown names after the known ones, alphabetically."""
    rank = {name: i for i, name in enumerate(SECTION_ORDER)}
    return sorted(sections, key=lambda s: (rank.get(s.name, len(rank)), s.name))
