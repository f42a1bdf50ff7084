import logging
from io import BytesIO

import numpy as np
import pandas as pd
from PIL import Image

from deepfake_kedro.data_index import ImageTree, build_image_index, usable
from deepfake_kedro.eda import data_quality_summary, shortcut_audit
from deepfake_kedro.folds import build_fold_table


def smooth_image(rng: np.random.Generator, size: int = 64) -> Image.Image:
    coarse = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)


def write_jpeg(path, image, quality):
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    path.write_bytes(buffer.getvalue())


def audit_for(tmp_path, real_quality: int, fake_quality: int) -> dict:
    rng = np.random.default_rng(0)
    for i in range(100):
        write_jpeg(tmp_path / "real" / f"{i}.jpg", smooth_image(rng), real_quality)
        write_jpeg(tmp_path / "fake" / f"{i}.jpg", smooth_image(rng), fake_quality)
    index = build_image_index(ImageTree(tmp_path), {"real": "real", "fake": "fake"})
    folds = build_fold_table(usable(index), 5, 0.1, seed=0)
    audit, scores = shortcut_audit(usable(index), folds)
    assert scores["score"].notna().all() and len(audit["fold_aucs"]) == 5
    return audit


def test_jpeg_quality_shortcut_is_caught(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="deepfake_kedro.eda")
    audit = audit_for(tmp_path, real_quality=95, fake_quality=60)
    assert audit["auc"] > 0.9 and audit["warning"]
    assert audit["auc_ci_low"] <= audit["auc"] <= audit["auc_ci_high"]
    assert "jpeg_quality" in audit["features"]
    assert "SHORTCUT" in caplog.text
    # One progress line per fold, the slow part (200 trees each).
    assert [r.getMessage().split(" (")[0] for r in caplog.records if "fold " in r.getMessage()] == [
        f"Shortcut audit: fold {k}/5" for k in range(1, 6)]


def test_an_exif_turn_that_only_real_photos_carry_is_caught(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(100):
        for source, orientation in (("real", 6), ("fake", 1)):  # both tagged: the files differ by the value alone
            exif = Image.Exif()
            exif[0x0112] = orientation
            (tmp_path / source).mkdir(exist_ok=True)
            smooth_image(rng).save(tmp_path / source / f"{i}.jpg", quality=85, exif=exif.tobytes())
    index = usable(build_image_index(ImageTree(tmp_path), {"real": "real", "fake": "fake"}))
    audit, _ = shortcut_audit(index, build_fold_table(index, 5, 0.1, seed=0))
    assert audit["auc"] > 0.95 and audit["warning"] and "exif_turned" in audit["features"]


def test_no_shortcut_when_formats_match(tmp_path):
    audit = audit_for(tmp_path, real_quality=85, fake_quality=85)
    assert audit["auc"] < 0.75 and not audit["warning"]


def test_data_quality_summary_counts_statuses_per_source_and_lists_excluded_files():
    index = pd.DataFrame({"path": ["r/a.jpg", "r/b.png", "f/c.jpg", "f/d.jpg"], "source": ["r", "r", "f", "f"],
                          "status": ["ok", "ok", "ok", "unreadable"], "reason": ["", "converted from PNG", "", "bad"]})
    summary = data_quality_summary(index, {"merged_groups": 3})
    assert (summary["files"], summary["usable"], summary["excluded"]) == (4, 3, 1)
    assert summary["status_per_source"] == {"f": {"ok": 1, "unreadable": 1}, "r": {"ok": 2, "unreadable": 0}}
    assert summary["excluded_files"] == [{"path": "f/d.jpg", "status": "unreadable", "reason": "bad"}]
    assert summary["converted_or_noted"] == [{"path": "r/b.png", "reason": "converted from PNG"}]
    assert summary["near_duplicates"] == {"merged_groups": 3}
