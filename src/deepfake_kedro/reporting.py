"""The study's final outputs: one table over every phase, detailed results, backbone benchmark, slides.

Every number on a slide is read from the tables passed in (the catalog's data), never typed by hand.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deepfake_kedro.commands import kedro_run
from deepfake_kedro.comparison import format_ci
from deepfake_kedro.costs import inference_throughput, model_cost
from deepfake_kedro.figures import draw_offscreen
from deepfake_kedro.models import BACKBONES

draw_offscreen()

SLIDE_SIZE = (13.33, 7.5)  # 16:9


def model_comparison(comparisons: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Every experiment of every phase in one table (``phase`` first), every metric as mean, std, CI."""
    combined = pd.concat(list(comparisons.values()), ignore_index=True)
    phase = pd.Series(np.repeat(list(comparisons), [len(table) for table in comparisons.values()]), name="phase")
    # Joined, not inserted: a comparison read from CSV is one block per column, and inserting into it warns.
    return pd.concat([phase, combined], axis=1)


def detailed_results(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per experiment: fingerprint, resolved config, per-fold metrics (per source included), summaries."""
    detailed: dict[str, Any] = {}
    for key, summary in summaries.items():
        phase = summary.get("phase", key.split(".")[0])
        detailed.setdefault(phase, {})[summary.get("experiment", key)] = {
            "namespace": key, "fingerprint": summary["fingerprint"], "config": summary["config"],
            "folds": summary["folds"], "metrics": summary["metrics"], "pooled": summary.get("pooled", {}),
        }
    return detailed


ATTENTION_COLUMNS = frozenset({"cam_mass_face", "face_area_share", "cam_flat"})
"""What ``attention_summary`` reads from every explained image."""


def explained_images(explained: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Experiments' Grad-CAM tables in one, ``experiment`` first; empty tables add nothing.

    Raises:
        KeyError: A table lacks the face-attention columns (an older version wrote it), naming the experiment.
    """
    tables = []
    for key, table in explained.items():
        if table.empty:
            continue
        missing = sorted(ATTENTION_COLUMNS - set(table.columns))
        if missing:
            raise KeyError(f"{key}'s Grad-CAM table (gradcam_examples.csv) lacks {missing}: an older "
                           f"version wrote it; rerun its phase ({kedro_run('--pipelines ' + key.split('.')[0])})")
        tables.append(pd.concat([pd.Series(key, index=table.index, name="experiment"), table], axis=1))
    if not tables:
        return pd.DataFrame(columns=["experiment", *sorted(ATTENTION_COLUMNS)])
    return pd.concat(tables, ignore_index=True)


def attention_summary(
    explained: pd.DataFrame, summaries: Mapping[str, Mapping[str, Any]] | None = None
) -> pd.DataFrame:
    """Mean share of Grad-CAM mass on the face per experiment: by prediction type, by source and overall.

    Args:
        explained: Explained images (``explain.explanation_table``) of every experiment in one table, ``experiment``
            first (``explained_images``).
        summaries: ``<phase>.<experiment>`` -> its metrics summary, whose ``experiment`` and ``fingerprint`` fill
            the ``name`` and ``fingerprint`` columns (phase 4's keys are slots, its names are experiments').

    Returns:
        One row per experiment: one column per prediction type, one ``source:<name>`` column per source,
        ``all`` (the mean over images with a face and a non-zero CAM), ``face_area`` (the faces' mean share of
        the input: what ``all`` would be without preference), ``n_images`` (explained), ``n_scored`` (the
        images behind ``all``) and ``n_flat`` (all-zero CAMs: the prediction did not move with the image);
        with ``summaries``, ``name`` and ``fingerprint`` after ``experiment``.
    """
    if explained.empty:
        return pd.DataFrame(columns=["experiment", "all", "face_area", "n_images", "n_scored", "n_flat"])
    by_experiment = explained.groupby("experiment", sort=True)
    by_type = explained.groupby(["experiment", "pred_type"])["cam_mass_face"].mean().unstack("pred_type")
    by_source = explained.groupby(["experiment", "source"])["cam_mass_face"].mean().unstack("source")
    scored = explained[explained["cam_mass_face"].notna()].groupby("experiment")
    overall = pd.DataFrame({
        "all": by_experiment["cam_mass_face"].mean(),
        "face_area": scored["face_area_share"].mean(),
        "n_images": by_experiment.size(),
        "n_scored": by_experiment["cam_mass_face"].count(),
        "n_flat": by_experiment["cam_flat"].sum().astype(int),
    })
    types = by_type.reindex(columns=[t for t in ("TP", "TN", "FP", "FN") if t in by_type.columns])
    table = types.join(by_source.add_prefix("source:")).join(overall).reset_index()
    if summaries is None:
        return table
    known = {key: summaries.get(key, {}) for key in table["experiment"]}
    table.insert(1, "name", [known[key].get("experiment", key.split(".", 1)[-1]) for key in table["experiment"]])
    table.insert(2, "fingerprint", [known[key].get("fingerprint") for key in table["experiment"]])
    return table


def model_benchmark(
    image_size: int, batch_size: int = 64, repeats: int = 3, cnn_preset: str = "medium"
) -> pd.DataFrame:
    """Every registered backbone: parameters, GFLOPs (torch's flop counter), inference images/s.

    Args:
        image_size: Input side in pixels.
        batch_size: Images per forward pass for the throughput.
        repeats: Timed passes.
        cnn_preset: SimpleCNN's preset.

    Returns:
        One row per backbone with ``device`` and ``precision`` of the measurement.
    """
    rows = []
    for name, spec in BACKBONES.items():
        cost = model_cost(name, image_size, cnn_preset)
        speed = inference_throughput(name, image_size, batch_size, cnn_preset=cnn_preset, repeats=repeats)
        rows.append({"backbone": name, "timm_name": spec.timm_name or f"(SimpleCNN {cnn_preset} preset, this project)",
                     "params": cost["params"], "params_m": cost["params_m"], "gflops": cost["gflops"],
                     "image_size": image_size, "batch_size": batch_size, **speed})
    return pd.DataFrame(rows)


# Slides ---------------------------------------------------------------------------------------

def _slide(title: str) -> tuple[Figure, Any]:
    # Outside pyplot's registry: a deck holds some 30 slides until the PDF is written, and pyplot would warn
    # about (and keep) every one of them.
    figure = Figure(figsize=SLIDE_SIZE)
    FigureCanvasAgg(figure)
    figure.text(0.04, 0.93, title, fontsize=22, weight="bold", va="top")
    return figure, figure


def text_slide(title: str, lines: Sequence[str]) -> Figure:
    """A slide of bullet points, wrapped to the slide's width."""
    figure, _ = _slide(title)
    y = 0.84
    for line in lines:
        for number, part in enumerate(textwrap.wrap(line, 120) or [""]):
            figure.text(0.05, y, ("• " if number == 0 and line else "  ") + part, fontsize=13, va="top")
            y -= 0.045
        y -= 0.01
    return figure


TABLE_WRAP = 44
"""Characters per line of a table slide's cell; longer text (a demo check's finding) wraps."""


def table_slide(title: str, table: pd.DataFrame, note: str = "", digits: int = 3) -> Figure:
    """A slide holding one table (numbers rounded for reading) and a note under it."""
    figure, _ = _slide(title)
    ax = figure.add_axes((0.03, 0.1, 0.94, 0.75))
    ax.axis("off")
    shown = table.copy()
    for column in shown.select_dtypes("number").columns:
        values = shown[column].dropna()
        places = 0 if len(values) and (values == values.round()).all() else digits  # counts and sizes stay whole
        shown[column] = shown[column].map(lambda v, p=places: f"{v:.{p}f}" if pd.notna(v) else "")
    # Long text wraps inside its cell, and columns get the width their text needs (equal widths overlapped),
    # plus two characters of margin so that a short column does not touch its borders in a wide table.
    wrapped = shown.astype(str).map(lambda text: "\n".join(textwrap.wrap(text, TABLE_WRAP)) or text)
    widths = [2 + max(len(str(column)), *(len(line) for text in wrapped[column] for line in text.split("\n")))
              for column in wrapped.columns]
    cells = ax.table(cellText=wrapped.values, colLabels=list(shown.columns), loc="upper center",
                     cellLoc="center", colWidths=[width / sum(widths) for width in widths])
    cells.auto_set_font_size(False)
    cells.set_fontsize(9 if len(shown) < 14 else 7)
    cells.scale(1, 1.25)
    lines = [max(text.count("\n") + 1 for text in row) for row in wrapped.values]
    for (row, _), cell in cells.get_celld().items():
        if row > 0:
            cell.set_height(cell.get_height() * lines[row - 1])
    if note:
        figure.text(0.04, 0.04, note, fontsize=11, va="bottom", wrap=True)
    return figure


def image_slide(title: str, image: np.ndarray, note: str = "") -> Figure:
    """A slide showing a rendered figure (as pixels) with a note."""
    figure, _ = _slide(title)
    ax = figure.add_axes((0.03, 0.1, 0.94, 0.76))
    ax.imshow(image)
    ax.axis("off")
    if note:
        figure.text(0.04, 0.04, note, fontsize=11, va="bottom")
    return figure


def figure_pixels(figure: Figure, dpi: int = 90) -> np.ndarray:
    """A matplotlib figure rendered to RGB pixels (to place it on a slide), then closed."""
    figure.set_dpi(dpi)
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return pixels


def auc_text(row: Mapping[str, Any]) -> str:
    """``0.912 [0.870, 0.954]``: mean AUC and its 95% interval over folds."""
    return format_ci(row, "auc")


HEADLINE_COLUMNS = {
    "auc": "auc",
    "accuracy": "accuracy (p ≥ 0.5)",
    "f1": "F1 (p ≥ 0.5)",
    "accuracy_at_threshold": "accuracy (val threshold)",
    "eer": "eer",
    "brier": "Brier",
}
"""Metric -> its slide header. At 0.5 a model that ranks well but is not calibrated (little data, few epochs) can
score accuracy 0.25 beside AUC 0.9; the accuracy at each fold's validation-chosen threshold sits beside it, and
the Brier score (0.25 for a constant 0.5) says how far the probabilities are from calibrated."""


def headline_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """The columns a slide shows: experiment, backbone, size, then ``HEADLINE_COLUMNS`` present, with CIs."""
    table = comparison[["experiment", "backbone", "image_size"]].copy()
    for metric, header in HEADLINE_COLUMNS.items():
        if f"{metric}_mean" in comparison:
            table[header] = [format_ci(r, metric) for _, r in comparison.iterrows()]
    return table


def significant_findings(tests: pd.DataFrame, metric: str = "auc") -> list[str]:
    """One sentence per compared pair on ``metric``: difference, interval, Holm p, verdict."""
    lines = []
    for row in tests[tests["metric"] == metric].itertuples():
        verdict = "significant" if row.p_holm < 0.05 else "not significant"
        lines.append(f"{row.question}: Δ{metric.upper()} {row.diff_mean:+.3f} [{row.diff_ci_low:+.3f}, "
                     f"{row.diff_ci_high:+.3f}], Holm p = {row.p_holm:.3g} ({verdict})")
    return lines
