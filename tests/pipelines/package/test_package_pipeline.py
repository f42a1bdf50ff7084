"""`kedro run --pipelines package` on a finished tiny experiment, through Kedro's session and catalog."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepfake_kedro.datasets import ModelPackageDataset
from deepfake_kedro.model_package import calibrate
from deepfake_kedro.run_store import run_key
from deepfake_kedro.serialization import json_safe
from tests.core.test_model_package import FOLDS, finished_experiment


def test_package_pipeline_packages_the_experiment_named_by_predict_model(kedro_project):
    data = kedro_project.path / "data/demo"
    resolved, store, cache, fold_metrics, summary = finished_experiment(data / "06_models/runs")
    (data / "05_model_input/phase1/tiny").mkdir(parents=True)
    (data / "05_model_input/phase1/tiny/resolved_config.json").write_text(json.dumps(resolved.to_json()))
    (data / "08_reporting/phase1/tiny").mkdir(parents=True)
    (data / "08_reporting/phase1/tiny/metrics.json").write_text(json.dumps(json_safe(summary)))
    fold_metrics.to_csv(data / "08_reporting/phase1/tiny/fold_metrics.csv", index=False)

    kedro_project.run("package", params={"predict": {"model": "phase1.tiny"}})
    folder = data / "06_models/package"
    assert "# Model card: phase1.tiny" in (folder / "model_card.md").read_text()
    package = ModelPackageDataset(str(folder)).load()
    assert package.fingerprint == "fp" and len(package.fold_states) == FOLDS
    on_scale = [calibrate(np.array([t]), c)[0] for t, c in zip(fold_metrics["threshold"], package.calibration)]
    assert package.threshold["value"] == pytest.approx(np.mean(on_scale))
    stored = store.read(run_key("fp", 1)).predictions
    pixels = np.asarray(cache.array[cache.rows(stored["path"].tolist())])
    np.testing.assert_allclose(package.predict_folds(pixels, "cpu", calibrated=False)[1], stored["prob"],
                               rtol=1e-5, atol=1e-6)


def test_packaging_an_unfinished_experiment_names_the_missing_file_and_the_runs_environment(kedro_project):
    with pytest.raises(Exception, match=r"phase1.p1_resnet18_baseline is not finished: .*resolved_config.json.*"
                                        r"\(kedro run --env demo --pipelines phase1\)"):
        kedro_project.run("package", params={"predict": {"model": "phase1.p1_resnet18_baseline"}})
    # The default environment's command has no --env, even after a demo run in the same process.
    with pytest.raises(Exception, match=r"run its phase first \(kedro run --pipelines phase1\)"):
        kedro_project.run("package", env="base", params={"predict": {"model": "phase1.p1_resnet18_baseline"}})
