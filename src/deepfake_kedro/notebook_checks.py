"""What the notebooks show before their tables: whether those tables still describe the current parameters and images.

A notebook reads each phase's stored results from the catalog (``kedro jupyter``), as the phase last wrote them.
After a parameter change, or images added, removed or replaced, until the phase runs again, those results describe
the old parameters or images; a ``kedro run`` that reads them is refused (``hooks.CurrentParametersHook``,
``hooks.UnchangedImagesHook``), and a notebook says so at its top instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from deepfake_kedro.commands import kedro_run

READER = "This notebook"


def out_of_date_note(catalog: Any, phases: Iterable[str] = (), sections: Iterable[str] = ()) -> str | None:
    """Why the results a notebook shows no longer match the current parameters or images, as Markdown (or None).

    Args:
        catalog: The notebook's Kedro catalog (its hooks have given it the current parameters' resolutions).
        phases: Phases whose experiments' results the notebook shows (``phase1``, ``generalisation``).
        sections: Report sections whose tables it shows (``robustness``, ``external``, ``attribution``): each
            is out of date once a model it scored resolves to another config, or its thresholds to another rule.
    """
    from deepfake_kedro.hooks import changed_images_message, changed_raw_images

    parts = []
    if found := changed_raw_images(catalog):
        parts.append(changed_images_message(*found, READER))
    finished = catalog.load("finished_experiments")
    message = finished.stale_message(finished.phase_labels(phases), READER)
    if message:
        head, *problems, rerun = message.splitlines()
        parts.append("\n".join([head, "", *(line.strip() for line in problems), "", rerun]))
    wanted = set(sections)
    for section in catalog.load("report_sections") if wanted else []:
        if section.left_out and section.name in wanted:
            changes = [f"- {row['experiment']}: {row['changed since the section was made']}"
                       for row in section.table.to_dict("records")]
            # A model trained otherwise, or thresholds of another rule (the external sets' accuracy).
            parts.append("\n".join([f"The {section.name} results were made under other parameters than the "
                                    "current ones:", "", *changes, "",
                                    f"Run {kedro_run(f'--pipelines {section.name}')} to make them again."]))
    return "\n\n".join(parts) or None


def show_if_out_of_date(catalog: Any, phases: Iterable[str] = (), sections: Iterable[str] = ()) -> str | None:
    """Shows ``out_of_date_note`` as a warning at the notebook's top, and returns it (None: nothing shown)."""
    note = out_of_date_note(catalog, phases, sections)
    if note:
        from IPython.display import Markdown, display

        display(Markdown("> **Out of date.** " + note.replace("\n", "\n> ")))
    return note
