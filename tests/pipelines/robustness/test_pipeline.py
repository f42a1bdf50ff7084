"""`kedro run --pipelines robustness` on a finished tiny experiment, through Kedro's session and catalog."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from deepfake_kedro.data_index import content_digest
from deepfake_kedro.datasets import ReportSectionDataset
from deepfake_kedro.face_crops import BOX_COLUMNS
from deepfake_kedro.report_sections import section_slides
from deepfake_kedro.serialization import json_safe
from tests.conftest import KedroProject
from tests.core.test_robustness import trained_study

MODEL = "phase4.tiny"


def finish_tiny_experiment(project: KedroProject) -> pd.DataFrame:
    """A trained, evaluated tiny experiment laid out as the catalog writes it, on raw images at the demo's root.

    Returns:
        Its out-of-fold predictions.
    """
    data = project.path / "data/demo"
    oof, fold_metrics, summary, _, package = trained_study(project.path / "data/01_raw/demo", data / "06_models/runs")
    (data / "05_model_input/phase4/tiny").mkdir(parents=True)
    (data / "05_model_input/phase4/tiny/resolved_config.json").write_text(json.dumps(package.resolved.to_json()))
    (data / "08_reporting/phase4/tiny").mkdir(parents=True)
    (data / "08_reporting/phase4/tiny/metrics.json").write_text(json.dumps(json_safe(summary)))
    fold_metrics.to_csv(data / "08_reporting/phase4/tiny/fold_metrics.csv", index=False)
    (data / "02_intermediate").mkdir(parents=True)
    pd.DataFrame(columns=["key", *BOX_COLUMNS]).to_parquet(data / "02_intermediate/face_boxes.parquet")
    write_study_index(project)
    # Only this experiment is finished: the demo's extra robustness model (a phase-2 face-crop run) is not.
    project.edit_yaml("conf/demo/parameters.yml", {"robustness": {"extra_models": []}})
    return oof


def write_study_index(project: KedroProject) -> None:
    """The study's image index as preprocessing writes it (path and content digest are what external reads)."""
    raw = project.path / "data/01_raw/demo"
    files = sorted(str(p.relative_to(raw)) for p in raw.rglob("*") if p.is_file())
    index = pd.DataFrame({"path": files, "content": [content_digest((raw / f).read_bytes()) for f in files]})
    index.to_parquet(project.path / "data/demo/02_intermediate/image_index.parquet")


def test_robustness_pipeline_writes_the_table_curves_and_slide_with_the_clean_auc_reproduced(kedro_project):
    oof = finish_tiny_experiment(kedro_project)
    kedro_project.edit_yaml("conf/base/parameters_robustness.yml", {"robustness": {
        "models": [MODEL],
        "corruptions": {"jpeg": [90, 30], "gaussian_blur": [2], "downscale": [], "gaussian_noise": []}}})
    kedro_project.run("robustness")

    reporting = kedro_project.path / "data/demo/08_reporting"
    table = pd.read_csv(reporting / "robustness/robustness.csv")
    assert table[["corruption", "severity"]].values.tolist() == [["clean", 0], ["jpeg", 90], ["jpeg", 30],
                                                                   ["gaussian_blur", 2]]
    # Clean, the pooled AUC is the study's own: each fold model's p(fake) on its calibrated scale, then pooled.
    study = json.loads((reporting / "phase4/tiny/metrics.json").read_text())
    assert table.loc[0, "auc"] == pytest.approx(study["pooled"]["auc"], abs=1e-9)
    assert table.loc[0, "fold_auc_mean"] == pytest.approx(study["metrics"]["auc"]["mean"], abs=1e-9)
    assert abs(table.loc[0, "auc"] - roc_auc_score(oof["label"], oof["prob"])) > 1e-6  # not the raw pool
    assert table["p_holm"].iloc[1:].between(0, 1).all() and table["p_holm"].isna().iloc[0]
    assert (reporting / "robustness/degradation_curves.png").stat().st_size > 0
    section = ReportSectionDataset(str(reporting / "sections/robustness")).load()
    assert section.name == "robustness" and len(section_slides(section)) == 2
    assert section.table["corruption"].tolist() == ["clean", "jpeg 90", "jpeg 30", "gaussian_blur 2"]
    assert list(section.table.columns) == ["corruption", MODEL]


def test_a_robustness_run_resumes_from_the_chunks_it_finished(kedro_project):
    finish_tiny_experiment(kedro_project)
    kedro_project.edit_yaml("conf/base/parameters_robustness.yml", {"robustness": {
        "models": [MODEL], "corruptions": {"jpeg": [50], "gaussian_blur": [], "downscale": [], "gaussian_noise": []}}})
    kedro_project.run("robustness")
    output = kedro_project.path / "data/demo/07_model_output/robustness"
    scores = pd.read_parquet(output / "scores.parquet")
    parts = sorted((output / "scores.parquet.parts").rglob("*.parquet"))
    assert [p.parent.name for p in parts] == ["fold_0", "fold_1"]  # one chunk per fold of the tiny study
    written = {p: p.stat().st_mtime_ns for p in parts}
    # What a run killed in fold 1's chunk leaves: fold 0's part finished, fold 1's never signed.
    parts[1].with_suffix(".signature").unlink()
    kedro_project.run("robustness")
    assert parts[0].stat().st_mtime_ns == written[parts[0]] and parts[1].stat().st_mtime_ns != written[parts[1]]
    pd.testing.assert_frame_equal(pd.read_parquet(output / "scores.parquet"), scores)


def test_robustness_without_a_finished_final_model_names_the_missing_file(kedro_project):
    data = kedro_project.path / "data"
    (data / "01_raw/demo").mkdir(parents=True)
    (data / "demo/02_intermediate").mkdir(parents=True)
    pd.DataFrame(columns=["key", *BOX_COLUMNS]).to_parquet(data / "demo/02_intermediate/face_boxes.parquet")
    with pytest.raises(Exception, match=r"phase4.top1_full is not finished: .*resolved_config.json"):
        kedro_project.run("robustness")
