"""The eda pipeline through Kedro on the tiny demo, with every kind of broken file mixed in."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from kedro.framework.project import pipelines
from kedro.framework.startup import bootstrap_project
from PIL import Image

from tests.conftest import PROJECT_ROOT

BROKEN = {
    "wiki/00/zero_1990_2000.jpg": "zero_byte",
    "text2img/00/cut_1990_2000.jpg": "truncated",
    "inpainting/00/readme.txt": "not_image",
    "insight/00/tiny_1990_2000.jpg": "too_small",
    "insight/00/huge_1990_2000.png": "too_large",
}
CONVERTED = ["wiki/01/cmyk_1990_2000.jpg", "wiki/01/deep16_1990_2000.png", "wiki/01/pngdata_1990_2000.jpg"]


def add_broken_files(root):
    for source in ("wiki", "text2img", "inpainting", "insight"):
        (root / source / "00").mkdir(exist_ok=True)
    good = next(root.glob("wiki/*/*.jpg")).read_bytes()
    (root / "wiki/00/zero_1990_2000.jpg").write_bytes(b"")
    (root / "text2img/00/cut_1990_2000.jpg").write_bytes(good[: len(good) // 3])
    (root / "inpainting/00/readme.txt").write_text("not an image")
    Image.new("RGB", (8, 8)).save(root / "insight/00/tiny_1990_2000.jpg")
    Image.new("1", (20_000, 10_000)).save(root / "insight/00/huge_1990_2000.png")
    (root / "wiki/01").mkdir(exist_ok=True)
    Image.new("CMYK", (80, 80), (0, 90, 160, 10)).save(root / CONVERTED[0], "JPEG")
    Image.fromarray((np.arange(80 * 80).reshape(80, 80) * 9).astype(np.uint16)).save(root / CONVERTED[1])
    Image.new("RGB", (80, 80), (50, 60, 70)).save(root / CONVERTED[2], "PNG")


def test_eda_is_the_audit_without_caches_or_face_detection():
    bootstrap_project(PROJECT_ROOT)
    eda = pipelines["eda"]
    assert {n.name for n in eda.only_nodes_with_namespaces(["preprocessing"]).nodes} == {
        "preprocessing.audit_images", "preprocessing.index_images", "preprocessing.hash_images",
        "preprocessing.group_near_duplicates", "preprocessing.build_folds"}
    assert not {"image_cache", "face_cache", "face_boxes"} & (eda.inputs() | eda.all_outputs())
    # Training still gets them: every phase pipeline holds the whole preprocessing.
    assert {"image_cache", "face_cache", "face_boxes"} <= pipelines["phase1"].all_outputs()


def test_eda_reports_every_bad_file_and_writes_the_audit(tiny_demo):
    # Indexing alone generates the demo images, so the broken files can join them before the audit.
    tiny_demo.run("eda", node_names=["preprocessing.audit_images"])
    add_broken_files(tiny_demo.path / "data/01_raw/demo")
    tiny_demo.run("eda")
    data = tiny_demo.path / "data/demo"
    written = [p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file()]
    assert not [p for p in written if p.startswith(("03_primary/", "02_intermediate/face_boxes"))]
    eda = tiny_demo.path / "data/demo/08_reporting/eda"
    quality = json.loads((eda / "data_quality.json").read_text())
    excluded = {row["path"]: row for row in quality["excluded_files"]}
    for path, status in BROKEN.items():
        assert excluded[path]["status"] == status and excluded[path]["reason"]
    noted = {row["path"] for row in quality["converted_or_noted"]}
    assert set(CONVERTED) <= noted
    fold_table = pd.read_parquet(tiny_demo.path / "data/demo/05_model_input/fold_table.parquet")
    assert set(CONVERTED) <= set(fold_table["path"]) and not set(BROKEN) & set(fold_table["path"])
    audit = json.loads((eda / "shortcut_audit.json").read_text())
    assert {"auc", "auc_ci_low", "auc_ci_high", "features"} <= set(audit)
    assert 0 <= audit["auc_ci_low"] <= audit["auc"] <= audit["auc_ci_high"] <= 1.000001
    counts = pd.read_csv(eda / "counts.csv")
    assert counts.set_index("source").loc["insight", "excluded"] == 2
    for figure in ("metadata.png", "colour.png", "sample_grid.png"):
        assert (eda / figure).stat().st_size > 5_000
