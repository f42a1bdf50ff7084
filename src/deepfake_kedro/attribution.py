"""Source attribution: which generator made a fake, by one flat classifier or by a hierarchy of them.

Both approaches answer in the same ``1 + S`` classes (``real`` and every fake source of ``data.sources``):

- flat: one ``(1 + S)``-way classifier;
- hierarchical: level 1 real vs fake, level 2 the generator family (``data.families``), level 3 the source
  within a family of two or more sources; each level is a model trained on the rows that reach it, and a
  prediction walks the levels (a level-1 "real" stops there).

Every model is a multi-class ``ExperimentConfig`` trained fold by fold through ``training.train_fold`` on the
study's own folds and kept in the fold run store under its own fingerprint, so finished folds are skipped.
Each model predicts every test row of its fold (the walk needs level 2 on whatever level 1 called fake).
Knows nothing of Kedro.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from deepfake_kedro.config import ConfigError, ExperimentConfig, config_fingerprint, resolve_experiment
from deepfake_kedro.experiment import fold_data
from deepfake_kedro.explain import load_fold_model, overlay
from deepfake_kedro.folds import fold_count, select_fold_rows
from deepfake_kedro.image_cache import ImageStack
from deepfake_kedro.metrics import metric_range, multiclass_metrics, normalized_confusion, summarize
from deepfake_kedro.models import cam_target_layer
from deepfake_kedro.run_store import FoldData, FoldPlan, FoldResult, FoldRunStore, run_key
from deepfake_kedro.stats import holm_adjust, paired_comparison
from deepfake_kedro.training import train_fold

logger = logging.getLogger(__name__)

REAL = "real"
"""The one class of every real source (the hierarchy's level 1 cannot tell real sources apart either)."""
APPROACHES = ("flat", "hierarchical")
Approach = Literal["flat", "hierarchical"]
END_TO_END = "end_to_end"
RESERVED_KEYS = ("num_classes", "train_sources", "eval_sources")
"""Set by the attribution study for each model; a ``attribution.model`` override may not set them."""


def fake_sources(sources: Mapping[str, str]) -> list[str]:
    """The fake sources, in ``data.sources`` order."""
    return [name for name, kind in sources.items() if kind == "fake"]


def attribution_classes(sources: Mapping[str, str]) -> list[str]:
    """The end-to-end classes: ``real``, then every fake source in ``data.sources`` order."""
    return [REAL, *fake_sources(sources)]


def family_members(sources: Mapping[str, str], families: Mapping[str, str]) -> dict[str, list[str]]:
    """Family -> its fake sources, families in order of their first source in ``data.sources``.

    Raises:
        ConfigError: A fake source has no family in ``data.families``.
    """
    members: dict[str, list[str]] = {}
    for source in fake_sources(sources):
        if source not in families:
            raise ConfigError(f"data.families: fake source {source!r} has no family; add '{source}: <family>' "
                              f"under data.families in parameters.yml (attribution's level 2 needs it)")
        members.setdefault(str(families[source]), []).append(source)
    return members


@dataclass(frozen=True, eq=False)
class Target:
    """One classifier: its name, its classes and the class of each source it trains on.

    Attributes:
        name: ``flat``, ``level1``, ``level2`` or ``level3_<family>``.
        classes: Class names, in class-index order.
        class_of_source: Source -> class index, for every source the model trains on.
    """

    name: str
    classes: tuple[str, ...]
    class_of_source: Mapping[str, int]


def flat_targets(sources: Mapping[str, str]) -> list[Target]:
    """The flat approach: one ``(1 + S)``-way classifier over every source."""
    classes = attribution_classes(sources)
    mapping = {s: 0 if kind == "real" else classes.index(s) for s, kind in sources.items()}
    return [Target("flat", tuple(classes), mapping)]


def hierarchical_targets(sources: Mapping[str, str], families: Mapping[str, str]) -> list[Target]:
    """The hierarchy's models: level 1 (all rows), level 2 (fake rows) and level 3 per family of 2+ sources.

    A level with one class is trivial and gets no model (one family: no level 2; a one-source family: no
    level 3 for it).
    """
    members = family_members(sources, families)
    targets = [Target("level1", (REAL, "fake"), {s: int(kind == "fake") for s, kind in sources.items()})]
    if len(members) > 1:
        family_names = list(members)
        targets.append(Target("level2", tuple(family_names),
                              {s: family_names.index(f) for f, of_family in members.items() for s in of_family}))
    for family, of_family in members.items():
        if len(of_family) > 1:
            targets.append(Target(f"level3_{family}", tuple(of_family), {s: i for i, s in enumerate(of_family)}))
    return targets


def approach_targets(approach: Approach, sources: Mapping[str, str], families: Mapping[str, str]) -> list[Target]:
    """The models one approach trains."""
    if approach == "flat":
        return flat_targets(sources)
    if approach == "hierarchical":
        return hierarchical_targets(sources, families)
    raise ValueError(f"approach must be one of {APPROACHES}, got {approach!r}")


@dataclass(frozen=True, eq=False)
class AttributionModel:
    """A target with its validated configuration and fingerprint (its fold runs' key)."""

    target: Target
    config: ExperimentConfig
    fingerprint: str

    @property
    def label(self) -> str:
        return f"attribution.{self.target.name}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.target.name, "classes": list(self.target.classes),
                "class_of_source": dict(self.target.class_of_source), "fingerprint": self.fingerprint,
                "config": self.config.model_dump(mode="json")}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AttributionModel:
        target = Target(data["name"], tuple(data["classes"]), dict(data["class_of_source"]))
        return cls(target, ExperimentConfig.model_validate(data["config"]), data["fingerprint"])

    def cache(self, image_cache: Mapping[str, ImageStack], face_cache: Mapping[str, ImageStack]) -> ImageStack:
        """Its image stack (``square_<size>`` or ``face_<size>``)."""
        caches, kind = (face_cache, "face") if self.config.face_crop else (image_cache, "square")
        return caches[f"{kind}_{self.config.image_size}"]


def attribution_fingerprint(config: ExperimentConfig, data: Mapping[str, Any], target: Target) -> str:
    """The config's fingerprint extended by the target's classes, so two levels of equal shape never share runs."""
    payload = {"config": config_fingerprint(config, data), "target": target.name, "classes": list(target.classes),
               "class_of_source": dict(sorted(target.class_of_source.items()))}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def resolve_models(
    approach: Approach, model: Mapping[str, Any] | None, defaults: Mapping[str, Any], data: Mapping[str, Any],
    preprocessing: Mapping[str, Any] | None = None,
) -> list[AttributionModel]:
    """Every model of one approach: the shared defaults, the attribution overrides, its classes and rows.

    Args:
        approach: ``flat`` or ``hierarchical``.
        model: ``attribution.model``: overrides of ``defaults`` shared by every attribution model.
        defaults: The study's defaults.
        data: ``data.root``, ``data.sources`` and ``data.families``.
        preprocessing: The cache sizes, to check the model's ``image_size`` has a cache.

    Returns:
        The approach's models, each with ``num_classes`` and ``train_sources`` set.

    Raises:
        ConfigError: A reserved key in ``attribution.model``, or any invalid key (named).
    """
    model = dict(model or {})
    reserved = [key for key in RESERVED_KEYS if key in model]
    if reserved:
        raise ConfigError(f"attribution.model: key {reserved[0]!r} is set by the attribution study for each model "
                          f"(from data.sources and data.families); remove it")
    resolved = []
    for target in approach_targets(approach, data["sources"], data.get("families") or {}):
        overrides = {**model, "num_classes": len(target.classes), "train_sources": list(target.class_of_source)}
        config = resolve_experiment(target.name, {target.name: overrides}, defaults, None, preprocessing,
                                    label=f"attribution.{target.name}")
        resolved.append(AttributionModel(target, config, attribution_fingerprint(config, data, target)))
    return resolved


def _class_labels(fold_table: pd.DataFrame, target: Target) -> np.ndarray:
    """Class index of every fold-table row for ``target`` (-1 for a source it does not train on)."""
    return fold_table["source"].map(dict(target.class_of_source)).fillna(-1).to_numpy(dtype=np.int64)


def model_fold_data(model: AttributionModel, fold_table: pd.DataFrame, cache: ImageStack,
                    sources: Mapping[str, str]) -> dict[int, FoldData]:
    """Each fold's rows and data key, labelled with the model's class indices (a relabelling retrains)."""
    return fold_data(model.config, fold_table.assign(label=_class_labels(fold_table, model.target)), cache, sources)


def class_predictions(fold_table: pd.DataFrame, positions: np.ndarray, fold: int, probabilities: np.ndarray,
                      target: Target) -> pd.DataFrame:
    """One fold's predictions: ``path, source, group, fold``, ``target`` (-1 outside the model), ``prob:<class>``."""
    predictions = fold_table.iloc[positions][["path", "source", "group"]].reset_index(drop=True)
    predictions["fold"] = fold
    predictions["target"] = _class_labels(fold_table.iloc[positions], target)
    for index, name in enumerate(target.classes):
        predictions[f"prob:{name}"] = probabilities[:, index]
    return predictions


def plan_model_runs(
    model: AttributionModel, fold_table: pd.DataFrame, cache: ImageStack, sources: Mapping[str, str],
    device: torch.device | None = None,
) -> dict[str, FoldPlan]:
    """One lazy training run per fold of one model, keyed ``<fingerprint>/fold_<k>``.

    Train and validation rows are the model's own sources; the test rows are every source of the fold.
    """
    labels = np.full(len(cache), -1, dtype=np.int64)
    cache_rows = cache.rows(fold_table["path"].tolist())
    labels[cache_rows] = _class_labels(fold_table, model.target)
    config, n_folds = model.config, fold_count(fold_table)

    def run(fold: int) -> FoldResult:
        selected = select_fold_rows(fold_table, fold, config.subsample, list(model.target.class_of_source), None,
                                    config.subsample_test)
        rows = {role: cache_rows[getattr(selected, role)] for role in ("train", "val", "test")}
        logger.info("%s fold %d (folds 0-%d): %d train, %d val, %d test images, %d classes", model.label, fold,
                    n_folds - 1, len(rows["train"]), len(rows["val"]), len(rows["test"]), config.num_classes)
        started = time.perf_counter()
        state, history, probabilities, val_probabilities, summary = train_fold(
            config, cache.array, rows, labels, fold, device, model.label)
        meta = {
            "experiment": model.label, "fingerprint": model.fingerprint, "fold": fold,
            "classes": list(model.target.classes), "n_train": int(len(rows["train"])),
            "n_val": int(len(rows["val"])), "n_test": int(len(rows["test"])),
            "seconds": time.perf_counter() - started, "config": config.model_dump(mode="json"), **summary,
        }
        return FoldResult(state, history, class_predictions(fold_table, selected.test, fold, probabilities,
                                                            model.target), meta,
                          class_predictions(fold_table, selected.val, fold, val_probabilities, model.target))

    data = model_fold_data(model, fold_table, cache, sources)
    return {run_key(model.fingerprint, fold): FoldPlan(data[fold], lambda fold=fold: run(fold), model.label)
            for fold in range(n_folds)}


def model_oof(store: FoldRunStore, model: AttributionModel, n_folds: int,
              current: Mapping[int, FoldData] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A model's out-of-fold predictions (with ``pred``, the argmax class index) and each fold's sizes.

    Raises:
        StaleRunError: A fold was trained on other data than ``current`` holds.
    """
    for fold, data in (current or {}).items():
        store.check_current(run_key(model.fingerprint, fold), data, model.label)
    folds = [store.read(run_key(model.fingerprint, fold)) for fold in range(n_folds)]
    oof = pd.concat([f.predictions for f in folds], ignore_index=True)
    probabilities = oof[[f"prob:{name}" for name in model.target.classes]].to_numpy()
    oof["pred"] = probabilities.argmax(axis=1)
    sizes = pd.DataFrame([{"fold": f.meta["fold"], "n_train": f.meta["n_train"], "n_test": f.meta["n_test"]}
                          for f in folds])
    return oof, sizes


def true_classes(source: pd.Series, sources: Mapping[str, str]) -> np.ndarray:
    """End-to-end class index of each row (``real`` = 0 for every real source)."""
    classes = attribution_classes(sources)
    return np.array([0 if sources[s] == "real" else classes.index(s) for s in source], dtype=np.int64)


def walk_hierarchy(level_preds: Mapping[str, np.ndarray], sources: Mapping[str, str],
                   families: Mapping[str, str]) -> np.ndarray:
    """End-to-end class indices from the levels' predictions, walking real/fake -> family -> source.

    Args:
        level_preds: Target name -> predicted class index per row (same rows for every level);
            ``level2`` absent with one family, ``level3_<family>`` absent for a one-source family.
        sources: ``data.sources``.
        families: ``data.families``.

    Returns:
        One index into ``attribution_classes(sources)`` per row; a level-1 "real" is ``real`` whatever the
        deeper levels say.
    """
    classes, members = attribution_classes(sources), family_members(sources, families)
    family_names = list(members)
    level1 = np.asarray(level_preds["level1"])
    family = np.asarray(level_preds["level2"]) if len(family_names) > 1 else np.zeros(len(level1), dtype=int)
    walked = np.zeros(len(level1), dtype=np.int64)
    for index, name in enumerate(family_names):
        of_family = members[name]
        within = (np.asarray(level_preds[f"level3_{name}"]) if len(of_family) > 1
                  else np.zeros(len(level1), dtype=int))
        chosen = np.array([classes.index(of_family[i]) for i in within], dtype=np.int64)
        reaches = (level1 == 1) & (family == index)
        walked[reaches] = chosen[reaches]
    return walked


def _view_rows(fold: int, view: str, y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str],
               sizes: pd.DataFrame) -> dict[str, Any]:
    size = sizes.set_index("fold").loc[fold]
    if not len(y_true):
        # A small family can miss a fold's test part; the summaries leave the fold's nan out.
        logger.warning("attribution view %s has no test image in fold %d; its metrics there are nan", view, fold)
    return {"fold": fold, "view": view, "n_train": int(size["n_train"]), "n_test": int(size["n_test"]),
            "n_rows": int(len(y_true)), **multiclass_metrics(y_true, y_pred, classes)}


def evaluate_approach(
    approach: Approach, models: Sequence[AttributionModel], store: FoldRunStore, fold_table: pd.DataFrame,
    data: Mapping[str, Any], current: Mapping[str, Mapping[int, FoldData]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """Out-of-fold end-to-end predictions, per-fold metrics per view, their summary and the confusion matrix.

    Views: ``end_to_end`` (all test rows, ``1 + S`` classes) and, for the hierarchy, each level on the rows
    whose truth belongs to it (level 1 all rows, level 2 the fakes, level 3 a family's rows).

    Args:
        approach: ``flat`` or ``hierarchical``.
        models: Its models (``resolve_models``).
        store: The fold run store.
        fold_table: The study's fold table.
        data: ``data.sources`` and ``data.families``.
        current: Model name -> its folds' current data (a fold trained on other data is an error).

    Returns:
        OOF predictions (``true``/``pred`` class names and indices, each level's prediction), fold metrics
        (one row per fold and view), the summary (classes, per-view mean / std / 95% t-CI, row-normalised
        confusion matrices) and the end-to-end confusion matrix as a table.
    """
    sources, families = data["sources"], data.get("families") or {}
    classes, n_folds = attribution_classes(sources), fold_count(fold_table)
    oofs, sizes = {}, {}
    for model in models:
        oof, sizes[model.target.name] = model_oof(store, model, n_folds, (current or {}).get(model.target.name))
        oofs[model.target.name] = oof.sort_values(["fold", "path"], kind="stable").reset_index(drop=True)
    base = next(iter(oofs.values()))
    for name, oof in oofs.items():
        if not oof["path"].equals(base["path"]):
            raise ValueError(f"attribution.{name}: its test rows differ from {models[0].label}'s; "
                             f"every model must predict every test row (eval_sources: all)")
    table = base[["path", "source", "group", "fold"]].copy()
    table["true_index"] = true_classes(table["source"], sources)
    level_preds = {name: oof["pred"].to_numpy() for name, oof in oofs.items()}
    table["pred_index"] = level_preds["flat"] if approach == "flat" else walk_hierarchy(level_preds, sources, families)
    table["true"] = np.asarray(classes)[table["true_index"]]
    table["pred"] = np.asarray(classes)[table["pred_index"]]
    for model in models:
        if approach == "hierarchical":
            table[f"pred:{model.target.name}"] = np.asarray(model.target.classes)[level_preds[model.target.name]]
    rows, confusion = [], {}
    # End to end: the first model's sizes (flat, or level 1, which trains on every row); a level: its model's.
    views = [(END_TO_END, classes, table["true_index"].to_numpy(), table["pred_index"].to_numpy(),
              np.ones(len(table), bool), sizes[models[0].target.name])]
    if approach == "hierarchical":
        for model in models:
            target = oofs[model.target.name]["target"].to_numpy()
            views.append((model.target.name, list(model.target.classes), target, level_preds[model.target.name],
                          target >= 0, sizes[model.target.name]))
    for view, view_classes, y_true, y_pred, mask, view_sizes in views:
        for fold in range(n_folds):
            in_fold = mask & (table["fold"].to_numpy() == fold)
            rows.append(_view_rows(fold, view, y_true[in_fold], y_pred[in_fold], view_classes, view_sizes))
        confusion[view] = {"classes": list(view_classes),
                           "matrix": normalized_confusion(y_true[mask], y_pred[mask], view_classes).tolist()}
    fold_metrics = pd.DataFrame(rows)
    summary: dict[str, Any] = {"approach": approach, "classes": classes,
                               "models": [m.to_json() for m in models], "views": {}, "confusion": confusion}
    for view, of_view in fold_metrics.groupby("view", sort=False):
        metrics = [c for c in of_view.columns if c not in ("fold", "view") and of_view[c].notna().any()]
        summary["views"][view] = {m: summarize(of_view[m].to_numpy(dtype=float), bounds=metric_range(m))
                                   for m in metrics}
    matrix = pd.DataFrame(confusion[END_TO_END]["matrix"], index=classes, columns=classes)
    return table, fold_metrics, summary, matrix.rename_axis("true").reset_index()


PAIRED_METRICS = ("balanced_accuracy", "macro_f1")


def compare_approaches(flat: pd.DataFrame, hierarchical: pd.DataFrame) -> pd.DataFrame:
    """Hierarchical vs flat on the same folds: paired tests of end-to-end balanced accuracy and macro-F1.

    Args:
        flat: The flat approach's fold metrics (``evaluate_approach``).
        hierarchical: The hierarchy's fold metrics.

    Returns:
        One row per metric: ``paired_comparison``'s columns (treatment = hierarchical, baseline = flat) and
        ``p_holm``, Nadeau-Bengio p-values Holm-adjusted across the metrics.
    """
    base = flat[flat["view"] == END_TO_END].sort_values("fold")
    treat = hierarchical[hierarchical["view"] == END_TO_END].sort_values("fold")
    if base["fold"].tolist() != treat["fold"].tolist():
        raise ValueError(f"flat has folds {base['fold'].tolist()} but hierarchical {treat['fold'].tolist()}; "
                         "the paired comparison needs the same folds")
    rows = [{"metric": metric, "baseline": "flat", "treatment": "hierarchical",
             **paired_comparison(base[metric], treat[metric], base["n_train"], base["n_test"])}
            for metric in PAIRED_METRICS]
    tests = pd.DataFrame(rows)
    tests["p_holm"] = holm_adjust(tests["p_nadeau_bengio"].to_numpy())
    return tests


def chance_level(classes: Sequence[str]) -> float:
    """Balanced accuracy of a guess that ignores the image (any rule, any class sizes): 1 / number of classes."""
    return 1.0 / len(classes)


def _annotated_matrix(ax: Any, matrix: np.ndarray, classes: Sequence[str], title: str) -> Any:
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                color="white" if value > 0.6 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return image


def confusion_figure(summaries: Mapping[str, Mapping[str, Any]], title: str, levels: bool = True) -> Figure:
    """Row-normalised end-to-end confusion matrices, one panel per approach, then one per hierarchy level.

    Each panel's title gives its chance level (``chance_level``): a guess puts that share in every cell of a row.

    Args:
        summaries: Approach -> its summary (``evaluate_approach``).
        title: Figure title.
        levels: Add a panel per level (each on the rows whose truth belongs to it).
    """
    panels = [(f"{name}: end to end", s["confusion"][END_TO_END]) for name, s in summaries.items()]
    if levels:
        panels += [(f"{name}: {view}", c) for name, s in summaries.items()
                   for view, c in s["confusion"].items() if view != END_TO_END]
    figure = Figure(figsize=(4.2 * len(panels), 4.4), layout="constrained")
    FigureCanvasAgg(figure)  # a canvas that renders to pixels, for the report slide
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, confusion) in zip(axes, panels, strict=True):
        classes = confusion["classes"]
        image = _annotated_matrix(ax, np.asarray(confusion["matrix"]), classes,
                                  f"{name}\n(chance {chance_level(classes):.2f} per cell of a row)")
    figure.colorbar(image, ax=list(axes), shrink=0.7, label="share of the true class")
    figure.suptitle(title)
    return figure


def results_table(summaries: Mapping[str, Mapping[str, Any]], tests: pd.DataFrame) -> pd.DataFrame:
    """The report's table: end-to-end mean [95% CI] per approach, chance, the difference and its Holm-adjusted p.

    ``chance`` is the balanced accuracy of a guess (``chance_level``); macro-F1 has no such level (a guess's
    depends on the class sizes), so its cell is empty.
    """
    rows = []
    for metric in PAIRED_METRICS:
        row: dict[str, Any] = {"metric": metric}
        for name, summary in summaries.items():
            s = summary["views"][END_TO_END][metric]
            row[name] = f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
        classes = next(iter(summaries.values()))["classes"]
        row["chance"] = f"{chance_level(classes):.3f}" if metric == "balanced_accuracy" else ""
        test = tests.set_index("metric").loc[metric]
        row["hier - flat"] = f"{test['diff_mean']:+.3f}"
        row["p (NB, Holm)"] = f"{test['p_holm']:.3g}"
        rows.append(row)
    return pd.DataFrame(rows)


def choose_gradcam_examples(oof: pd.DataFrame, n_images: int) -> pd.DataFrame:
    """A few OOF rows spread over the true classes, the first correct and the first wrong of each in turn."""
    table = oof.sort_values("path", kind="stable").assign(correct=lambda t: t["true_index"] == t["pred_index"])
    queues = [cell.index.tolist() for _, of_class in table.groupby("true_index", sort=True)
              for _, cell in of_class.groupby("correct", sort=False)]
    longest = max((len(q) for q in queues), default=0)
    order = [q[i] for i in range(longest) for q in queues if i < len(q)]
    return table.loc[order[:n_images]].reset_index(drop=True)


def gradcam_predicted_class(
    model: AttributionModel, store: FoldRunStore, examples: pd.DataFrame, cache: ImageStack,
    device: torch.device | str | None = "cpu",
) -> list[np.ndarray]:
    """Grad-CAM of each example by the fold model that held it out, for the class that model predicted.

    Args:
        model: A multi-class attribution model.
        store: Its fold runs.
        examples: OOF rows with ``path``, ``fold`` and ``pred_index`` (an index into the model's classes).
        cache: Its image stack.
        device: Where to run.

    Returns:
        One ``(H, W)`` map in [0, 1] per example, in order.
    """
    maps: list[np.ndarray | None] = [None] * len(examples)
    for fold, of_fold in examples.groupby("fold", sort=True):
        network, normalizer = load_fold_model(store, model.fingerprint, int(fold), device)
        pixels = np.ascontiguousarray(cache.array[cache.rows(of_fold["path"].tolist())])
        layer = cam_target_layer(model.config.backbone, network, pixels.shape[1])
        cam = GradCAM(model=network, target_layers=[layer])
        try:
            with torch.enable_grad():
                inputs = normalizer(torch.from_numpy(pixels), next(network.parameters()).device)
                targets = [ClassifierOutputTarget(int(c)) for c in of_fold["pred_index"]]
                found = cam(input_tensor=inputs, targets=targets)
        finally:
            cam.activations_and_grads.release()
        for position, heat in zip(of_fold.index, found, strict=True):
            maps[position] = np.clip(np.nan_to_num(heat, nan=0.0), 0.0, 1.0)
    return maps


def gradcam_figure(examples: pd.DataFrame, images: Sequence[np.ndarray], maps: Sequence[np.ndarray], title: str,
                   columns: int = 4) -> Figure:
    """Overlays captioned with the true and the predicted class (green when they agree, red otherwise)."""
    columns = max(1, min(columns, len(examples)))
    rows = max(1, -(-len(examples) // columns))
    figure = Figure(figsize=(2.4 * columns, 2.7 * rows + 0.5), layout="constrained")
    FigureCanvasAgg(figure)
    for position, (row, image, heat) in enumerate(zip(examples.itertuples(), images, maps, strict=True)):
        ax = figure.add_subplot(rows, columns, position + 1)
        ax.imshow(overlay(image, heat))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"true {row.true}\npred {row.pred} (fold {row.fold})", fontsize=8,
                      color="darkgreen" if row.true == row.pred else "firebrick")
    figure.suptitle(title)
    return figure
