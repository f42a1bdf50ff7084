import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from deepfake_kedro.calibration import calibrate
from deepfake_kedro.data_index import ImageTree, square_resize
from deepfake_kedro.experiment import evaluate_runs, plan_fold_runs
from deepfake_kedro.folds import build_fold_table
from deepfake_kedro.image_cache import ImageStack
from deepfake_kedro.model_package import ModelPackage, build_package
from deepfake_kedro.robustness import (
    CLEAN,
    Corruption,
    check_clean,
    corruption_grid,
    full_models,
    image_seed,
    plan_rescoring,
    rescore_out_of_fold,
    robustness_table,
    sample_groups,
    shown_table,
)
from deepfake_kedro.run_store import FoldRunStore, run_key
from deepfake_kedro.stats import holm_adjust, nadeau_bengio_ttest
from deepfake_kedro.study import ResolvedExperiment
from tests.core.test_folds import dff_like_images
from tests.core.test_training import tiny_config

SOURCES = {"wiki": "real", "text2img": "fake", "inpainting": "fake", "insight": "fake"}
FOLDS = 2
GRID = {"jpeg": [90, 30], "gaussian_blur": [2], "downscale": [0.25], "gaussian_noise": [0.05]}


def raw_study(root: Path, n_identities: int = 60, seed: int = 0) -> tuple[pd.DataFrame, ImageStack]:
    """Raw PNGs of several sizes (fakes carry a fine checkerboard that blur washes out) and their cache."""
    table = build_fold_table(dff_like_images(n_identities, seed), 5, 0.1, seed=1)
    rng = np.random.default_rng(seed)
    pixels = []
    for path, label in zip(table["path"], table["label"], strict=True):
        height, width = rng.integers(16, 21, size=2)
        flat = rng.integers(70, 180, 3) + rng.integers(-8, 9, (height, width, 3))
        checker = np.where(np.indices((height, width)).sum(axis=0) % 2, 30, -30)[..., None] if label else 0
        image = np.clip(flat + checker, 0, 255).astype(np.uint8)
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / path, format="PNG")
        pixels.append(square_resize(Image.fromarray(image), 16))
    return table, ImageStack(table["path"].tolist(), ["s"] * len(table), np.stack(pixels))


def trained_study(root: Path, runs: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict, FoldRunStore, ModelPackage]:
    """Raw images under ``root``, two trained folds under ``runs``: oof predictions, fold metrics, summary, package."""
    table, cache = raw_study(root)
    config = tiny_config(epochs=2, subsample=1.0)
    store = FoldRunStore(runs)
    plans = plan_fold_runs(config, "fp", table, cache, SOURCES, "tiny", device=torch.device("cpu"))
    for fold in range(FOLDS):
        store.write(run_key("fp", fold), plans[run_key("fp", fold)](), plans[run_key("fp", fold)].data)
    oof, fold_metrics, summary, _ = evaluate_runs(store, "fp", FOLDS, SOURCES, n_bootstrap=20)
    package = build_package(ResolvedExperiment("phase4", "tiny", config, "fp"), store, FOLDS, summary, fold_metrics)
    return oof, fold_metrics, summary, store, package


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Two trained folds of a tiny square-crop experiment on raw images, its package and its re-scores."""
    root = tmp_path_factory.mktemp("raw")
    oof, fold_metrics, _, _, package = trained_study(root, tmp_path_factory.mktemp("runs"))
    scores = rescore_out_of_fold(package, oof, ImageTree(root), {}, corruption_grid(GRID), seed=3, device="cpu",
                                 label="phase4.top1_full")
    return root, oof, fold_metrics, package, scores


def test_severity_zero_reproduces_the_stored_probabilities_and_the_clean_auc_exactly(finished):
    _, oof, _, _, scores = finished
    clean = scores[scores["corruption"] == CLEAN].set_index("path").loc[oof["path"]]
    np.testing.assert_allclose(clean["prob"], oof["prob"].to_numpy(), atol=1e-6)
    assert roc_auc_score(clean["label"], clean["prob"]) == roc_auc_score(oof["label"], oof["prob"])
    table = robustness_table(scores, {"phase4.top1_full": [100, 100]}, {"phase4.top1_full": [25, 25]}, n_bootstrap=20)
    assert table.loc[table["corruption"] == CLEAN, "auc"].item() == roc_auc_score(oof["label"], oof["prob"])


def test_every_image_is_scored_once_per_corruption_by_the_fold_that_held_it_out(finished):
    _, oof, _, _, scores = finished
    assert len(scores) == len(oof) * (1 + sum(len(v) for v in GRID.values()))
    held_out = oof.set_index("path")["fold"]
    assert (scores["fold"].to_numpy() == held_out.loc[scores["path"]].to_numpy()).all()
    assert scores.groupby(["corruption", "severity"]).size().nunique() == 1


def test_a_changed_raw_image_is_an_error_naming_it(finished):
    _, oof, *_ , scores = finished
    moved = oof.assign(prob=oof["prob"].where(oof.index != 3, 1 - oof["prob"]))
    with pytest.raises(ValueError, match=rf"clean image '{oof.loc[3, 'path']}'.*stored out-of-fold probability"):
        check_clean(scores, moved, 1e-4, "m")


class NotReached(Corruption):
    """A corruption that fails when applied: it shows how far a re-scoring got."""

    def apply(self, image, seed=0):
        raise AssertionError("a corruption was scored after a clean pass that did not reproduce")


def test_a_clean_pass_that_does_not_reproduce_stops_before_any_corruption_is_scored(finished, tmp_path):
    root, oof, _, package, _ = finished
    changed = tmp_path / "raw"
    shutil.copytree(root, changed)
    first = oof.loc[oof["fold"] == 0, "path"].iloc[0]  # scored in the first fold's first chunk
    Image.new("RGB", (18, 18), (250, 250, 250)).save(changed / first, format="PNG")
    grid = [Corruption(CLEAN, 0, 0), NotReached("jpeg", 90, 1)]
    with pytest.raises(ValueError, match=rf"clean image '{first}'"):
        rescore_out_of_fold(package, oof, ImageTree(changed), {}, grid, seed=3, device="cpu", label="m")


def test_a_rescoring_part_is_keyed_by_its_images_files_stored_probabilities_and_the_corruptions(finished, tmp_path):
    root, oof, _, package, scores = finished
    raw = tmp_path / "raw"
    shutil.copytree(root, raw, copy_function=shutil.copy2)

    def signatures(predictions=oof, grid=GRID, seed=3) -> dict[str, str]:
        parts = plan_rescoring(package, predictions, ImageTree(raw), {}, corruption_grid(grid), seed=seed,
                               device="cpu", chunk_size=8, label="m")
        return {part.name: part.signature for part in parts}

    before = signatures()
    assert len(before) == sum(-(-n // 8) for n in oof.groupby("fold").size()) and signatures() == before
    fold_0 = oof[oof["fold"] == 0].reset_index(drop=True)
    changed_chunk = f"m/fold_0/chunk_{11 // 8:05d}"
    (raw / fold_0.loc[11, "path"]).write_bytes((raw / fold_0.loc[11, "path"]).read_bytes())  # written again
    after = signatures()
    assert {name for name in before if before[name] != after[name]} == {changed_chunk}
    moved = oof.assign(prob=oof["prob"].where(oof["path"] != fold_0.loc[2, "path"], 0.5))
    assert {name for name, sig in signatures(moved).items() if sig != after[name]} == {"m/fold_0/chunk_00000"}
    # Another corruption list or noise seed changes every image's scores: every part is computed again.
    assert not set(signatures(grid={**GRID, "jpeg": [90]}).values()) & set(after.values())
    assert not set(signatures(seed=4).values()) & set(after.values())
    # Computed part by part, the rows are those of the all-at-once re-scoring.
    parts = plan_rescoring(package, oof, ImageTree(root), {}, corruption_grid(GRID), seed=3, device="cpu",
                           label="phase4.top1_full")
    pd.testing.assert_frame_equal(pd.concat([part.compute() for part in parts], ignore_index=True), scores)


def test_each_fold_model_is_built_once_for_its_chunks_and_dropped_after_its_last(finished, monkeypatch):
    root, oof, _, package, _ = finished
    built = []
    build = ModelPackage.fold_model
    monkeypatch.setattr(ModelPackage, "fold_model", lambda self, fold, device: built.append(fold) or build(
        self, fold, device))
    parts = plan_rescoring(package, oof, ImageTree(root), {}, corruption_grid({"jpeg": [90]}), seed=3,
                           device="cpu", chunk_size=8, label="m")
    assert len(parts) > 2 * FOLDS
    held = []
    for part in parts:
        part.compute()
        held.append(len(package._built))  # models kept built after each part
    assert built == list(range(FOLDS))
    assert max(held) == 1 and held[-1] == 0


def test_paired_tests_and_holm_follow_stats_on_the_fold_aucs(finished):
    _, _, fold_metrics, _, scores = finished
    n_train, n_test = fold_metrics["n_train"].tolist(), fold_metrics["n_test"].tolist()
    table = robustness_table(scores, {"phase4.top1_full": n_train}, {"phase4.top1_full": n_test}, n_bootstrap=20)
    fold_auc = scores.groupby(["corruption", "severity", "fold"]).apply(
        lambda f: roc_auc_score(f["label"], f["prob"])).unstack("fold")
    clean = fold_auc.loc[(CLEAN, 0.0)]
    expected_p = []
    for _, row in table[table["corruption"] != CLEAN].iterrows():
        treated = fold_auc.loc[(row["corruption"], row["severity"])]
        _, p = nadeau_bengio_ttest(treated - clean, n_train, n_test)
        assert row["delta_auc"] == pytest.approx((treated - clean).mean())
        assert row["p_nadeau_bengio"] == pytest.approx(p)
        expected_p.append(p)
    np.testing.assert_allclose(table.loc[table["corruption"] != CLEAN, "p_holm"], holm_adjust(expected_p))
    assert ((table["auc_ci_low"] <= table["auc"]) & (table["auc"] <= table["auc_ci_high"])).all()


def test_the_pooled_auc_pools_each_fold_model_on_its_calibrated_scale(finished):
    _, _, fold_metrics, package, scores = finished
    model = "phase4.top1_full"
    sizes = {model: fold_metrics["n_train"].tolist()}, {model: fold_metrics["n_test"].tolist()}
    raw = robustness_table(scores, *sizes, n_bootstrap=20)
    table = robustness_table(scores, *sizes, n_bootstrap=20, calibrations={model: package.calibration})
    for (_, row), (_, before) in zip(table.iterrows(), raw.iterrows(), strict=True):
        folds = scores[(scores["corruption"] == row["corruption"])
                       & (scores["severity"] == row["severity"])].groupby("fold")
        calibrated = np.concatenate([calibrate(f["prob"], package.calibration[fold]) for fold, f in folds])
        labels = np.concatenate([f["label"] for _, f in folds])
        assert row["auc"] == pytest.approx(roc_auc_score(labels, calibrated))
        assert row["auc_ci_low"] <= row["auc"] <= row["auc_ci_high"]
        # Monotone per fold: the fold AUCs and their tests are those of the raw scores.
        assert row["fold_auc_mean"] == before["fold_auc_mean"]
        assert row["delta_auc"] == pytest.approx(before["delta_auc"], nan_ok=True)


def test_blur_at_native_resolution_washes_out_the_fine_artefact(finished):
    _, _, _, _, scores = finished
    table = robustness_table(scores, {"phase4.top1_full": [100, 100]}, {"phase4.top1_full": [25, 25]},
                             n_bootstrap=20).set_index(["corruption", "severity"])["auc"]
    assert table[(CLEAN, 0.0)] > 0.8
    assert table[("gaussian_blur", 2.0)] < table[(CLEAN, 0.0)] - 0.1


def test_corruptions_keep_the_size_and_change_the_pixels_deterministically():
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (37, 53, 3)).astype(np.uint8))
    for corruption in corruption_grid(GRID):
        out = corruption.apply(image, seed=image_seed(0, "a.png"))
        assert out.size == image.size and out.mode == "RGB"
        same = np.array_equal(np.asarray(out), np.asarray(image))
        assert same == (corruption.kind == CLEAN), corruption.label
        np.testing.assert_array_equal(np.asarray(out), np.asarray(corruption.apply(image, image_seed(0, "a.png"))))
    noise = Corruption("gaussian_noise", 0.05, 1)
    assert not np.array_equal(np.asarray(noise.apply(image, 1)), np.asarray(noise.apply(image, 2)))
    # σ = 0.05 of the range: the pixel differences have a std close to 0.05 * 255 (less where clipped).
    diff = np.asarray(noise.apply(image, 1), dtype=float) - np.asarray(image, dtype=float)
    assert 9 < diff.std() < 14


def test_grid_lists_clean_first_then_severities_mildest_first_and_rejects_bad_entries():
    grid = corruption_grid({"jpeg": [90, 70], "downscale": [0.5]})
    assert [(c.kind, c.severity, c.level) for c in grid] == [
        (CLEAN, 0.0, 0), ("jpeg", 90.0, 1), ("jpeg", 70.0, 2), ("downscale", 0.5, 1)]
    with pytest.raises(ValueError, match=r"robustness.corruptions: unknown corruption\(s\) \['sharpen'\]"):
        corruption_grid({"sharpen": [1]})
    with pytest.raises(ValueError, match=r"robustness.corruptions.downscale: severity 2 must be a factor in \(0, 1\)"):
        corruption_grid({"downscale": [2]})
    with pytest.raises(ValueError, match=r"jpeg: severity 55.5 must be an integer quality"):
        corruption_grid({"jpeg": [55.5]})


def test_a_severity_given_as_one_number_is_an_error_naming_the_key_checked_before_any_node():
    from deepfake_kedro.hooks import ValidateExperimentsHook

    message = r"robustness.corruptions.jpeg: severities must be a list, mildest first; write \[30\]"
    with pytest.raises(ValueError, match=message):
        corruption_grid({"jpeg": 30})
    with pytest.raises(ValueError, match=message):
        ValidateExperimentsHook._check_choices({"robustness": {"corruptions": {"jpeg": 30}}}, {"robustness"})
    with pytest.raises(ValueError, match=r"robustness.corruptions: unknown corruption\(s\) \['jpg'\]"):
        ValidateExperimentsHook._check_choices({"robustness": {"corruptions": {"jpg": [30]}}}, {"robustness"})
    ValidateExperimentsHook._check_choices({"robustness": {"corruptions": {"jpeg": [30]}}}, {"robustness"})
    # Robustness not in this run: its block is not checked.
    ValidateExperimentsHook._check_choices({"robustness": {"corruptions": {"jpeg": 30}}}, {"phase1"})


def test_final_models_default_to_phase4_full_runs_and_accept_one_label():
    assert full_models(None, ["top1_full", "top2_full"]) == ["phase4.top1_full", "phase4.top2_full"]
    assert full_models("phase1.a", ["top1_full"]) == ["phase1.a"]
    assert full_models(["phase1.a", "phase2.b"], []) == ["phase1.a", "phase2.b"]
    with pytest.raises(ValueError, match="robustness.models is empty and phase 4 has no full run"):
        full_models([], [])
    # Extra models come after the chosen ones, each once.
    assert full_models(None, ["top1_full"], extra=["phase2.c", "phase4.top1_full", "phase2.c"]) == [
        "phase4.top1_full", "phase2.c"]
    assert full_models("phase1.a", [], extra="phase2.c") == ["phase1.a", "phase2.c"]
    # A name without its phase is refused naming the key it came from, not the package's predict.model.
    with pytest.raises(ValueError, match=r"evaluation.external_models: 'p2a_t2_real_norm' is not "
                                         r"<phase>\.<experiment>"):
        full_models(["p2a_t2_real_norm"], [], key="evaluation.external_models")
    with pytest.raises(ValueError, match=r"robustness.extra_models: 'c' is not <phase>\.<experiment>"):
        full_models(None, ["top1_full"], extra=["c"])


def test_the_report_table_has_a_row_per_corruption_and_a_column_per_model(finished):
    *_, scores = finished
    both = pd.concat([scores, scores.assign(model="other")], ignore_index=True)
    table = robustness_table(both, {"phase4.top1_full": [100, 100], "other": [100, 100]},
                             {"phase4.top1_full": [25, 25], "other": [25, 25]}, n_bootstrap=20)
    shown = shown_table(table)
    assert list(shown.columns) == ["corruption", "phase4.top1_full", "other"]
    assert shown["corruption"].tolist()[:4] == [CLEAN, "jpeg 90", "jpeg 30", "gaussian_blur 2"]
    clean = table.iloc[0]
    assert shown.loc[0, "other"] == f"{clean['auc']:.3f} [{clean['auc_ci_low']:.3f}, {clean['auc_ci_high']:.3f}]"
    assert shown.loc[1, "other"].endswith(f"p={table.iloc[1]['p_holm']:.3g}")


def test_sampling_keeps_whole_groups_in_their_order_up_to_max_images(finished):
    _, oof, *_ = finished
    sample = sample_groups(oof, 50, seed=0)
    sizes = oof.groupby("group").size()
    # Each stratum (fold x real only / fake only / both) overshoots its share by less than one group.
    strata = oof.groupby("group").agg(fold=("fold", "first"), labels=("label", lambda y: frozenset(y))).value_counts()
    assert 50 <= len(sample) < 50 + len(strata) * sizes.max()
    kept = sample.groupby("group").size()
    assert kept.equals(sizes.loc[kept.index])
    assert sample.index.is_monotonic_increasing
    assert sample.equals(sample_groups(oof, 50, seed=0)) and not sample.equals(sample_groups(oof, 50, seed=1))
    assert sample_groups(oof, None) is oof and sample_groups(oof, len(oof)) is oof


def test_sampling_keeps_both_classes_in_every_fold_in_proportion():
    # Per fold: 45 real-only groups and 5 fake-only ones; unstratified, 10 images often hold no fake of a fold.
    rows = [{"path": f"{fold}/{kind}{g}.png", "label": int(kind == "f"), "group": f"{fold}{kind}{g}", "fold": fold}
            for fold in range(2) for kind, n in (("r", 45), ("f", 5)) for g in range(n)]
    oof = pd.DataFrame(rows)
    for seed in range(20):
        sample = sample_groups(oof, 20, seed=seed)
        assert sample.groupby("fold")["label"].agg(["size", "sum"]).values.tolist() == [[10, 1], [10, 1]], seed


def test_a_subsample_keeps_the_study_s_fold_sizes_in_the_nadeau_bengio_correction(finished):
    _, oof, fold_metrics, _, scores = finished
    kept = sample_groups(oof, 40, seed=0)
    part = scores[scores["path"].isin(kept["path"])]
    n_train, n_test = fold_metrics["n_train"].tolist(), fold_metrics["n_test"].tolist()
    table = robustness_table(part, {"phase4.top1_full": n_train}, {"phase4.top1_full": n_test}, n_bootstrap=20)
    fold_auc = part.groupby(["corruption", "severity", "fold"]).apply(
        lambda f: roc_auc_score(f["label"], f["prob"])).unstack("fold")
    row = table.set_index(["corruption", "severity"]).loc[("gaussian_blur", 2.0)]
    differences = fold_auc.loc[("gaussian_blur", 2.0)] - fold_auc.loc[(CLEAN, 0.0)]
    assert row["p_nadeau_bengio"] == pytest.approx(nadeau_bengio_ttest(differences, n_train, n_test)[1])
    scored = part[part["corruption"] == CLEAN].groupby("fold").size().tolist()
    assert scored != n_test
    assert row["p_nadeau_bengio"] != pytest.approx(nadeau_bengio_ttest(differences, n_train, scored)[1])
