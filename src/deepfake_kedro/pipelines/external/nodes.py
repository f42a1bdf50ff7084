"""Nodes of the external pipeline: thin adapters from the catalog to ``deepfake_kedro.external``."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from deepfake_kedro.datasets import FinishedExperiments
from deepfake_kedro.external import (
    COPY_COLUMNS,
    SCORE_COLUMNS,
    detect_set_faces,
    external_figure,
    external_index,
    external_sets,
    external_table,
    leave_out_study_copies,
    open_tree,
    score_images,
    set_metrics,
    shown_table,
)
from deepfake_kedro.model_package import build_package, package_threshold
from deepfake_kedro.report_sections import ReportSection
from deepfake_kedro.robustness import full_models
from deepfake_kedro.serialization import json_safe
from deepfake_kedro.study import phase4_slots

logger = logging.getLogger(__name__)


def _models(evaluation: dict[str, Any], phase4: dict[str, Any]) -> list[str]:
    slots = phase4_slots(phase4["ranking"]["top_k"], phase4["scaling"])
    return full_models(evaluation.get("external_models"), [slot.name for slot in slots if slot.full],
                       key="evaluation.external_models")


def score_external_sets(
    finished_experiments: FinishedExperiments, image_index: pd.DataFrame, evaluation: dict[str, Any],
    data: dict[str, Any], preprocessing: dict[str, Any], phase4: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every image of every external set, scored by every final model's fold ensemble.

    Args:
        finished_experiments: The study's finished experiments.
        image_index: The study's image index: a set's file byte-identical to one of its images is left out.
        evaluation: ``external`` (the sets) and ``external_models`` (null: every ``phase4.top<k>_full``).
        data: ``data.sources``, the sets' default sources.
        preprocessing: ``min_image_size``, ``image_sizes`` and ``near_duplicates`` (the sets' images grouped as the
            study's are), and ``face_detection`` (MTCNN on the sets' images for face-crop models).
        phase4: ``ranking.top_k`` and ``scaling``, which name the full runs.

    Returns:
        One row per set, model and image (``external.SCORE_COLUMNS``), empty when no set is configured; and the
        left-out copies of the study's images (``set``, ``path``, ``study_path``).

    Raises:
        ValueError: Every usable image of a set is a copy of one of the study's.
    """
    sets = external_sets(evaluation.get("external"), data["sources"])
    if not sets:
        logger.warning("evaluation.external lists no external set: nothing to score")
        return pd.DataFrame(columns=SCORE_COLUMNS), pd.DataFrame(columns=COPY_COLUMNS)
    packages = {}
    for label in _models(evaluation, phase4):
        resolved, store, metrics, fold_metrics = finished_experiments.load(label)
        packages[label] = build_package(resolved, store, len(fold_metrics), metrics, fold_metrics)
    detection = preprocessing["face_detection"]
    parts, copies = [], []
    for external in sets:
        tree = open_tree(external)
        # Grouped as the study's images are: basenames joined with their near-duplicates.
        index = external_index(tree, external, preprocessing.get("min_image_size", 32),
                               hash_size=max(preprocessing["image_sizes"]),
                               max_distance=preprocessing["near_duplicates"]["max_distance"])
        index, copied = leave_out_study_copies(index, image_index, external.name)
        copies.append(copied)
        faces = {}
        if any(package.needs_faces for package in packages.values()):
            faces = detect_set_faces(tree, index["path"].tolist(), detection)
        for label, package in packages.items():
            logger.info("%s on external set %r: %d images", label, external.name, len(index))
            scores = score_images(package, index, tree, faces, detection.get("device"))
            parts.append(scores.assign(set=external.name, model=label)[SCORE_COLUMNS])
    return pd.concat(parts, ignore_index=True), pd.concat(copies, ignore_index=True)


def summarize_external(
    scores: pd.DataFrame, study_copies: pd.DataFrame, finished_experiments: FinishedExperiments,
    evaluation: dict[str, Any], data: dict[str, Any],
) -> tuple[dict[str, dict], pd.DataFrame, Figure, ReportSection]:
    """Per set: metrics.json (every model's metrics with grouped CIs); over all sets: the table, figure and slide.

    Args:
        scores: ``score_external_sets``'s rows.
        study_copies: The sets' images left out as copies of the study's (counted in each set's metrics.json).
        finished_experiments: For each model's cross-validated AUC (its metrics.json) and threshold.
        evaluation: ``external`` and ``n_bootstrap``.
        data: ``data.sources``.

    Returns:
        Set name -> its metrics.json content, the table (external.csv), the figure and the report section.
    """
    sets = {s.name: s for s in external_sets(evaluation.get("external"), data["sources"])}
    results: dict[str, dict[str, Any]] = {}
    cv, fingerprints = {}, {}
    for (name, model), part in scores.groupby(["set", "model"], sort=False):
        resolved, _, metrics, fold_metrics = finished_experiments.load(model)
        cv[model], fingerprints[model] = metrics, resolved.fingerprint
        # The package's own threshold, which made the scores' `fake` column.
        threshold = package_threshold(resolved, metrics, fold_metrics)[1]["value"]
        results.setdefault(name, {})[model] = set_metrics(part, sets[name].real_sources, threshold,
                                                          evaluation.get("n_bootstrap", 1000))
    table = external_table(results, cv)
    left_out = study_copies.groupby("set").size() if len(study_copies) else pd.Series(dtype=int)
    documents = {name: json_safe({"set": name, "root": str(sets[name].root), "sources": sets[name].sources,
                                  "left_out_study_copies": int(left_out.get(name, 0)), "models": models})
                 for name, models in results.items()}
    caption = ("Each final model (mean calibrated p(fake) of its fold models, at its package threshold) on labelled "
               "image sets the study never saw. External AUC [grouped bootstrap 95% CI] beside the cross-validated AUC "
               "[95% t-interval over folds]; 'in CV CI': the external AUC lies in that interval.")
    if len(left_out):
        caption += (" Left out as byte-identical copies of the study's images: "
                    + ", ".join(f"{count} in {name}" for name, count in left_out.items()) + ".")
    shown = shown_table(table) if len(table) else None
    # One figure for the catalog and the slide: the section renders it now, the catalog saves it at its own dpi.
    figure = external_figure(table)
    # Every model passed FinishedExperiments' check, so all were evaluated by the current rule.
    rules = sorted({metrics.get("threshold_rule", "youden") for metrics in cv.values()})
    section = ReportSection.with_figure("external", "Cross-dataset: external test sets", caption,
                                        figure if len(table) else None, shown, fingerprints,
                                        rules[0] if len(rules) == 1 else None)
    return documents, table, figure, section
