"""Figures people would rather look at than read: learning curves, metric bars with CIs."""

from __future__ import annotations

import sys
import textwrap

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from deepfake_kedro.comparison import source_effect_rows


def draw_offscreen() -> None:
    """Agg for Kedro runs (nodes draw on worker threads too, where a GUI backend fails); a notebook's kernel
    keeps its own inline backend, so figures drawn in its cells show."""
    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")


draw_offscreen()


def learning_curves(histories: list[pd.DataFrame], title: str) -> Figure:
    """Train / val loss and AUC per epoch, one line per fold (train dashed, val solid)."""
    figure, (loss_ax, auc_ax) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    colours = plt.get_cmap("tab10")
    for history in histories:
        fold = int(history["fold"].iloc[0])
        colour = colours(fold % 10)
        for ax, metric in ((loss_ax, "loss"), (auc_ax, "auc")):
            # Markers: a run stopped after one epoch is a point, which a line alone does not draw.
            ax.plot(history["epoch"], history[f"train_{metric}"], "--", marker=".", color=colour, alpha=0.7)
            ax.plot(history["epoch"], history[f"val_{metric}"], "-", marker="o", ms=3, color=colour,
                    label=f"fold {fold}")
    loss_ax.set(xlabel="epoch", ylabel="BCE loss", title="loss (dashed: train, solid: val)")
    # From 0.4 (chance and just below), lower only when a point would fall off the axis.
    aucs = np.concatenate([h[["train_auc", "val_auc"]].to_numpy(float).ravel() for h in histories] or [[]])
    aucs = aucs[np.isfinite(aucs)]
    auc_ax.set(xlabel="epoch", ylabel="ROC AUC", title="AUC (dashed: train, solid: val)",
               ylim=(min(0.4, aucs.min() - 0.02) if aucs.size else 0.4, 1.01))
    auc_ax.legend(loc="lower right", fontsize=8)
    figure.suptitle(title)
    return figure


def metric_bars(comparison: pd.DataFrame, metrics: tuple[str, ...] = ("auc", "accuracy", "f1"),
                title: str = "") -> Figure:
    """Mean of each metric per experiment with 95% CI error bars (t over folds)."""
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 0.5 * len(comparison) + 2.5),
                                constrained_layout=True, squeeze=False)
    names = comparison["experiment"].tolist()
    positions = np.arange(len(names))
    for ax, metric in zip(axes[0], metrics):
        mean = comparison[f"{metric}_mean"].to_numpy(dtype=float)
        low = mean - comparison[f"{metric}_ci_low"].to_numpy(dtype=float)
        high = comparison[f"{metric}_ci_high"].to_numpy(dtype=float) - mean
        ax.barh(positions, mean, xerr=np.vstack([np.nan_to_num(low), np.nan_to_num(high)]), capsize=4, color="#4C72B0")
        for y, value in zip(positions, mean):
            # Inside a bar long enough to hold it, in white; after a short one (F1 0.000), in black.
            inside = value > 0.15
            ax.text(0.01 if inside else max(value, 0) + 0.01, y, f"{value:.3f}", va="center", ha="left",
                    color="white" if inside else "black", fontsize=9)
        ax.set_yticks(positions, names if ax is axes[0][0] else [""] * len(names))
        ax.invert_yaxis()  # the first experiment on top, as in the tables and the heatmap
        ax.set(xlim=(0, 1), title=f"{metric} (mean, 95% CI)")
        ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    figure.suptitle(title)
    return figure


def face_crop_grid(samples: list[tuple[str, np.ndarray, dict, tuple | None, np.ndarray]], title: str) -> Figure:
    """Per sample: the image with MTCNN's box (red) and the enlarged crop square (green), then the crop.

    Args:
        samples: ``(source, image, face, crop square or None, crop)`` tuples, grouped by source.
        title: Figure title.
    """
    if not samples:
        figure = plt.figure(figsize=(6, 1))
        figure.suptitle(title)
        return figure
    sources = list(dict.fromkeys(s[0] for s in samples))
    per_source = max(sum(1 for s in samples if s[0] == source) for source in sources)
    figure, axes = plt.subplots(len(sources), 2 * per_source, figsize=(2.0 * 2 * per_source, 2.3 * len(sources)),
                                constrained_layout=True, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, source in enumerate(sources):
        for column, (_, image, face, square, crop) in enumerate(s for s in samples if s[0] == source):
            ax = axes[row][2 * column]
            ax.imshow(image)
            if face.get("detected"):
                x0, y0, x1, y1 = face["x0"], face["y0"], face["x1"], face["y1"]
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="red", lw=1.5))
                left, top, right, bottom = square
                ax.add_patch(plt.Rectangle((left, top), right - left, bottom - top, fill=False, color="lime",
                                           lw=1.5, ls="--"))
                # Show the whole crop square even where it reaches past the image (padded black there).
                ax.set_xlim(min(0, left) - 2, max(image.shape[1], right) + 2)
                ax.set_ylim(max(image.shape[0], bottom) + 2, min(0, top) - 2)
                ax.set_title(f"{source}  p={face['confidence']:.3f}", fontsize=8)
            else:
                ax.set_title(f"{source}  no face: fallback", fontsize=8, color="darkorange")
            axes[row][2 * column + 1].imshow(crop)
            axes[row][2 * column + 1].set_title("crop", fontsize=8)
    figure.suptitle(title)
    return figure


def augmentation_grid(originals: np.ndarray, augmented: list[np.ndarray], title: str) -> Figure:
    """Each original (first column) next to several augmented draws of it."""
    columns = 1 + len(augmented)
    figure, axes = plt.subplots(len(originals), columns, figsize=(1.8 * columns, 1.9 * len(originals)),
                                constrained_layout=True, squeeze=False)
    for row, original in enumerate(originals):
        for column, image in enumerate([original] + [draw[row] for draw in augmented]):
            axes[row][column].imshow(image)
            axes[row][column].axis("off")
            axes[row][column].set_title("original" if column == 0 else f"draw {column}", fontsize=8)
    figure.suptitle(title)
    return figure


def metadata_distributions(index: pd.DataFrame, features: pd.DataFrame) -> Figure:
    """Histograms of width, height, aspect ratio, file size and estimated JPEG quality: a row per source.

    Overlaid histograms hid sources whose values coincide (the demo's fakes are all 128 px, quality 90),
    so each source draws in its own row, on the bins and x range its column shares.
    """
    columns = [("width", "width (px)"), ("height", "height (px)"), ("aspect", "aspect (w / h)"),
               ("bytes", "file size (bytes)"), ("jpeg_quality", "estimated JPEG quality")]
    sources = sorted(index["source"].unique())
    figure, axes = plt.subplots(len(sources), len(columns), figsize=(3.6 * len(columns), 1.5 + 1.6 * len(sources)),
                                constrained_layout=True, squeeze=False, sharex="col")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for column_number, (column, label) in enumerate(columns):
        values = features[column].replace([np.inf, -np.inf], np.nan)
        finite = values.dropna()
        bins = np.histogram_bin_edges(finite, bins=30) if finite.nunique() > 1 else 10
        for row, source in enumerate(sources):
            ax = axes[row][column_number]
            chosen = values[index["source"] == source].dropna()
            if len(chosen):
                ax.hist(chosen, bins=bins, color=colours[row % len(colours)], label=source)
            if column_number == 0:
                ax.set_ylabel(f"{source}\nimages")
        axes[-1][column_number].set_xlabel(label)
    figure.suptitle("File metadata per source (one row each): where real and fake differ, a shortcut may exist")
    return figure


def colour_histograms(pixels_by_source: dict[str, np.ndarray]) -> Figure:
    """Per-channel pixel histograms, one panel per source."""
    figure, axes = plt.subplots(1, len(pixels_by_source), figsize=(4 * len(pixels_by_source), 3.2),
                                constrained_layout=True, squeeze=False, sharey=True)
    for ax, (source, pixels) in zip(axes[0], pixels_by_source.items()):
        for channel, colour in enumerate(("red", "green", "blue")):
            ax.hist(pixels[..., channel].ravel(), bins=64, range=(0, 255), color=colour, alpha=0.45, density=True)
        ax.set(title=source, xlabel="pixel value")
    figure.suptitle("Colour distribution per source (square crops)")
    return figure


def sample_grid(images_by_source: dict[str, np.ndarray], title: str) -> Figure:
    """A row of sample images per source."""
    columns = max(len(v) for v in images_by_source.values())
    figure, axes = plt.subplots(len(images_by_source), columns, figsize=(1.7 * columns, 1.9 * len(images_by_source)),
                                constrained_layout=True, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, (source, images) in enumerate(images_by_source.items()):
        for column, image in enumerate(images):
            axes[row][column].imshow(image)
        axes[row][0].set_title(source, fontsize=9, loc="left")
    figure.suptitle(title)
    return figure


def source_heatmap(comparison: pd.DataFrame, title: str = "") -> Figure:
    """Per-source AUC (real vs each fake source, mean over folds) per experiment, as an annotated heatmap."""
    columns = [c for c in comparison.columns if c.startswith("pairwise_auc:") and c.endswith("_mean")]
    sources = [c.removeprefix("pairwise_auc:").removesuffix("_mean") for c in columns]
    values = comparison[columns].to_numpy(dtype=float)
    figure, ax = plt.subplots(figsize=(1.6 * len(sources) + 4, 0.42 * len(comparison) + 1.8), constrained_layout=True)
    image = ax.imshow(values, cmap="RdYlGn", vmin=0.5, vmax=1.0, aspect="auto")
    for (row, column), value in np.ndenumerate(values):
        if np.isnan(value):
            continue
        red, green, blue, _ = image.cmap(image.norm(value))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5  # white text where the cell is dark
        ax.text(column, row, f"{value:.3f}", ha="center", va="center", fontsize=10, fontweight="bold",
                color="white" if dark else "black")
    ax.set_xticks(range(len(sources)), [f"real vs {s}" for s in sources])
    ax.set_yticks(range(len(comparison)), comparison["experiment"].tolist())
    figure.colorbar(image, ax=ax, label="AUC (mean over folds)")
    ax.set_title(title or "per-source AUC")
    return figure


def source_effects(tests: pd.DataFrame, title: str = "") -> Figure:
    """Which sources each comparison helps: Δ AUC of the real images against each fake source (treatment -
    baseline, mean over folds) with its Nadeau-Bengio 95% interval; * marks Holm p < 0.05 within the source."""
    per_source = source_effect_rows(tests)
    if per_source.empty:
        figure, ax = plt.subplots(figsize=(6, 2), constrained_layout=True)
        ax.axis("off")
        ax.text(0.5, 0.5, "no per-source tests (no comparison with per-source AUCs on both sides)",
                ha="center", va="center")
        return figure
    per_source = per_source.assign(pair=[q or f"{t} vs {b}" for q, b, t in
                                         zip(per_source["question"], per_source["baseline"], per_source["treatment"])])
    pairs, sources = list(dict.fromkeys(per_source["pair"])), list(dict.fromkeys(per_source["source"]))
    cells = per_source.set_index(["pair", "source"])
    values = np.array([[cells["diff_mean"].get((p, s), np.nan) for s in sources] for p in pairs], dtype=float)
    limit = max(0.05, float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.05)
    figure, ax = plt.subplots(figsize=(2.0 * len(sources) + 5, 0.55 * len(pairs) + 1.8), constrained_layout=True)
    image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for (row, column), value in np.ndenumerate(values):
        if np.isnan(value):
            continue
        cell = cells.loc[(pairs[row], sources[column])]
        star = "*" if cell["p_holm"] < 0.05 else ""
        red, green, blue, _ = image.cmap(image.norm(value))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5  # white text where the cell is dark
        ax.text(column, row, f"{value:+.3f}{star}\n[{cell['diff_ci_low']:+.3f}, {cell['diff_ci_high']:+.3f}]",
                ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(sources)), [f"real vs {s}" for s in sources])
    ax.set_yticks(range(len(pairs)), [textwrap.shorten(p, 60) for p in pairs])
    figure.colorbar(image, ax=ax, label="Δ AUC, treatment - baseline")
    ax.set_title(title or "which sources each change helps")
    return figure


def cost_vs_auc(table: pd.DataFrame, title: str = "") -> Figure:
    """Mean AUC (95% CI) against parameter count and GFLOPs, one point per experiment named in a shared legend
    (labels beside the points collide where models of similar cost score alike)."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    markers = "osD^vP*Xh<>p"
    for number, row in enumerate(table.itertuples()):
        error = np.nan_to_num([[row.auc_mean - row.auc_ci_low], [row.auc_ci_high - row.auc_mean]])
        style = {"fmt": markers[number % len(markers)], "color": f"C{number % 10}", "capsize": 4, "markersize": 7}
        axes[0].errorbar(row.params_m, row.auc_mean, yerr=error, label=row.experiment, **style)
        axes[1].errorbar(row.gflops, row.auc_mean, yerr=error, **style)
    for ax, label in ((axes[0], "parameters (millions)"), (axes[1], "GFLOPs per image")):
        ax.set(xscale="log", xlabel=f"{label}, log scale", ylabel="AUC (mean, 95% CI)")
        ax.grid(alpha=0.3)
    figure.legend(loc="outside lower center", ncols=min(len(table), 4), fontsize=9, frameon=False)
    figure.suptitle(title or "cost vs AUC")
    return figure


def scaling_curves(table: pd.DataFrame, title: str = "") -> Figure:
    """AUC (95% CI) against the fraction of training data, one line per model."""
    figure, ax = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
    for model, rows in table.sort_values("subsample").groupby("model", sort=False):
        error = np.vstack([rows["auc_mean"] - rows["auc_ci_low"], rows["auc_ci_high"] - rows["auc_mean"]])
        ax.errorbar(rows["subsample"] * 100, rows["auc_mean"], yerr=np.nan_to_num(error), marker="o", capsize=4,
                    label=model)
    ax.set(xlabel="training data used (% of groups)", ylabel="AUC (mean over folds, 95% CI)",
           title=title or "data scaling")
    ax.grid(alpha=0.3)
    ax.legend()
    return figure


def confidence_histograms(predictions: pd.DataFrame, title: str = "") -> Figure:
    """Histogram of p(fake) per source: reals should pile up near 0, each fake source near 1."""
    sources = list(dict.fromkeys(predictions["source"]))
    figure, axes = plt.subplots(1, len(sources), figsize=(3.2 * len(sources), 3), constrained_layout=True,
                                squeeze=False, sharey=True)
    bins = np.linspace(0, 1, 21)
    for ax, source in zip(axes[0], sources):
        rows = predictions[predictions["source"] == source]
        colour = "#55A868" if rows["label"].iloc[0] == 0 else "#C44E52"
        ax.hist(rows["prob"], bins=bins, color=colour)
        ax.axvline(0.5, color="grey", lw=0.8, ls=":")
        ax.set(title=f"{source} ({'real' if rows['label'].iloc[0] == 0 else 'fake'}, n={len(rows)})",
               xlabel="p(fake)")
    axes[0][0].set_ylabel("images")
    figure.suptitle(title)
    return figure


def reliability_diagram(predictions: pd.DataFrame, n_bins: int = 10, title: str = "") -> Figure:
    """Calibration: observed fraction of fakes per predicted-probability bin, with the bins' counts.

    With a ``prob_calibrated`` column (each fold model's p(fake) after its validation-fitted Platt scaling, what
    the model package scores with) both curves are drawn: the fold models as trained, and as the package uses them.
    """
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    curves = {"fold models as trained": "prob"}
    if "prob_calibrated" in predictions:
        curves["calibrated on validation (as packaged)"] = "prob_calibrated"
    figure, (ax, count_ax) = plt.subplots(2, 1, figsize=(6, 6.5), height_ratios=(3, 1), constrained_layout=True,
                                          sharex=True)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfectly calibrated")
    bins = np.linspace(0, 1, n_bins + 1)
    for (name, column), colour in zip(curves.items(), ("#8172B2", "#DD8452"), strict=False):
        observed, predicted = calibration_curve(predictions["label"], predictions[column], n_bins=n_bins)
        # Over all out-of-fold images at once; the tables give the mean over folds with its interval.
        brier = brier_score_loss(predictions["label"], predictions[column], labels=[0, 1])
        ax.plot(predicted, observed, marker="o", color=colour, label=f"{name}: pooled Brier {brier:.3f}")
        count_ax.hist(predictions[column], bins=bins, color=colour, histtype="step", lw=1.8, label=name)
    ax.set(ylabel="fraction of fakes", title=title or "reliability diagram")
    ax.legend(loc="upper left", fontsize=8)
    count_ax.set(xlabel="predicted p(fake)", ylabel="images")
    return figure


def image_gallery(images: list[np.ndarray], captions: list[str], title: str, columns: int = 5) -> Figure:
    """Images in a grid with a caption under each (e.g. the most confident mistakes)."""
    if not images:
        figure, ax = plt.subplots(figsize=(5, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "none", ha="center", va="center")
        figure.suptitle(title)
        return figure
    rows = int(np.ceil(len(images) / columns))
    height = 2.6 * rows + 0.9
    figure, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, height), squeeze=False)
    # Fixed spacing: constrained layout doubles the cost of a many-axes gallery, drawn for every experiment.
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.95 / height, hspace=0.4, wspace=0.05)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(image)
        ax.set_title(caption, fontsize=7)
    figure.suptitle(title)
    return figure


def attention_rows(attention: pd.DataFrame, label_width: int = 44) -> pd.DataFrame:
    """One row per distinct model of ``attention_summary``: experiments sharing a fingerprint collapse into one.

    Experiments with one fingerprint train the same folds (phase 4's 100% and full runs always do), so
    their Grad-CAM is the same; the row keeps the first and is labelled with every name, ``a = b``.

    Args:
        attention: ``reporting.attention_summary`` (``name`` and ``fingerprint`` when it had the summaries).
        label_width: Characters per label line before the names wrap.

    Returns:
        The kept rows, in order, with a ``label`` column.
    """
    names = attention["name"] if "name" in attention else attention["experiment"]
    # Rows without a fingerprint stand for themselves.
    keys = (attention["fingerprint"].fillna(attention["experiment"]) if "fingerprint" in attention
            else attention["experiment"])
    labels = names.groupby(keys, sort=False).agg(lambda group: textwrap.fill(" = ".join(group), label_width))
    kept = attention.loc[~keys.duplicated()].copy()
    kept["label"] = keys[kept.index].map(labels).to_numpy()
    return kept.reset_index(drop=True)


def attention_bars(attention: pd.DataFrame, rows_per_panel: int = 14) -> Figure:
    """Mean share of Grad-CAM mass on the face per experiment, against the share of the input the face covers.

    A bar past its tick means the model looks at the face more than a map without preference would; experiments
    without a scored image (no face found, or only all-zero CAMs) are named as such. Experiments sharing a
    fingerprint are one bar (``attention_rows``); more than ``rows_per_panel`` bars go in side-by-side panels,
    so the figure stays landscape and legible on a slide.
    """
    rows = attention_rows(attention)
    panels = max(1, -(-len(rows) // rows_per_panel))
    chunks = np.array_split(np.arange(len(rows)), panels)
    lines = max((sum(0.6 + 0.4 * (label.count("\n") + 1) for label in rows["label"].iloc[chunk]) for chunk in chunks),
                default=1)
    figure, axes = plt.subplots(1, panels, figsize=(7.5 * panels, 0.32 * max(lines, 3) + 2.0), squeeze=False,
                                layout="constrained")
    figure.suptitle("Where the models look (out-of-fold images, each by its own fold's model)", fontsize=13)
    for ax, chunk in zip(axes[0], chunks):
        shown = rows.iloc[chunk].iloc[::-1]
        # A label of several lines gets room in proportion, so it does not run into its neighbours.
        steps = 0.6 + 0.4 * np.array([label.count("\n") + 1 for label in shown["label"]], dtype=float)
        positions = np.cumsum(steps) - steps / 2
        ax.barh(positions, shown["all"].fillna(0.0), height=0.8, color="#4C72B0", label="Grad-CAM mass on the face")
        if "face_area" in shown:
            ax.scatter(shown["face_area"], positions, marker="|", s=220, color="black", zorder=3,
                       label="the face's share of the input (no preference)")
        labels = [label if pd.notna(mass) else f"{label} (no scored CAM)"
                  for label, mass in zip(shown["label"], shown["all"])]
        ax.set_yticks(positions, labels)
        ax.set(xlim=(0, 1), ylim=(0, max(steps.sum(), 1.0)))
        ax.set_xlabel("mean share of Grad-CAM mass inside the detected face box", fontsize=10)
        ax.tick_params(axis="y", labelsize=10)
    if rows.empty:
        axes[0, 0].text(0.5, 0.5, "no experiment explained any image", ha="center", va="center",
                        transform=axes[0, 0].transAxes)
    else:
        handles, names = axes[0, 0].get_legend_handles_labels()
        figure.legend(handles, names, loc="outside lower center", ncols=2, fontsize=10)
    return figure


def threshold_sweep_figure(sweep: pd.DataFrame, chosen: np.ndarray, title: str) -> Figure:
    """TPR, FPR, accuracy and F1 against the threshold (``thresholds.threshold_sweep``), 0.5 and the folds' marked.

    Args:
        sweep: Columns ``threshold``, ``tpr``, ``fpr``, ``accuracy``, ``f1``.
        chosen: Each fold's threshold, chosen on its validation predictions (dotted lines).
        title: The figure's title.
    """
    figure, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for column, label in (("tpr", "TPR (detection rate)"), ("fpr", "FPR (false alarms)"),
                          ("accuracy", "accuracy"), ("f1", "F1")):
        ax.plot(sweep["threshold"], sweep[column], label=label)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1, label="0.5")
    for i, threshold in enumerate(np.asarray(chosen, dtype=float)):
        ax.axvline(threshold, color="black", linestyle=":", linewidth=1,
                   label="fold thresholds (chosen on validation)" if i == 0 else None)
    ax.set(xlabel="threshold on p(fake)", ylabel="rate", xlim=(0, 1), ylim=(-0.02, 1.02), title=title)
    ax.legend(loc="lower left", fontsize=8)
    return figure
