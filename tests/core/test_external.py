import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from deepfake_kedro.data_index import DataLayoutError, ImageTree, square_resize
from deepfake_kedro.external import (
    ExternalSet,
    detect_faces,
    detect_set_faces,
    external_index,
    external_sets,
    external_table,
    leave_out_study_copies,
    open_tree,
    score_images,
    set_metrics,
    shown_table,
)
from tests.core.test_robustness import SOURCES, raw_study, trained_study


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A tiny trained package and its scores on a second raw tree drawn with another seed."""
    _, _, summary, _, package = trained_study(tmp_path_factory.mktemp("raw"), tmp_path_factory.mktemp("runs"))
    root = tmp_path_factory.mktemp("external")
    raw_study(root, n_identities=60, seed=1)
    external = ExternalSet("second", root, SOURCES)
    tree = open_tree(external)
    index = external_index(tree, external, min_size=8)
    return package, summary, tree, index, score_images(package, index, tree, {}, "cpu", chunk_size=50)


def test_a_set_s_byte_identical_copies_of_study_images_are_found_and_re_encoded_ones_are_not(tmp_path):
    study_root, set_root = tmp_path / "study", tmp_path / "set"
    raw_study(study_root, n_identities=60, seed=0)
    raw_study(set_root, n_identities=60, seed=1)
    study = ExternalSet("study", study_root, SOURCES)
    study_index = external_index(open_tree(study), study, min_size=8)
    copied, re_encoded = study_index["path"].iloc[0], study_index["path"].iloc[1]
    # A copied file under another name and folder, and a copy re-encoded as PNG with one pixel changed.
    shutil.copy(study_root / copied, set_root / "wiki" / "copied_from_study.png")
    pixels = np.asarray(Image.open(study_root / re_encoded)).copy()
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(set_root / "wiki" / "re_encoded.png")
    external = ExternalSet("second", set_root, SOURCES)
    index = external_index(open_tree(external), external, min_size=8)
    kept, copies = leave_out_study_copies(index, study_index, "second")
    assert copies.to_dict(orient="records") == [{"set": "second", "path": "wiki/copied_from_study.png",
                                                 "study_path": copied}]
    assert sorted(kept["path"]) == sorted(set(index["path"]) - {"wiki/copied_from_study.png"})


def test_scores_are_the_fold_ensemble_of_the_rendered_raw_images_at_the_package_threshold(scored):
    package, _, tree, index, scores = scored
    assert scores["path"].tolist() == index["path"].tolist()
    pixels = np.stack([square_resize(Image.open(tree.root / path), 16) for path in index["path"]])
    per_fold = package.predict_folds(pixels, "cpu")
    np.testing.assert_allclose(scores["p_fake"], per_fold.mean(axis=0), atol=1e-6)
    assert (scores["fake"] == (scores["p_fake"] >= package.threshold["value"])).all()


def test_set_metrics_match_sklearn_and_per_source_rates_by_hand(scored):
    package, _, _, _, scores = scored
    threshold = package.threshold["value"]
    metrics = set_metrics(scores, ["wiki"], threshold, n_bootstrap=50)
    y, p = scores["label"], scores["p_fake"]
    assert metrics["auc"] == pytest.approx(roc_auc_score(y, p))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, p >= threshold))
    assert metrics["f1"] == pytest.approx(f1_score(y, p >= threshold))
    for source in SOURCES:
        called = (scores.loc[scores["source"] == source, "p_fake"] >= threshold).mean()
        key = f"{'false_alarm_rate' if source == 'wiki' else 'detection_rate'}:{source}"
        assert metrics[key] == pytest.approx(called)
        assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"]
        assert metrics[f"n:{source}"] == (scores["source"] == source).sum()
    for name in ("auc", "accuracy", "f1"):
        assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"]
        assert metrics[f"{name}_ci_low"] < metrics[f"{name}_ci_high"]


def test_a_set_drawn_like_the_training_data_scores_within_the_cv_interval(scored):
    package, summary, _, _, scores = scored
    table = external_table({"second": {"m": set_metrics(scores, ["wiki"], package.threshold["value"], 50)}},
                           {"m": summary})
    row = table.iloc[0]
    assert row["cv_auc"] == summary["metrics"]["auc"]["mean"]
    assert row["within_cv_ci"] == (row["cv_auc_ci_low"] <= row["auc"] <= row["cv_auc_ci_high"])
    # Two folds give a wide t-interval; the same generator with another seed lands inside it.
    assert row["within_cv_ci"], row.to_dict()


def test_within_cv_ci_is_false_outside_the_interval():
    metrics = {k: 0.6 for k in ("auc", "auc_ci_low", "auc_ci_high", "accuracy", "accuracy_ci_low",
                                "accuracy_ci_high", "f1", "f1_ci_low", "f1_ci_high", "threshold")}
    cv = {"metrics": {"auc": {"mean": 0.9, "ci_low": 0.85, "ci_high": 0.95}}, "pooled": {"auc": 0.9}}
    table = external_table({"s": {"m": {**metrics, "n_images": 10}}}, {"m": cv})
    assert not table.loc[0, "within_cv_ci"]
    assert table.loc[0, ["cv_auc", "cv_auc_ci_low", "cv_auc_ci_high"]].tolist() == [0.9, 0.85, 0.95]


def test_entries_default_to_data_sources_and_errors_name_the_entry_and_key():
    sets = external_sets([{"name": "a", "root": "x"}, {"name": "b", "root": "y", "sources": {"r": "real",
                                                                                             "f": "fake"}}], SOURCES)
    assert sets[0].sources == SOURCES and sets[1].real_sources == ["r"] and sets[0].root == Path("x")
    assert external_sets(None, SOURCES) == []
    with pytest.raises(ValueError, match=r"evaluation.external\[0\]: missing 'root'"):
        external_sets([{"name": "a"}], SOURCES)
    with pytest.raises(ValueError, match=r"evaluation.external\[1\]: unknown keys \['labels'\]"):
        external_sets([{"name": "a", "root": "x"}, {"name": "b", "root": "y", "labels": {}}], SOURCES)
    with pytest.raises(ValueError, match=r"evaluation.external\[0\] \(a\): sources must map folders"):
        external_sets([{"name": "a", "root": "x", "sources": {"r": "real"}}], SOURCES)
    with pytest.raises(ValueError, match=r"the set names \['a'\] repeat"):
        external_sets([{"name": "a", "root": "x"}, {"name": "a", "root": "y"}], SOURCES)


def test_a_missing_real_set_is_an_error_and_a_synthetic_one_is_generated_once_per_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"external set 'real': .*nowhere does not exist"):
        open_tree(ExternalSet("real", tmp_path / "nowhere", SOURCES))
    synthetic = ExternalSet("demo", tmp_path / "demo", SOURCES, {"n_identities": 5, "seed": 1})
    tree = open_tree(synthetic)
    index = external_index(tree, synthetic)
    assert set(index["source"]) == set(SOURCES) and index["group"].nunique() == 5
    first = (tree.root / index["path"].iloc[0]).stat().st_mtime_ns
    open_tree(synthetic)
    assert (tree.root / index["path"].iloc[0]).stat().st_mtime_ns == first
    wrong = ExternalSet("demo", tmp_path / "demo", {"wiki": "real", "gan": "fake"})
    with pytest.raises(DataLayoutError, match=r"evaluation.external\[demo\].sources names 'gan', but .*demo/gan"):
        external_index(ImageTree(wrong.root), wrong)
    # An entry without sources of its own reads data.sources: the error says so, and what to give it.
    (inherited,) = external_sets([{"name": "demo", "root": str(tmp_path / "demo")}], {"wiki": "real", "gan": "fake"})
    with pytest.raises(DataLayoutError, match=r"names 'gan', but .*; this entry sets no sources of its own, so these "
                                              r"are data.sources: give it its own sources"):
        external_index(ImageTree(inherited.root), inherited)
    # Other settings: the old set must not stay under the new ones' name.
    changed = ExternalSet("demo", tmp_path / "demo", SOURCES, {"n_identities": 7, "seed": 2})
    assert external_index(open_tree(changed), changed)["group"].nunique() == 7


def test_a_set_s_near_duplicates_share_a_group_as_in_the_study(tmp_path):
    face = data.astronaut()
    (tmp_path / "real").mkdir()
    (tmp_path / "fake").mkdir()
    Image.fromarray(face).save(tmp_path / "real" / "anna_1990.png")
    Image.fromarray(face[::-1]).save(tmp_path / "real" / "bob_1991.png")
    # A face swap carrying anna's photo under another identity's basename: brightened, re-saved as JPEG.
    Image.fromarray(np.clip(face.astype(int) + 12, 0, 255).astype(np.uint8)).save(tmp_path / "fake" / "carl_1.jpg",
                                                                                   quality=90)
    Image.fromarray(face[:, ::-1]).save(tmp_path / "fake" / "dana_2.png")
    external = ExternalSet("swaps", tmp_path, {"real": "real", "fake": "fake"})
    basenames = external_index(ImageTree(tmp_path), external).set_index("path")["group"]
    assert basenames.nunique() == 4
    grouped = external_index(ImageTree(tmp_path), external, hash_size=64, max_distance=4).set_index("path")["group"]
    assert grouped["fake/carl_1.jpg"] == grouped["real/anna_1990.png"] == "anna_1990"
    assert grouped.nunique() == 3  # the flipped faces are other pictures


def test_faces_are_detected_in_batches_and_keyed_by_path():
    calls = []

    def detector(batch):
        calls.append(list(batch))
        return [{"detected": False, "path": p} for p in batch]

    boxes = detect_faces(ImageTree(Path(".")), ["a", "b", "c"], detector, batch_size=2)
    assert calls == [["a", "b"], ["c"]] and boxes["c"]["path"] == "c"


def test_a_sets_faces_are_found_with_the_studys_default_settings(tmp_path):
    # conf/base leaves face_detection.batch_size null ("the device's default"), as preprocessing reads it.
    (tmp_path / "real").mkdir()
    Image.fromarray(data.astronaut()).save(tmp_path / "real" / "astronaut.png")
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "real" / "grey.png")
    detection = {"batch_size": None, "min_confidence": 0.9, "device": "cpu"}

    boxes = detect_set_faces(ImageTree(tmp_path), ["real/astronaut.png", "real/grey.png"], detection)

    assert boxes["real/astronaut.png"]["detected"] and not boxes["real/grey.png"]["detected"]


def test_the_report_table_shows_each_metric_with_its_interval():
    row = {"set": "s", "model": "m", "n_images": 10, "auc": 0.7, "auc_ci_low": 0.6, "auc_ci_high": 0.8,
           "accuracy": 0.65, "accuracy_ci_low": 0.5, "accuracy_ci_high": 0.75, "f1": 0.6, "f1_ci_low": 0.4,
           "f1_ci_high": 0.7, "cv_auc": 0.9, "cv_auc_ci_low": 0.85, "cv_auc_ci_high": 0.95, "within_cv_ci": False}
    shown = shown_table(pd.DataFrame([row]))
    assert shown.iloc[0].tolist() == ["s", "m", 10, "0.700 [0.600, 0.800]", "0.650 [0.500, 0.750]",
                                      "0.600 [0.400, 0.700]", "0.900 [0.850, 0.950]", "no"]
