"""The preprocessing pipeline through KedroSession: bad layouts and bad study-wide settings fail first."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake_kedro.config import ConfigError
from deepfake_kedro.data_index import DataLayoutError, ImageTree
from deepfake_kedro.pipelines.preprocessing.nodes import audit_images


def one_class_tree(root, n_real: int = 12):
    """``real/`` with ``n_real`` images; ``fake/`` with only a text file and an empty .jpg."""
    (root / "real").mkdir(parents=True)
    (root / "fake").mkdir()
    for i in range(n_real):
        Image.new("RGB", (40, 40), (i * 20 % 255, 100, 50)).save(root / "real" / f"person_{i}.jpg")
    (root / "fake" / "readme.txt").write_text("no fakes yet")
    (root / "fake" / "empty.jpg").write_bytes(b"")


def test_one_class_data_fails_before_training(kedro_project, tmp_path):
    root = tmp_path / "images"
    one_class_tree(root)
    params = {"data": {"root": str(root), "sources": {"real": "real", "fake": "fake"}}}
    with pytest.raises(DataLayoutError, match=r"data.sources names 'fake', but '.*images/fake' holds no usable image "
                                              r"\(2 files: 1 not_image, 1 zero_byte\)"):
        kedro_project.run("phase1", env="demo", params=params)
    data = kedro_project.path / "data/demo"  # the demo environment's data_dir
    # Nothing past the index ran: no cache, no hashes, no face detection, no training.
    assert not (data / "03_primary").exists() and not (data / "06_models").exists()
    assert not list(data.rglob("*.npy")) and not list(data.rglob("perceptual_hashes*"))


@pytest.mark.parametrize(("val_ratio", "message"), [(0, "greater than 0"), (1.5, "less than 0.5")])
def test_bad_study_wide_val_ratio_fails_before_preprocessing(kedro_project, val_ratio, message):
    kedro_project.edit_yaml("conf/demo/parameters.yml", {"defaults": {"val_ratio": val_ratio}})
    with pytest.raises(ConfigError, match=rf"defaults \(parameters.yml\): key 'val_ratio': Input should be {message}"):
        kedro_project.run("preprocessing", env="demo")
    assert not (kedro_project.path / "data/demo").exists()  # rejected before any node wrote anything


@pytest.mark.parametrize(("change", "message"), [
    ({"image_sizes": [0, 32]}, r"key 'image_sizes': every size must lie in \[16, 1024\], got 0"),
    ({"near_duplicates": {"max_distance": 64}}, r"key 'near_duplicates.max_distance': Input should be less than or "
                                                r"equal to 16"),
    ({"face_detection": {"min_confidence": 1.5}}, r"key 'face_detection.min_confidence'"),
    ({"face_crop_sise": [32]}, r"key 'face_crop_sise': Extra inputs are not permitted"),
])
def test_bad_preprocessing_settings_fail_before_any_node_naming_the_key(kedro_project, change, message):
    kedro_project.edit_yaml("conf/demo/parameters.yml", {"preprocessing": change})
    with pytest.raises(ConfigError, match=rf"preprocessing \(parameters.yml\): {message}"):
        kedro_project.run("eda", env="demo")
    assert not (kedro_project.path / "data/demo").exists()  # rejected before any node wrote anything


def test_rerun_on_an_unchanged_tree_decodes_nothing_and_follows_changes(kedro_project, tmp_path):
    root = tmp_path / "images"
    for source in ("real", "fake"):
        (root / source).mkdir(parents=True)
        for k in range(60):  # 60 groups: enough for the demo's cv_folds and val_ratio
            pixels = np.random.default_rng(k + 100 * (source == "fake")).integers(0, 256, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / source / f"person_{k:02d}.png")
    params = {"data": {"root": str(root), "sources": {"real": "real", "fake": "fake"}, "families": {"fake": "gan"}}}
    audit_only = {"to_nodes": ["preprocessing.build_folds"]}
    kedro_project.run("preprocessing", env="demo", params=params, **audit_only)
    intermediate = kedro_project.path / "data/demo/02_intermediate"
    written = (intermediate / "image_audit.parquet").stat().st_mtime_ns
    folds = pd.read_parquet(kedro_project.path / "data/demo/05_model_input/fold_table.parquet")

    kedro_project.run("preprocessing", env="demo", params=params, **audit_only)
    assert (intermediate / "image_audit.parquet").stat().st_mtime_ns == written  # nothing decoded, nothing rewritten
    pd.testing.assert_frame_equal(pd.read_parquet(kedro_project.path / "data/demo/05_model_input/fold_table.parquet"),
                                  folds)

    (root / "fake/person_03.png").unlink()
    Image.new("RGB", (40, 40), (9, 9, 9)).save(root / "fake/person_99.png")
    kedro_project.run("preprocessing", env="demo", params=params, **audit_only)
    index = pd.read_parquet(intermediate / "image_index.parquet")
    hashes = pd.read_parquet(intermediate / "perceptual_hashes.parquet")
    assert "fake/person_03.png" not in set(index["path"]) | set(hashes["path"])
    assert "fake/person_99.png" in set(index["path"]) & set(hashes["path"]) and len(index) == 120


def test_face_boxes_are_detected_again_when_the_confidence_they_need_changes(tmp_path):
    from skimage import data as skimage_data

    from deepfake_kedro.data_index import ImageTree
    from deepfake_kedro.image_cache import write_table
    from deepfake_kedro.pipelines.preprocessing.nodes import plan_face_detection

    (tmp_path / "real").mkdir()
    Image.fromarray(skimage_data.astronaut()).save(tmp_path / "real" / "astronaut.png")
    index = pd.DataFrame({"path": ["real/astronaut.png"], "status": ["ok"], "content": ["0123456789abcdef"]})
    tree, table = ImageTree(tmp_path), tmp_path / "face_boxes.parquet"

    def detect(min_confidence: float) -> tuple[int, bool]:
        settings = {"face_detection": {"min_confidence": min_confidence, "batch_size": None, "device": "cpu"},
                    "face_crop_sizes": [32]}
        computed = write_table(plan_face_detection(index, tree, settings), table)
        return computed, bool(pd.read_parquet(table)["detected"].iloc[0])

    assert detect(0.9) == (1, True)
    assert detect(0.9) == (0, True)  # unchanged: nothing detected again
    # MTCNN is ~0.99+ sure of this face, never 1.0: a threshold above it must not keep the old box.
    assert detect(0.99999999) == (1, False)


def test_a_file_replaced_behind_the_same_size_and_mtime_is_read_again_and_a_touched_one_costs_nothing(tmp_path):
    import os

    from deepfake_kedro.data_index import ImageTree
    from deepfake_kedro.image_cache import read_image_stack, write_image_stack, write_table
    from deepfake_kedro.pipelines.preprocessing.nodes import audit_images, index_images, plan_square_caches

    root = tmp_path / "images"
    for source in ("real", "fake"):
        (root / source).mkdir(parents=True)
        for k in range(5):
            Image.new("RGB", (40, 40), (40 * k, 90 if source == "real" else 200, 30)).save(root / source / f"p{k}.png")
    tree = ImageTree(root)
    data = {"root": str(root), "sources": {"real": "real", "fake": "fake"}, "families": {"fake": "gan"}}
    preprocessing, defaults = {"min_image_size": 16, "image_sizes": [16]}, {"cv_folds": 2, "val_ratio": 0.45}

    def rerun() -> tuple[int, int, pd.DataFrame]:
        audited = write_table(audit_images(tree, data, preprocessing, defaults), tmp_path / "audit.parquet")
        index, _ = index_images(pd.read_parquet(tmp_path / "audit.parquet"), tree, data, defaults)
        rendered = write_image_stack(plan_square_caches(index, tree, preprocessing)["square_16"], tmp_path / "sq")
        return audited, rendered, index

    assert rerun()[:2] == (10, 10)
    assert rerun()[:2] == (0, 0)
    # Same size and mtime, other pixels: what `cp -p` or rsync leaves when a file is replaced.
    target = root / "real" / "p1.png"
    before = target.stat()
    replacement = tmp_path / "other.png"
    Image.new("RGB", (40, 40), (250, 250, 250)).save(replacement)
    new_bytes = replacement.read_bytes()
    assert len(new_bytes) <= before.st_size
    target.write_bytes(new_bytes + b"\0" * (before.st_size - len(new_bytes)))  # decoders stop at PNG's IEND
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    audited, rendered, index = rerun()
    assert (audited, rendered) == (1, 1)
    stack = read_image_stack(tmp_path / "sq")
    assert stack.array[stack.rows(["real/p1.png"])[0]].min() > 240  # the new, white pixels
    # A touch changes no byte: the file is read again, nothing derived from it is redone.
    os.utime(root / "fake" / "p2.png")
    assert rerun()[:2] == (1, 0)


def test_a_relative_data_root_is_read_from_the_project_when_kedro_starts_in_a_subfolder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    one_class_tree(project / "data/01_raw/mine")
    (project / "notebooks").mkdir()
    monkeypatch.chdir(project / "notebooks")
    tree = ImageTree(project / "data/01_raw/mine")  # as Kedro anchors the catalog's path at the project
    data = {"root": "data/01_raw/mine", "sources": {"real": "real", "fake": "fake"}}
    preprocessing = {"min_image_size": 32, "image_sizes": [32]}
    defaults = {"seed": 0, "cv_folds": 2, "val_ratio": 0.25}
    assert len(audit_images(tree, data, preprocessing, defaults).keys) == 14
    with pytest.raises(DataLayoutError, match=r"data.root is 'data/01_raw/other' but the catalog's raw_images reads"):
        audit_images(tree, {**data, "root": "data/01_raw/other"}, preprocessing, defaults)


def test_caches_from_before_exif_turns_re_render_only_the_turned_photos(tmp_path):
    from deepfake_kedro.data_index import ImageTree, decode_square
    from deepfake_kedro.image_cache import ImageStackPlan, read_image_stack, write_image_stack, write_table
    from deepfake_kedro.pipelines.preprocessing.nodes import index_images, plan_square_caches
    from tests.core.test_data_index import save_sideways

    root = tmp_path / "images"
    for source in ("real", "fake"):
        (root / source).mkdir(parents=True)
        for k in range(5):
            pixels = np.random.default_rng(k + 10 * (source == "fake")).integers(0, 256, (48, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / source / f"p{k}.png")
    with Image.open(root / "real" / "p0.png") as image:
        save_sideways(image.convert("RGB"), root / "real" / "p0.png")
    tree = ImageTree(root)
    data = {"root": str(root), "sources": {"real": "real", "fake": "fake"}, "families": {"fake": "gan"}}
    preprocessing, defaults = {"min_image_size": 16, "image_sizes": [16]}, {"cv_folds": 2, "val_ratio": 0.45}
    write_table(audit_images(tree, data, preprocessing, defaults), tmp_path / "audit.parquet")
    index, _ = index_images(pd.read_parquet(tmp_path / "audit.parquet"), tree, data, defaults)
    assert index.set_index("path")["orientation"].to_dict() == {**{p: 1 for p in index["path"]}, "real/p0.png": 6}
    plan = plan_square_caches(index, tree, preprocessing)["square_16"]
    # The cache an earlier version left: rows keyed by the bare content digest (stand-in pixels: zeros).
    old = ImageStackPlan(plan.keys, index["content"].tolist(), 16, lambda key: np.zeros((16, 16, 3), np.uint8))
    write_image_stack(old, tmp_path / "square_16")
    assert write_image_stack(plan, tmp_path / "square_16") == 1  # only the turned photo is rendered again
    stack = read_image_stack(tmp_path / "square_16")
    turned, other = stack.rows(["real/p0.png", "fake/p1.png"])
    np.testing.assert_array_equal(stack.array[turned], decode_square(tree, "real/p0.png", 16))
    assert stack.array[turned].any() and not stack.array[other].any()  # the unturned rows were kept as they were
