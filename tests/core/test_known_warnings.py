"""Known, harmless library warnings stay out of a user's terminal; every other warning still reaches it."""

from __future__ import annotations

import logging
import os
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
