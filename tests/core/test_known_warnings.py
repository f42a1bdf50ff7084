"""Known, harmless library warnings stay out of a user's terminal; every other warning still reaches it."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deepfake_kedro.known_warnings import silence_known_warnings
from tests.conftest import PROJECT_ROOT

MLFLOW_NOTICE = "Add type hints to the `predict` method to enable data validation"


def test_a_kedro_command_prints_no_mlflow_type_hint_notice() -> None:
    # Tracking on, as a user runs it: kedro-mlflow's commands and hook load.
    env = {key: value for key, value in os.environ.items() if key != "DEEPFAKE_KEDRO_TRACKING"}
    kedro = Path(sys.executable).parent / "kedro"
    done = subprocess.run([str(kedro), "registry", "list"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "- phase1" in done.stdout
    assert "Add type hints" not in done.stdout + done.stderr


def test_only_the_known_notice_is_dropped_from_the_log(caplog: pytest.LogCaptureFixture) -> None:
    silence_known_warnings()
    # What logging.captureWarnings does with a warning (Kedro turns it on): one record on "py.warnings".
    warnings_log = logging.getLogger("py.warnings")
    warnings_log.warning("%s", f"data_validation.py:187: UserWarning: \x1b[33m{MLFLOW_NOTICE}. Check the docs.\x1b[0m")
    warnings_log.warning("%s", "face_crops.py:80: UserWarning: a corrupt image was skipped")
    messages = [record.getMessage() for record in caplog.records if record.name == "py.warnings"]
    assert any("a corrupt image was skipped" in message for message in messages)
    assert not any(MLFLOW_NOTICE in message for message in messages)


def test_a_second_checkout_sharing_the_venv_runs_its_own_code(tmp_path: Path) -> None:
    # The venv's editable install points at this checkout; `kedro` run in another checkout must still load that
    # checkout's package, even though the kedro.init entry point imports the installed one first.
    other = tmp_path / "other_checkout"
    for part in ("src", "conf"):
        shutil.copytree(PROJECT_ROOT / part, other / part, ignore=shutil.ignore_patterns("__pycache__", "local"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", other)
    (other / "conf" / "local").mkdir()
    registry = other / "src" / "deepfake_kedro" / "pipeline_registry.py"
    source = registry.read_text()
    assert source.count("    return pipelines\n") == 1
    registry.write_text(source.replace("    return pipelines\n",
                                       '    pipelines["only_in_the_other_checkout"] = pipelines["phase1"]\n'
                                       "    return pipelines\n"))
    env = {key: value for key, value in os.environ.items() if key != "DEEPFAKE_KEDRO_TRACKING"}
    done = subprocess.run([str(Path(sys.executable).parent / "kedro"), "registry", "list"], cwd=other, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "- only_in_the_other_checkout" in done.stdout
    assert "Add type hints" not in done.stdout + done.stderr
