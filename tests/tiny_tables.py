"""Hand-made results tables in the catalog's layouts, small enough to build slides from in a second."""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.figure import Figure

SOURCES = {"real": "real", "gan": "fake", "diffusion": "fake"}


def comparison(names: list[str], aucs: list[float], backbone: str = "resnet18") -> pd.DataFrame:
    """A phase's comparison table: every headline metric as mean and CI, per-source AUC means."""
    rows = []
    for name, auc in zip(names, aucs):
        row: dict[str, Any] = {"experiment": name, "backbone": backbone, "image_size": 64}
        for metric, value in (("auc", auc), ("accuracy", auc - 0.1), ("f1", auc - 0.05), ("eer", 1 - auc),
                              ("accuracy_at_threshold", auc - 0.08), ("brier", (1 - auc) / 2)):
            row.update({f"{metric}_mean": value, f"{metric}_std": 0.02,
                        f"{metric}_ci_low": value - 0.03, f"{metric}_ci_high": value + 0.03})
        row.update({"pairwise_auc:gan_mean": auc + 0.01, "pairwise_auc:diffusion_mean": auc - 0.01})
        rows.append(row)
    return pd.DataFrame(rows)


def paired_tests(baseline: str, treatment: str, diff: float, p_holm: float) -> pd.DataFrame:
    """One AUC comparison in the paired-tests layout."""
    return pd.DataFrame([{"question": f"{baseline} vs {treatment}", "baseline": baseline, "treatment": treatment,
                          "metric": "auc", "diff_mean": diff, "diff_ci_low": diff - 0.02, "diff_ci_high": diff + 0.02,
                          "p_holm": p_holm}])


def fold_table(folds: int = 3) -> pd.DataFrame:
    """Two images per source and fold, one identity group per source and fold."""
    rows = [{"path": f"{source}/{fold}_{i}.jpg", "source": source, "group": f"{source}{fold}", "fold": fold}
            for fold in range(folds) for source in SOURCES for i in range(2)]
    return pd.DataFrame(rows)


def model_selection(model: str = "resnet18") -> dict[str, Any]:
    """Phase 4's selection with one candidate."""
    candidate = {"rank": 1, "model": model, "experiment": f"p3_{model}", "val_auc": 0.9, "worst_source_val_auc": 0.85,
                 "worst_source": "gan", "gflops": 1.8, "score": 1.0}
    return {"criteria": [{"name": "val_auc", "direction": "higher", "weight": 1.0}], "source": "ranking",
            "candidates": [candidate],
            "selected": [{"slot": "top1", "model": model, "experiment": f"p3_{model}", "rank": 1}]}


def preprocessing_choice() -> dict[str, Any]:
    """Phase 2's choice with one applied and one skipped step."""
    return {"source": "selection", "rule": "keep a change when Holm p < 0.05", "metric": "val_auc",
            "settings": {"image_size": 64, "augment": {"flip": True}},
            "decisions": [{"baseline": "p2_a", "treatment": "p2_b", "applies": True, "val_auc_diff": 0.031,
                           "p_holm": 0.012, "reason": "kept"},
                          {"baseline": "p2_b", "treatment": "p2_c", "applies": False, "reason": "no such pair"}]}


def slide_text(figure: Figure) -> str:
    """Every string drawn on a slide: its texts, axes texts and table cells."""
    parts = [t.get_text() for t in figure.texts]
    for ax in figure.axes:
        parts += [t.get_text() for t in ax.texts]
        for table in ax.tables:
            parts += [cell.get_text().get_text() for cell in table.get_celld().values()]
    return "\n".join(parts)


def metrics_summary(fingerprint: str, per_fold: dict[str, list[float]], n_train: int = 800, n_test: int = 200,
                    **config: Any) -> dict[str, Any]:
    """An experiment's metrics summary as the evaluation node writes it, from per-fold metric values."""
    from deepfake_kedro.metrics import summarize

    folds = [{"fold": k, "n_train": n_train, "n_test": n_test, **{m: v[k] for m, v in per_fold.items()}}
             for k in range(len(next(iter(per_fold.values()))))]
    return {"fingerprint": fingerprint,
            "config": {"backbone": "resnet18", "image_size": 64, "cnn_preset": "small", "train_sources": "all",
                       **config},
            "folds": folds, "metrics": {m: summarize(v) for m, v in per_fold.items()}, "pooled": {"auc": 0.5}}


def deck_fields(cv_folds: int = 3, synthetic: bool = False) -> dict[str, Any]:
    """Every field of the report deck's inputs, as small hand-made tables."""
    comparisons = {
        "phase1": comparison(["p1_resnet18", "p1_cnn"], [0.8123, 0.7011]),
        "phase2": comparison(["p2_a", "p2_b"], [0.8, 0.83]),
        "phase3": comparison(["p3_resnet18", "p3_vit"], [0.85, 0.8777], backbone="vit"),
        "phase4": comparison(["p4b_resnet18_full"], [0.9345]),
    }
    empty = pd.DataFrame(columns=["metric", "p_holm"])
    inputs: dict[str, Any] = dict(
        data_root="/data/faces", sources=SOURCES, cv_folds=cv_folds, seed=7, val_ratio=0.2, synthetic=synthetic,
        fold_table=fold_table(cv_folds),
        shortcut_audit={"auc": 0.6123, "auc_ci_low": 0.55, "auc_ci_high": 0.67, "warning": False},
        near_duplicates={"basename_groups_merged": 3, "merged_groups": 40, "largest_merged_group": 5},
        preprocessing_choice=preprocessing_choice(), model_selection=model_selection(),
        model_costs=pd.DataFrame({"experiment": ["p3_resnet18"], "params_m": [11.2], "gflops": [1.8],
                                  "auc_mean": [0.85], "auc_ci_low": [0.8], "auc_ci_high": [0.9]}),
        scaling=pd.DataFrame({"model": ["resnet18"] * 2, "subsample": [0.5, 1.0], "auc_mean": [0.8, 0.9],
                              "auc_ci_low": [0.75, 0.85], "auc_ci_high": [0.85, 0.95]}),
        attention=pd.DataFrame({"experiment": ["phase1.p1_resnet18"], "all": [0.4]}),
        benchmark=pd.DataFrame([{"backbone": "resnet18", "params_m": 11.2, "gflops": 1.8, "image_size": 64,
                                 "batch_size": 8, "images_per_s": 321.0, "device": "cpu", "precision": "fp32"}]),
        comparisons=comparisons, tests={"phase1": empty, "phase2": paired_tests("p2_a", "p2_b", 0.03, 0.2),
                                        "phase3": empty, "phase4": empty},
    )
    return inputs
