import numpy as np
import pandas as pd
import pytest

from deepfake_kedro.attribution import (
    attribution_classes,
    compare_approaches,
    flat_targets,
    hierarchical_targets,
    resolve_models,
    true_classes,
    walk_hierarchy,
)
from deepfake_kedro.config import ConfigError
from deepfake_kedro.folds import build_fold_table, select_fold_rows
from deepfake_kedro.stats import holm_adjust, paired_comparison
from tests.core.test_folds import dff_like_images

SOURCES = {"wiki": "real", "text2img": "fake", "inpainting": "fake", "insight": "fake"}
FAMILIES = {"text2img": "diffusion", "inpainting": "diffusion", "insight": "face_swap"}
DATA = {"root": "data/01_raw/dff", "sources": SOURCES, "families": FAMILIES}
DEFAULTS = {"backbone": "simple_cnn", "pretrained": False, "image_size": 32}


def test_classes_are_real_then_the_fake_sources_in_data_sources_order():
    assert attribution_classes(SOURCES) == ["real", "text2img", "inpainting", "insight"]
    (flat,) = flat_targets({"wiki": "real", "ffhq": "real", **{k: v for k, v in SOURCES.items() if k != "wiki"}})
    assert flat.class_of_source == {"wiki": 0, "ffhq": 0, "text2img": 1, "inpainting": 2, "insight": 3}


def test_the_hierarchy_trains_each_level_on_the_rows_that_reach_it_and_skips_one_source_families():
    levels = {t.name: t for t in hierarchical_targets(SOURCES, FAMILIES)}
    assert list(levels) == ["level1", "level2", "level3_diffusion"]
    assert levels["level1"].class_of_source == {"wiki": 0, "text2img": 1, "inpainting": 1, "insight": 1}
    assert levels["level2"].classes == ("diffusion", "face_swap")
    assert levels["level2"].class_of_source == {"text2img": 0, "inpainting": 0, "insight": 1}
    assert levels["level3_diffusion"].class_of_source == {"text2img": 0, "inpainting": 1}


def test_a_fake_source_without_a_family_names_the_key_to_add():
    with pytest.raises(ConfigError, match=r"data.families: fake source 'insight' has no family"):
        hierarchical_targets(SOURCES, {"text2img": "diffusion", "inpainting": "diffusion"})


def test_a_level_one_real_goes_straight_to_real_whatever_the_deeper_levels_say():
    # Rows: level-1 real (deeper levels point at a fake source), then each route through the fake branch.
    levels = {"level1": np.array([0, 0, 1, 1, 1]), "level2": np.array([1, 0, 0, 0, 1]),
              "level3_diffusion": np.array([1, 1, 0, 1, 0])}
    walked = walk_hierarchy(levels, SOURCES, FAMILIES)
    classes = np.asarray(attribution_classes(SOURCES))
    assert classes[walked].tolist() == ["real", "real", "text2img", "inpainting", "insight"]


def test_with_one_family_the_walk_needs_no_level_two():
    families = {"text2img": "diffusion", "inpainting": "diffusion", "insight": "diffusion"}
    assert [t.name for t in hierarchical_targets(SOURCES, families)] == ["level1", "level3_diffusion"]
    walked = walk_hierarchy({"level1": np.array([1, 1, 0]), "level3_diffusion": np.array([2, 0, 1])}, SOURCES,
                            families)
    assert walked.tolist() == [3, 1, 0]


def test_every_outer_fold_holds_every_source_in_train_val_and_test():
    table = build_fold_table(dff_like_images(60), cv_folds=5, val_ratio=0.1, seed=42)
    for fold in range(5):
        rows = select_fold_rows(table, fold, 1.0)
        for role in ("train", "val", "test"):
            assert set(table["source"].iloc[getattr(rows, role)]) == set(SOURCES), (fold, role)
    assert true_classes(table["source"], SOURCES).max() == 3


def test_models_get_their_classes_and_sources_and_never_share_a_fingerprint():
    flat = resolve_models("flat", {"cnn_preset": "micro"}, DEFAULTS, DATA)
    levels = resolve_models("hierarchical", {"cnn_preset": "micro"}, DEFAULTS, DATA)
    assert [m.config.num_classes for m in flat + levels] == [4, 2, 2, 2]
    assert levels[2].config.train_sources == ["text2img", "inpainting"]
    assert levels[0].config.cnn_preset == "micro" and levels[0].config.eval_sources == "all"
    assert len({m.fingerprint for m in flat + levels}) == 4
    again = resolve_models("hierarchical", {"cnn_preset": "micro"}, DEFAULTS, DATA)
    assert [m.fingerprint for m in again] == [m.fingerprint for m in levels]


@pytest.mark.parametrize("key", ["num_classes", "train_sources"])
def test_attribution_model_may_not_set_what_the_study_sets(key):
    with pytest.raises(ConfigError, match=rf"attribution.model: key '{key}' is set by the attribution study"):
        resolve_models("flat", {key: 3}, DEFAULTS, DATA)


def test_an_invalid_model_setting_names_the_model_and_key():
    with pytest.raises(ConfigError, match=r"attribution.level1.*'epochs'"):
        resolve_models("hierarchical", {"epochs": 0}, DEFAULTS, DATA)


def test_hierarchical_vs_flat_is_paired_per_fold_with_holm_across_the_two_metrics():
    rng = np.random.default_rng(0)

    def fold_metrics(shift):
        return pd.DataFrame({"fold": range(5), "view": "end_to_end", "n_train": 400, "n_test": 100,
                             "balanced_accuracy": rng.uniform(0.5, 0.7, 5) + shift,
                             "macro_f1": rng.uniform(0.4, 0.6, 5) + shift})

    flat, hierarchical = fold_metrics(0.0), fold_metrics(0.1)
    # Rows of another view must not enter the end-to-end test.
    hierarchical = pd.concat([hierarchical, hierarchical.assign(view="level1", balanced_accuracy=0.0)])
    tests = compare_approaches(flat, hierarchical)
    end = hierarchical[hierarchical["view"] == "end_to_end"]
    expected = [paired_comparison(flat[m], end[m], 400, 100) for m in ("balanced_accuracy", "macro_f1")]
    assert tests["diff_mean"].tolist() == pytest.approx([e["diff_mean"] for e in expected])
    assert tests["p_holm"].tolist() == pytest.approx(holm_adjust([e["p_nadeau_bengio"] for e in expected]).tolist())


def _perfect_runs(store, models, fold_table, n_train=None):
    """Every model's folds as a model that calls every test row's true class would write them."""
    from deepfake_kedro.attribution import _class_labels, class_predictions
    from deepfake_kedro.run_store import FoldResult, run_key

    for model in models:
        for fold in sorted(fold_table["fold"].unique()):
            positions = np.flatnonzero(fold_table["fold"].to_numpy() == fold)
            truth = _class_labels(fold_table.iloc[positions], model.target)
            probabilities = np.full((len(positions), len(model.target.classes)), 0.1)
            probabilities[np.arange(len(positions)), np.maximum(truth, 0)] = 0.9
            predictions = class_predictions(fold_table, positions, int(fold), probabilities, model.target)
            size = n_train(model, int(fold)) if n_train else 2 * len(positions)
            meta = {"fold": int(fold), "n_train": size, "n_test": len(positions)}
            result = FoldResult({}, pd.DataFrame({"epoch": [0]}), predictions, meta)
            store.write(run_key(model.fingerprint, int(fold)), result)


def small_family_fold_table() -> pd.DataFrame:
    """Three folds of wiki and insight groups; the diffusion family's sources only reach folds 0 and 1."""
    rows = [{"path": f"{source}/f{fold}g{g}.png", "source": source, "group": f"f{fold}g{g}", "fold": fold}
            for fold in range(3) for g in range(4) for source in ("wiki", "insight")]
    rows += [{"path": f"{source}/f{fold}d.png", "source": source, "group": f"f{fold}d", "fold": fold}
             for fold in (0, 1) for source in ("text2img", "inpainting")]
    fold_table = pd.DataFrame(rows)
    for k in range(3):
        fold_table[f"split_{k}"] = np.where(fold_table["fold"] == k, "test", "train")
    return fold_table


def perfect_evaluation(root, approach: str) -> tuple[pd.DataFrame, dict]:
    """``evaluate_approach``'s fold metrics and summary for models that call every test row right."""
    from deepfake_kedro.attribution import evaluate_approach
    from deepfake_kedro.run_store import FoldRunStore

    fold_table, store = small_family_fold_table(), FoldRunStore(root)
    models = resolve_models(approach, None, DEFAULTS, DATA)
    _perfect_runs(store, models, fold_table)
    _, fold_metrics, summary, _ = evaluate_approach(approach, models, store, fold_table, DATA)
    return fold_metrics, summary


def test_a_level_whose_family_misses_a_fold_s_test_part_scores_that_fold_nan_and_says_so(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="deepfake_kedro.attribution"):
        fold_metrics, summary = perfect_evaluation(tmp_path, "hierarchical")
    level3 = fold_metrics[fold_metrics["view"] == "level3_diffusion"].set_index("fold")
    assert level3.loc[2, "n_rows"] == 0
    assert level3.loc[2, ["balanced_accuracy", "macro_f1", "accuracy"]].isna().all()
    assert level3.loc[[0, 1], "balanced_accuracy"].tolist() == [1.0, 1.0]
    assert summary["views"]["level3_diffusion"]["balanced_accuracy"] == pytest.approx(
        {"mean": 1.0, "std": 0.0, "ci_low": 1.0, "ci_high": 1.0, "n": 2})
    assert summary["views"]["end_to_end"]["balanced_accuracy"]["n"] == 3
    assert any("level3_diffusion" in r.getMessage() and "fold 2" in r.getMessage() for r in caplog.records)
    # A perfect fold missing the diffusion classes is a perfect fold on macro-F1 too.
    end = fold_metrics[fold_metrics["view"] == "end_to_end"]
    assert end["macro_f1"].tolist() == [1.0, 1.0, 1.0]


def test_each_view_reports_the_training_size_of_the_model_that_made_it(tmp_path):
    from deepfake_kedro.attribution import evaluate_approach
    from deepfake_kedro.run_store import FoldRunStore

    fold_table, store = small_family_fold_table(), FoldRunStore(tmp_path)
    models = resolve_models("hierarchical", None, DEFAULTS, DATA)
    # Each level trains on the rows that reach it: sizes differ per model (here 100 per level, plus the fold).
    sizes = {model.target.name: 100 * (number + 1) for number, model in enumerate(models)}
    _perfect_runs(store, models, fold_table, n_train=lambda model, fold: sizes[model.target.name] + int(fold))
    _, fold_metrics, _, _ = evaluate_approach("hierarchical", models, store, fold_table, DATA)
    expected = {"end_to_end": sizes[models[0].target.name], **sizes}
    for row in fold_metrics.to_dict("records"):
        assert row["n_train"] == expected[row["view"]] + row["fold"], row


def test_the_results_table_and_confusion_panels_give_the_chance_level(tmp_path):
    from deepfake_kedro.attribution import confusion_figure, results_table

    flat_metrics, flat = perfect_evaluation(tmp_path / "flat", "flat")
    hierarchical_metrics, hierarchical = perfect_evaluation(tmp_path / "hierarchical", "hierarchical")
    summaries = {"flat": flat, "hierarchical": hierarchical}
    table = results_table(summaries, compare_approaches(flat_metrics, hierarchical_metrics)).set_index("metric")
    # Four classes (real and three fake sources): a guess's balanced accuracy is 1/4.
    assert table.loc["balanced_accuracy", "chance"] == "0.250" and table.loc["macro_f1", "chance"] == ""
    assert list(table.columns) == ["flat", "hierarchical", "chance", "hier - flat", "p (NB, Holm)"]
    figure = confusion_figure(summaries, "t")
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    # End to end 1/4; level 1 (real, fake), level 2 (two families) and level 3 (two diffusion sources) 1/2.
    assert [t.split("\n")[1] for t in titles] == ["(chance 0.25 per cell of a row)"] * 2 + [
        "(chance 0.50 per cell of a row)"] * 3
