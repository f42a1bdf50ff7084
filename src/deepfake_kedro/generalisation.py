"""Train on one fake source, test on each: the S × S transfer matrix, its CIs and the family gap.

One experiment per fake source ``s`` trains on the real sources and ``s`` only, and is evaluated on every
source over the study's outer folds. Cell (s, t) is the AUC of real test images against source-``t`` test
images, scored by the model trained on ``s`` (the per-fold ``pairwise_auc:<t>`` every evaluation records).
Folds are shared by all experiments, so per-fold means of groups of cells are paired across groups: the
diagonal against the off-diagonal, and same-family transfer against cross-family transfer, each tested
with Nadeau-Bengio over folds and Holm across the comparisons, as the phases test experiments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from deepfake_kedro.comparison import pairwise_test_sizes
from deepfake_kedro.config import ConfigError
from deepfake_kedro.metrics import summarize
from deepfake_kedro.stats import holm_adjust, paired_comparison

DIAGONAL, SAME_FAMILY, CROSS_FAMILY = "diagonal", "same_family", "cross_family"
"""How a cell (trained on s, tested on t) relates its two sources."""

COMPARISONS = (
    ("trained-on source beats every other source", "off_diagonal", DIAGONAL),
    ("same-family transfer beats cross-family transfer", CROSS_FAMILY, SAME_FAMILY),
)
"""(question, baseline cells, treatment cells): each a paired test over folds, Holm across them."""


def design(experiments: Mapping[str, Mapping[str, Any]], sources: Mapping[str, str]) -> dict[str, str]:
    """Which experiment trained on which fake source; every fake source needs exactly one.

    Args:
        experiments: Experiment name -> its resolved config (``train_sources``: the real sources and one fake).
        sources: ``data.sources``.

    Returns:
        Fake source -> experiment name, in the order of ``data.sources``.

    Raises:
        ConfigError: Naming ``generalisation.experiments.<name>.train_sources`` (or its ``eval_sources``, which
            must be every source), or the fake source without an experiment.
    """
    fakes = [s for s, kind in sources.items() if kind == "fake"]
    reals = [s for s, kind in sources.items() if kind == "real"]
    trained_on: dict[str, str] = {}
    for name, config in experiments.items():
        chosen = config["train_sources"]
        chosen_fakes = [s for s in (fakes if chosen == "all" else chosen) if s in fakes]
        if len(chosen_fakes) != 1:
            raise ConfigError(f"generalisation.experiments.{name}.train_sources: {chosen!r} holds fake sources "
                              f"{chosen_fakes}; each experiment trains on the real sources and exactly one fake "
                              f"source, e.g. {[*reals, fakes[0]]}")
        evaluated = config.get("eval_sources", "all")
        left_out = [] if evaluated == "all" else [s for s in sources if s not in evaluated]
        if left_out:
            # A cell of the matrix (or the real side of every cell) would be empty, and its tests run without it.
            raise ConfigError(f"generalisation.experiments.{name}.eval_sources: {evaluated!r} leaves out "
                              f"{left_out}; each experiment is tested on every source (eval_sources: all)")
        source = chosen_fakes[0]
        if source in trained_on:
            raise ConfigError(f"generalisation.experiments.{name}.train_sources: {source!r} is also the training "
                              f"source of {trained_on[source]!r}; give each fake source one experiment")
        trained_on[source] = name
    missing = [s for s in fakes if s not in trained_on]
    if missing:
        raise ConfigError(f"generalisation.experiments: no experiment trains on fake source {missing[0]!r}; add "
                          f"gen_{missing[0]} with train_sources {[*reals, missing[0]]} "
                          f"to parameters_generalisation.yml")
    return {s: trained_on[s] for s in fakes}


def fold_aucs(summaries: Mapping[str, Mapping[str, Any]], trained_on: Mapping[str, str]) -> np.ndarray:
    """Per-fold AUC of every cell: ``[trained-on source, tested-on source, fold]``.

    Args:
        summaries: Experiment name -> metrics summary (per-fold records with ``pairwise_auc:<source>``).
        trained_on: Fake source -> experiment (``design``).

    Returns:
        An ``S × S × K`` array, nan where a fold had no image of the tested source.
    """
    fakes = list(trained_on)
    cube = []
    for source in fakes:
        folds = sorted(summaries[trained_on[source]]["folds"], key=lambda f: f["fold"])
        cube.append([[f.get(f"pairwise_auc:{t}", np.nan) for f in folds] for t in fakes])
    return np.asarray(cube, dtype=float)


def cell_test_sizes(summaries: Mapping[str, Mapping[str, Any]], trained_on: Mapping[str, str],
                    sources: Mapping[str, str]) -> np.ndarray:
    """Per-fold test size of every cell: the real test images plus the tested source's.

    A cell's AUC sees only those images, not the whole test fold, so they are its Nadeau-Bengio ``n_test``.

    Args:
        summaries: Experiment name -> metrics summary (per-fold records with ``n:<source>``).
        trained_on: Fake source -> experiment (``design``).
        sources: ``data.sources``.

    Returns:
        An ``S × S × K`` array like ``fold_aucs``, nan where a fold had no image of the tested source.
    """
    fakes = list(trained_on)
    return np.asarray([[pairwise_test_sizes(summaries[trained_on[source]], tested, sources) for tested in fakes]
                       for source in fakes], dtype=float)


def relation(trained: str, tested: str, families: Mapping[str, str]) -> str:
    """``diagonal``, ``same_family`` or ``cross_family``."""
    if trained == tested:
        return DIAGONAL
    return SAME_FAMILY if families[trained] == families[tested] else CROSS_FAMILY


def transfer_matrix(cube: np.ndarray, fakes: Sequence[str], families: Mapping[str, str]) -> pd.DataFrame:
    """One row per cell: mean AUC over folds with its 95% t-interval, as the study reports every metric.

    Args:
        cube: ``fold_aucs``.
        fakes: The fake sources, in the cube's order.
        families: Fake source -> family.

    Returns:
        Columns ``trained_on``, ``tested_on``, ``trained_family``, ``tested_family``, ``relation``,
        ``auc_mean``, ``auc_std``, ``auc_ci_low``, ``auc_ci_high``, ``n_folds``, then ``auc_fold_<k>``.
    """
    rows = []
    for i, trained in enumerate(fakes):
        for j, tested in enumerate(fakes):
            stats = summarize(cube[i, j], bounds=(0.0, 1.0))
            rows.append({"trained_on": trained, "tested_on": tested, "trained_family": families[trained],
                         "tested_family": families[tested], "relation": relation(trained, tested, families),
                         **{f"auc_{k}": stats[k] for k in ("mean", "std", "ci_low", "ci_high")},
                         "n_folds": stats["n"], **{f"auc_fold_{k}": v for k, v in enumerate(cube[i, j])}})
    return pd.DataFrame(rows)


def _cells(fakes: Sequence[str], families: Mapping[str, str], group: str) -> list[tuple[int, int]]:
    """The ``(trained, tested)`` indices of the cells in ``group`` (a relation, or ``off_diagonal``)."""
    return [(i, j) for i, s in enumerate(fakes) for j, t in enumerate(fakes)
            if (relation(s, t, families) == group) or (group == "off_diagonal" and s != t)]


def _mean_per_fold(cube: np.ndarray, cells: Sequence[tuple[int, int]]) -> np.ndarray:
    """Per fold, the mean of ``cube`` over ``cells``, skipping nan."""
    return np.nanmean(np.stack([cube[i, j] for i, j in cells]), axis=0)


def transfer_tests(
    cube: np.ndarray, fakes: Sequence[str], families: Mapping[str, str], n_train: Sequence[float],
    n_test: np.ndarray,
) -> pd.DataFrame:
    """Diagonal vs off-diagonal and same- vs cross-family: paired over folds, Holm across the comparisons.

    Per fold, each group's AUC is the mean of its cells; the difference (treatment - baseline) is tested
    with Nadeau-Bengio (the folds' training sets overlap) and the p-values are Holm-adjusted together.
    A comparison with an empty group (every family holding one source) is left out.

    Args:
        cube: ``fold_aucs``.
        fakes: The fake sources, in the cube's order.
        families: Fake source -> family.
        n_train: Training-set size per fold (mean over the experiments).
        n_test: Each cell's test-set size per fold (``cell_test_sizes``); a comparison takes, per fold, the
            mean over the cells it compares.

    Returns:
        One row per comparison in the phases' paired-tests layout (``question``, ``baseline``, ``treatment``,
        ``metric``, ``diff_mean`` ... ``p_nadeau_bengio``, ``p_holm``, ``significant_holm``), plus each
        group's cell count and mean AUC with its 95% t-interval (``baseline_ci_low`` ...).
    """
    rows = []
    for question, baseline, treatment in COMPARISONS:
        base_cells, treat_cells = (_cells(fakes, families, g) for g in (baseline, treatment))
        if not base_cells or not treat_cells:
            continue
        base, treat = _mean_per_fold(cube, base_cells), _mean_per_fold(cube, treat_cells)
        row = {"question": question, "baseline": baseline, "treatment": treatment, "metric": "auc",
               **paired_comparison(base, treat, n_train, _mean_per_fold(n_test, base_cells + treat_cells))}
        # On the folds compared (both groups present), as the means beside them are.
        compared = np.isfinite(base) & np.isfinite(treat)
        for role, values in (("baseline", base), ("treatment", treat)):
            stats = summarize(values[compared], bounds=(0.0, 1.0))
            row.update({f"{role}_ci_low": stats["ci_low"], f"{role}_ci_high": stats["ci_high"]})
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_holm"] = holm_adjust(table["p_nadeau_bengio"].to_numpy())
        table["significant_holm"] = table["p_holm"] < 0.05
    return table


HOLDOUT_COLUMNS = ["experiment", "heldout_source", "heldout_auc", "reference_in_source_auc", "delta_vs_reference",
                   "delta_vs_reference_ci_low", "delta_vs_reference_ci_high", "delta_vs_reference_flag"]


def holdouts_beside(comparison: pd.DataFrame | None, fakes: Sequence[str]) -> pd.DataFrame:
    """The leave-one-out hold-outs of a phase's comparison (trained on every fake source but one), per source.

    Args:
        comparison: The phase's comparison table (``attach_holdouts``' columns), or None when it has not run.
        fakes: The fake sources.

    Returns:
        One row per held-out fake source (``HOLDOUT_COLUMNS``); empty when there are none.
    """
    if comparison is None or "delta_vs_reference" not in comparison:
        return pd.DataFrame(columns=HOLDOUT_COLUMNS)
    held = comparison.dropna(subset=["delta_vs_reference"])
    # A hold-out of several sources names them "a; b" and has no single column to sit in.
    held = held[held["heldout_source"].isin(fakes)]
    return held[HOLDOUT_COLUMNS].reset_index(drop=True)


def cell_text(mean: float, low: float, high: float) -> str:
    """``0.93\\n[0.90, 0.96]``: a cell's mean AUC over folds over its 95% interval."""
    return "n/a" if np.isnan(mean) else f"{mean:.2f}\n[{low:.2f}, {high:.2f}]"


def matrix_table(matrix: pd.DataFrame, holdouts: pd.DataFrame) -> pd.DataFrame:
    """The matrix as a slide table: one row per trained-on source, one column per tested-on source.

    Rows read ``trained on s (family)``; each cell is ``mean [CI]`` on one line. When the leave-one-out
    hold-outs are given, a last row shows, under each source, the AUC of the model trained on every other
    fake source and its drop Δ (95% CI) against the reference trained on all.
    """
    fakes = list(dict.fromkeys(matrix["tested_on"]))
    family = dict(zip(matrix["tested_on"], matrix["tested_family"], strict=False))
    header = {t: f"{t} ({family[t]})" for t in fakes}
    rows = []
    for trained, cells in matrix.groupby("trained_on", sort=False):
        row = {"trained on": f"{trained} ({family[trained]})"}
        for cell in cells.itertuples():
            row[header[cell.tested_on]] = cell_text(cell.auc_mean, cell.auc_ci_low, cell.auc_ci_high).replace("\n", " ")
        rows.append(row)
    if len(holdouts):
        row = {"trained on": "all fakes but this one (hold-out)"}
        for held in holdouts.itertuples():
            row[header[held.heldout_source]] = (f"{held.heldout_auc:.2f} (Δ {held.delta_vs_reference:+.2f} "
                                                f"[{held.delta_vs_reference_ci_low:+.2f}, "
                                                f"{held.delta_vs_reference_ci_high:+.2f}])")
        rows.append(row)
    return pd.DataFrame(rows, columns=["trained on", *header.values()]).fillna("")


def _luminance(rgba: Sequence[float]) -> float:
    """Approximate luminance of an RGB colour in [0, 1] (ITU-R BT.709 weights on the channels)."""
    red, green, blue = rgba[:3]
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def transfer_heatmap(matrix: pd.DataFrame, title: str) -> Figure:
    """The S × S AUC matrix, each cell annotated with its mean and 95% CI, the diagonal outlined.

    Rows are the source trained on, columns the source tested on; tick labels carry the family, sources are
    grouped by family (in order of each family's first source) and lines separate families. The colours
    diverge at chance (AUC 0.5): below-chance cells are red, not painted as 0.5.
    """
    family = dict(zip(matrix["tested_on"], matrix["tested_family"], strict=False))
    listed = list(dict.fromkeys(matrix["trained_on"]))
    families = list(dict.fromkeys(family[s] for s in listed))
    # A stable sort: one block per family, sources in their listed order within it.
    fakes = sorted(listed, key=lambda s: families.index(family[s]))
    grid = matrix.set_index(["trained_on", "tested_on"])
    values = np.array([[grid.loc[(s, t), "auc_mean"] for t in fakes] for s in fakes], dtype=float)
    size = 1.9 * len(fakes) + 2.6
    figure, ax = plt.subplots(figsize=(size, size - 1.2), constrained_layout=True)
    cmap, norm = plt.get_cmap("RdYlGn"), TwoSlopeNorm(vmin=0.0, vcenter=0.5, vmax=1.0)
    image = ax.imshow(values, cmap=cmap, norm=norm)
    for (i, j), value in np.ndenumerate(values):
        cell = grid.loc[(fakes[i], fakes[j])]
        # White text on the dark ends of the scale (deep red near 0, deep green near 1).
        dark = not np.isnan(value) and _luminance(cmap(norm(value))) < 0.5
        ax.text(j, i, cell_text(value, cell["auc_ci_low"], cell["auc_ci_high"]), ha="center", va="center",
                fontsize=10, fontweight="bold" if i == j else "normal", color="white" if dark else "black")
        if i == j:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2, zorder=3))
    for k in range(1, len(fakes)):
        if family[fakes[k]] != family[fakes[k - 1]]:
            ax.axhline(k - 0.5, color="white", linewidth=3)
            ax.axvline(k - 0.5, color="white", linewidth=3)
    labels = [f"{s}\n({family[s]})" for s in fakes]
    ax.set_xticks(range(len(fakes)), labels)
    ax.set_yticks(range(len(fakes)), labels)
    ax.set_xlabel("tested on (real vs this source)")
    ax.set_ylabel("trained on (real + this source)")
    figure.colorbar(image, ax=ax, label="AUC, mean over folds [95% CI]", shrink=0.8)
    ax.set_title(title)
    return figure


def summary_sentence(tests: pd.DataFrame) -> str:
    """One line per comparison: both groups' AUC with CIs, the difference with its CI and p (Holm)."""
    lines = []
    for row in tests.itertuples():
        lines.append(f"{row.treatment.replace('_', ' ')} {row.treatment_mean:.3f} [{row.treatment_ci_low:.3f}, "
                     f"{row.treatment_ci_high:.3f}] vs {row.baseline.replace('_', ' ')} {row.baseline_mean:.3f} "
                     f"[{row.baseline_ci_low:.3f}, {row.baseline_ci_high:.3f}]: Δ {row.diff_mean:+.3f} "
                     f"[{row.diff_ci_low:+.3f}, {row.diff_ci_high:+.3f}], p(NB, Holm) {row.p_holm:.3g}")
    return "\n".join(lines)
