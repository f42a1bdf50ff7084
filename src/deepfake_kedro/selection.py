"""Data-driven choices between phases: phase 2 -> preprocessing, phases 1-3 -> the final models.

Both choices are written as data (with the evidence that decided them) so that later phases read
them from the catalog, and both can be overridden by a parameter. Both read each fold's inner-validation
results (``val_auc``, ``val_pairwise_auc:<source>``), never its test fold: the test figures of what they
choose are not inflated by the choosing.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from deepfake_kedro.config import STUDY_WIDE_KEYS, ExperimentConfig, deep_merge
from deepfake_kedro.metrics import VALIDATION_SOURCE_PREFIX

logger = logging.getLogger(__name__)

PREPROCESSING_KEYS = ("image_size", "face_crop", "augment", "normalization")
"""The settings phase 2 studies and phase 3 / 4 adopt."""

PREPROCESSING_RULE = (
    "Start from `start` (the phase-2 reference preprocessing). Walk the steps in order; a step applies when "
    "its `when` settings hold, and its change is adopted when the treatment's fold-wise {metric} is higher "
    "than the baseline's and the Holm-adjusted Nadeau-Bengio p-value is below {alpha}. {metric} is measured on "
    "each fold's inner validation images: no test fold takes part in the choice."
)

RANKING_RULE = (
    "One candidate per model (backbone and preset): its best experiment of phases 1-3 by mean inner-validation "
    "AUC among those on phase 2's chosen preprocessing (the one phase 4 retrains it on), or among all when it "
    "has none there; source hold-outs excluded. Each criterion (validation AUC and worst-source validation AUC, "
    "not the test folds') ranks the candidates (1 = best); the score is the weighted mean rank, lower is "
    "better; ties go to the higher validation AUC. The top `top_k` go on."
)

SELECTION_METRICS = ("val_auc",)
"""Metrics phase 2's choice may read: measured on the inner validation rows, so the test folds choose nothing."""


class SelectionError(ValueError):
    """A selection that cannot be made from the results or parameters given."""


def _check_settings(settings: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(settings) - set(PREPROCESSING_KEYS))
    if unknown:
        raise SelectionError(f"{where}: keys {unknown} are not preprocessing settings; use {list(PREPROCESSING_KEYS)}")


def check_selection_params(selection: Mapping[str, Any]) -> None:
    """Rejects a ``phase2.selection`` block whose keys are not preprocessing settings, or whose metric is measured
    on the test folds, naming the key."""
    metric = selection.get("metric") or SELECTION_METRICS[0]
    if metric not in SELECTION_METRICS:
        raise SelectionError(
            f"phase2.selection.metric is {metric!r}, which the test folds measure; the choice reads an "
            f"inner-validation metric ({', '.join(SELECTION_METRICS)}) so that no test fold chooses anything"
        )
    if "start" not in selection:
        raise SelectionError("phase2.selection: key 'start' (the reference preprocessing) is missing")
    _check_settings(selection["start"], "phase2.selection.start")
    for number, step in enumerate(selection.get("steps") or []):
        for key in ("baseline", "treatment", "set"):
            if key not in step:
                raise SelectionError(f"phase2.selection.steps[{number}]: key {key!r} is missing")
        _check_settings(step["set"], f"phase2.selection.steps[{number}].set")
        _check_settings(step.get("when") or {}, f"phase2.selection.steps[{number}].when")
    if selection.get("override"):
        _check_settings(selection["override"], "phase2.selection.override")


def select_preprocessing(
    paired_tests: pd.DataFrame,
    start: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    alpha: float = 0.05,
    metric: str = "val_auc",
    override: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The preprocessing later phases use, decided step by step from phase 2's paired tests.

    Args:
        paired_tests: Phase 2's paired tests (``baseline``, ``treatment``, ``metric``, ``diff_mean``,
            ``diff_ci_low``, ``diff_ci_high``, ``p_nadeau_bengio``, ``p_holm``).
        start: The reference preprocessing (``image_size``, ``face_crop``, ``augment``, ``normalization``).
        steps: Each ``{set, baseline, treatment, when?}``: adopt ``set`` when the treatment wins.
        alpha: Significance level for the Holm-adjusted p-value.
        metric: The metric that decides: an inner-validation one (``SELECTION_METRICS``).
        override: When given, these settings replace the result (the decisions are still recorded).

    Returns:
        ``settings``, ``source`` (``phase-2 results`` or ``override``), the rule and one decision per step.

    Raises:
        SelectionError: A step names a pair phase 2 did not test, a key that is not preprocessing, or a
            test-fold metric.
    """
    check_selection_params({"start": start, "steps": steps, "override": override, "metric": metric})
    settings = copy.deepcopy(dict(start))
    decisions = []
    for number, step in enumerate(steps):
        decision = _decide_step(step, settings, paired_tests, alpha, metric, f"phase2.selection.steps[{number}]")
        if decision["adopted"]:
            settings.update(copy.deepcopy(dict(step["set"])))
        decisions.append(decision)
    source = "phase-2 results"
    if override:
        settings.update(copy.deepcopy(dict(override)))
        source = "override (parameter phase2.selection.override)"
    logger.info("Preprocessing for phases 3-4 (%s): %s", source, settings)
    return {"settings": settings, "source": source, "rule": PREPROCESSING_RULE.format(metric=metric, alpha=alpha),
            "alpha": alpha, "metric": metric, "start": dict(start), "decisions": decisions}


def _decide_step(
    step: Mapping[str, Any], settings: Mapping[str, Any], paired_tests: pd.DataFrame, alpha: float, metric: str,
    where: str,
) -> dict[str, Any]:
    """One selection step: whether it applies to ``settings`` and whether its treatment won significantly."""
    when = step.get("when") or {}
    decision: dict[str, Any] = {"baseline": step["baseline"], "treatment": step["treatment"],
                                "set": step.get("set", {}), "when": when}
    if any(settings.get(key) != value for key, value in when.items()):
        return {**decision, "applies": False, "adopted": False, "reason": "condition not met"}
    row = paired_tests[(paired_tests["baseline"] == step["baseline"])
                       & (paired_tests["treatment"] == step["treatment"])
                       & (paired_tests["metric"] == metric)]
    if row.empty:
        raise SelectionError(
            f"{where}: phase 2's paired tests have no {metric!r} row "
            f"for {step['baseline']} -> {step['treatment']}; "
            f"add the pair to phase2.comparisons or fix the step's names"
        )
    test = row.iloc[0]
    gain, p_holm = float(test["diff_mean"]), float(test["p_holm"])
    adopted = bool(gain > 0 and p_holm < alpha)
    return {
        **decision, "applies": True, "adopted": adopted, f"{metric}_diff": gain,
        "diff_ci": [float(test["diff_ci_low"]), float(test["diff_ci_high"])],
        "p_nadeau_bengio": float(test["p_nadeau_bengio"]), "p_holm": p_holm,
        "reason": ("significant gain" if adopted else
                   f"not testable ({int(test['n_folds'])} fold(s) with {metric} on both sides)"
                   if np.isnan(p_holm) else
                   "no gain" if gain <= 0 else f"gain not significant (Holm p {p_holm:.3g} >= {alpha})"),
    }


def apply_preprocessing(overrides: Mapping[str, Any], choice: Mapping[str, Any]) -> dict[str, Any]:
    """An experiment's overrides with the chosen preprocessing laid over them."""
    return {**copy.deepcopy(dict(overrides or {})), **copy.deepcopy(dict(choice["settings"]))}


def model_name(config: Mapping[str, Any]) -> str:
    """How a model is named across phases: the backbone, with SimpleCNN's preset."""
    backbone = config["backbone"]
    return f"{backbone}_{config['cnn_preset']}" if backbone == "simple_cnn" else backbone


def on_preprocessing(config: Mapping[str, Any], settings: Mapping[str, Any]) -> bool:
    """Whether an experiment already ran on the preprocessing ``settings`` (laying them over it changes nothing)."""
    current = ExperimentConfig.model_validate(dict(config))
    chosen = ExperimentConfig.model_validate(apply_preprocessing(config, {"settings": settings}))
    return all(getattr(current, key) == getattr(chosen, key) for key in settings)


def is_ranked(config: Mapping[str, Any]) -> bool:
    """Whether phase 4 ranks an experiment of ``config``: source hold-outs answer another question, not the model's."""
    return config["train_sources"] == "all" and config["eval_sources"] == "all"


def candidate_table(
    summaries: Mapping[str, Mapping[str, Any]], costs: Mapping[str, Mapping[str, float]],
    preprocessing: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per model: its best eligible experiment, mean and worst-source validation AUC, and cost.

    Every figure that ranks is measured on the folds' inner validation rows (``val_auc``,
    ``val_pairwise_auc:<source>``), never on their test rows: the chosen models' test figures are then
    not inflated by the choosing. A model's best experiment is taken among those on ``preprocessing`` when it
    has any: phase 4 retrains it there, and a model's best of many preprocessing variants would otherwise be
    ranked against models seen on one (its maximum over variants is biased upwards).

    Args:
        summaries: ``<phase>.<experiment>`` -> the experiment's metrics summary (with ``config``).
        costs: Same keys -> ``params_m`` and ``gflops`` at the experiment's image size.
        preprocessing: Phase 2's chosen settings (``image_size``, ``face_crop``, ...); None ranks every
            experiment alike.

    Returns:
        Candidates with ``model``, ``experiment``, ``on_chosen_preprocessing``, ``val_auc`` (fold mean) with
        ``val_auc_ci_low`` / ``val_auc_ci_high``, ``worst_source_val_auc``, ``worst_source``, ``gflops``,
        ``params_m``.
    """
    rows = []
    for name, summary in summaries.items():
        config = summary["config"]
        if not is_ranked(config):
            continue
        metrics = summary["metrics"]
        per_source = {key.removeprefix(VALIDATION_SOURCE_PREFIX): value["mean"] for key, value in metrics.items()
                      if key.startswith(VALIDATION_SOURCE_PREFIX) and value.get("mean") is not None}
        worst = min(per_source, key=per_source.get) if per_source else None
        rows.append({
            "model": model_name(config), "experiment": name,
            "on_chosen_preprocessing": preprocessing is None or on_preprocessing(config, preprocessing),
            "val_auc": metrics["val_auc"]["mean"],
            "val_auc_ci_low": metrics["val_auc"]["ci_low"], "val_auc_ci_high": metrics["val_auc"]["ci_high"],
            "worst_source_val_auc": per_source.get(worst, np.nan), "worst_source": worst,
            "gflops": costs[name]["gflops"], "params_m": costs[name]["params_m"],
        })
    table = pd.DataFrame(rows)
    best = (table.sort_values(["on_chosen_preprocessing", "val_auc", "experiment"], ascending=[False, False, True])
            .groupby("model", sort=False).head(1))
    return best.reset_index(drop=True)


CRITERIA_DIRECTIONS = {"val_auc": "higher", "worst_source_val_auc": "higher", "gflops": "lower", "params_m": "lower"}

RENAMED_CRITERIA = {"auc_mean": "val_auc", "worst_source_auc": "worst_source_val_auc"}
"""Criteria that read the test folds before the ranking moved to validation figures -> their successors."""


def check_ranking_weights(weights: Mapping[str, float]) -> None:
    """Rejects ranking weights that name a criterion the ranking does not know.

    Raises:
        SelectionError: Naming the unknown criteria and the known ones (and the successor of a test-fold one).
    """
    unknown = sorted(set(weights) - set(CRITERIA_DIRECTIONS))
    if unknown:
        renamed = [f"{old} -> {RENAMED_CRITERIA[old]}" for old in unknown if old in RENAMED_CRITERIA]
        hint = (f" ({', '.join(renamed)}: the ranking reads the inner validation rows, so that no test fold "
                "chooses the final models)") if renamed else ""
        raise SelectionError(f"phase4.ranking.weights: unknown criteria {unknown}; use {sorted(CRITERIA_DIRECTIONS)}"
                             + hint)


def check_ranking(ranking: Mapping[str, Any], models: Sequence[str]) -> None:
    """Phase 4's ranking settings against the models phases 1-3 will train, before any training.

    Args:
        ranking: ``phase4.ranking`` (``weights``, ``top_k``, ``override``).
        models: Model names (``model_name``) of the candidate experiments.

    Raises:
        SelectionError: Unknown criterion, a ``top_k`` the candidates cannot fill, or an override naming
            no candidate model.
    """
    check_ranking_weights(ranking.get("weights") or {})
    top_k, override, available = ranking.get("top_k"), ranking.get("override"), sorted(set(models))
    if not isinstance(top_k, int) or top_k < 1:
        raise SelectionError(f"phase4.ranking.top_k must be a whole number of 1 or more, got {top_k!r}")
    if override:
        missing = [name for name in override if name not in available]
        if missing:
            raise SelectionError(f"phase4.ranking.override names {missing}, which no experiment of phases 1-3 "
                                 f"trains; choose from {available}")
        if len(override) < top_k:
            raise SelectionError(f"phase4.ranking.override names {len(override)} models but top_k is {top_k}; "
                                 f"name {top_k} or lower top_k")
    elif len(available) < top_k:
        raise SelectionError(f"phase4.ranking.top_k is {top_k} but phases 1-3 train only {len(available)} "
                             f"models ({available}); lower top_k")


def rank_models(
    candidates: pd.DataFrame,
    weights: Mapping[str, float],
    top_k: int = 3,
    override: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Ranks candidate models by weighted criteria ranks and picks the top ``top_k``.

    Args:
        candidates: Output of ``candidate_table``.
        weights: Criterion (``val_auc``, ``worst_source_val_auc``, ``gflops``, ``params_m``) -> weight.
        top_k: How many models go on.
        override: Model names to take instead (in order), e.g. ``[resnet50, resnet18]``.

    Returns:
        ``criteria`` (name, direction, weight), ``rule``, ``candidates`` with every value, rank and
        score, ``selected`` (model, experiment, rank) and ``source``.

    Raises:
        SelectionError: Unknown criterion, too few candidates, or an override naming no candidate.
    """
    check_ranking_weights(weights)
    if len(candidates) < top_k and not override:
        raise SelectionError(f"phase4.ranking.top_k is {top_k} but only {len(candidates)} models were trained")
    table = candidates.copy()
    total = sum(weights.values())
    table["score"] = 0.0
    for criterion, weight in weights.items():
        higher = CRITERIA_DIRECTIONS[criterion] == "higher"
        # Missing values (a metric a model lacks) rank last.
        table[f"rank_{criterion}"] = table[criterion].rank(ascending=not higher, method="min", na_option="bottom")
        table["score"] += weight / total * table[f"rank_{criterion}"]
    table = table.sort_values(["score", "val_auc"], ascending=[True, False]).reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    if override:
        missing = [name for name in override if name not in set(table["model"])]
        if missing:
            raise SelectionError(
                f"phase4.ranking.override names {missing}, which are not trained models; "
                f"choose from {sorted(table['model'])}"
            )
        chosen = table.set_index("model").loc[list(override)].reset_index()
        source = "override (parameter phase4.ranking.override)"
    else:
        chosen = table.head(top_k)
        source = "ranking"
    selected = [{"slot": f"top{i + 1}", "model": row.model, "experiment": row.experiment, "rank": int(row.rank)}
                for i, row in enumerate(chosen.itertuples())]
    logger.info("Phase-4 models (%s): %s", source, ", ".join(s["model"] for s in selected))
    return {
        "criteria": [{"name": c, "direction": CRITERIA_DIRECTIONS[c], "weight": float(w)} for c, w in weights.items()],
        "rule": RANKING_RULE, "top_k": top_k, "source": source,
        "candidates": table.replace({np.nan: None}).to_dict(orient="records"), "selected": selected,
    }


FINAL_RUN_KEYS = (*STUDY_WIDE_KEYS, "subsample", "subsample_test", "description", "train_sources", "eval_sources",
                  "extends")
"""Keys phase 4 sets itself: ``phase4.training`` may not."""


def check_final_training(training: Mapping[str, Any] | None, preprocessing_keys: Sequence[str]) -> None:
    """``phase4.training`` may change how the final models train, not what they train on.

    Args:
        training: ``phase4.training``: settings laid over every phase-4 run (e.g. ``epochs``).
        preprocessing_keys: The settings phase 2's choice decides.

    Raises:
        SelectionError: Naming the keys it may not set and where they are decided instead.
    """
    if training is not None and not isinstance(training, Mapping):
        raise SelectionError(f"phase4.training must be a mapping of experiment keys (e.g. {{epochs: 15}}), "
                             f"got {training!r}")
    fixed = sorted(set(training or {}) & {*FINAL_RUN_KEYS, *PREPROCESSING_KEYS, *preprocessing_keys})
    if fixed:
        raise SelectionError(
            f"phase4.training sets {fixed}, which phase 4 does not take from it: the preprocessing is phase 2's "
            f"choice (phase2.selection.override forces one), the data fraction comes from phase4.scaling, "
            f"study-wide keys from defaults; set training keys only (epochs, batch_size, optimizer, ...)"
        )


def final_model_overrides(
    config: Mapping[str, Any], choice: Mapping[str, Any], subsample: float,
    training: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A phase-4 experiment: the chosen model's settings, ``phase4.training`` over them, the chosen
    preprocessing, a data fraction.

    Args:
        config: The resolved config of the model's best experiment.
        choice: Output of ``select_preprocessing``.
        subsample: Fraction of each fold's train and val groups (``folds.subsample_groups``); the test part
            stays whole (``subsample_test`` False), so the fractions share one test set.
        training: ``phase4.training``: training settings every final model uses (nested keys merged), so a
            model ranked from a short-budget experiment is retrained on the final budget.

    Returns:
        Overrides for ``resolve_experiment`` (study-wide keys left to the defaults).

    Raises:
        SelectionError: ``training`` sets a key phase 4 decides itself (``check_final_training``).
    """
    check_final_training(training, list(choice["settings"]))
    overrides = {k: copy.deepcopy(v) for k, v in config.items() if k not in FINAL_RUN_KEYS}
    overrides = apply_preprocessing(deep_merge(overrides, training or {}), choice)
    overrides["subsample"] = subsample
    if subsample < 1:
        # A scaling curve varies the training data alone: every fraction is tested on the whole test fold.
        overrides["subsample_test"] = False
    return overrides
