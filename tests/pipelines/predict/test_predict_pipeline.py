"""`kedro run --pipelines predict` right after a finished experiment: package, then predictions for a folder."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake_kedro.serialization import json_safe
from tests.core.test_inference import finished_from_files, write_video


def test_predict_pipeline_packages_the_model_and_scores_a_folder_with_broken_files(kedro_project):
    data = kedro_project.path / "data/demo"
    resolved, _, fold_metrics, summary = finished_from_files(data / "06_models")
    (data / "05_model_input/phase1/tiny").mkdir(parents=True)
    (data / "05_model_input/phase1/tiny/resolved_config.json").write_text(json.dumps(resolved.to_json()))
    (data / "08_reporting/phase1/tiny").mkdir(parents=True)
    (data / "08_reporting/phase1/tiny/metrics.json").write_text(json.dumps(json_safe(summary)))
    fold_metrics.to_csv(data / "08_reporting/phase1/tiny/fold_metrics.csv", index=False)
    inputs = kedro_project.path / "inputs"
    (inputs / "nested").mkdir(parents=True)
    images = sorted((data / "06_models/raw/wiki").rglob("*.jpg"))[:3]
    for image in images:
        (inputs / "nested" / image.name).write_bytes(image.read_bytes())
    write_video(inputs / "clip.avi", [np.asarray(Image.open(images[0]))] * 4)
    (inputs / "truncated.jpg").write_bytes(images[0].read_bytes()[:150])
    (inputs / "readme.txt").write_text("not an image")

    # The tiny study's raw images are 24 x 20: below the demo's min_image_size they would be too_small.
    kedro_project.edit_yaml("conf/demo/parameters.yml", {"preprocessing": {"min_image_size": 16}})
    started = time.perf_counter()
    kedro_project.run("predict", params={"predict": {"model": "phase1.tiny", "input": str(inputs),
                                                     "video": {"frames": 3, "rule": "topk_mean", "k": 2}}})
    seconds = time.perf_counter() - started
    out = data / "08_reporting/predict"
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 6 and set(predictions["path"]) == {
        *(str(inputs / "nested" / i.name) for i in images), str(inputs / "clip.avi"), str(inputs / "truncated.jpg"),
        str(inputs / "readme.txt")}
    status = dict(zip(predictions["path"].map(lambda p: p.rsplit("/", 1)[-1]), predictions["status"]))
    assert status["truncated.jpg"] == "unreadable" and status["readme.txt"] == "not_media"
    assert status["clip.avi"] == "ok"
    frames = pd.read_csv(out / "frame_scores.csv")
    assert len(frames) == 3 and frames["counted"].sum() == 2
    clip = predictions.set_index("path").loc[str(inputs / "clip.avi")]
    assert clip["p_fake"] == pytest.approx(frames.loc[frames["counted"], "p_fake"].mean(), rel=1e-6)
    assert "mean of the 2 most fake of 3 frames" in clip["reason"]
    with Image.open(out / "gallery.png") as gallery:
        assert gallery.width > 200
    assert (data / "06_models/package/package.json").exists()
    assert seconds < 120
