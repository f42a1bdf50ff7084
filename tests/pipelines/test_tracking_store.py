"""MLflow's store is the project's, whichever folder a session is opened from."""

from __future__ import annotations

import os
import subprocess
import sys

OPEN_SESSION = """
import sys, mlflow
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
bootstrap_project(sys.argv[1])
with KedroSession.create(project_path=sys.argv[1], env="demo") as session:
    session.load_context()
    print(mlflow.get_tracking_uri())
"""


def test_a_session_opened_elsewhere_tracks_into_the_projects_mlflow_db(kedro_project, tmp_path):
    # A notebook kernel starts in notebooks/, a scheduler anywhere: sqlite:///mlflow.db used to land there.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    opened = subprocess.run([sys.executable, "-c", OPEN_SESSION, str(kedro_project.path)], cwd=elsewhere,
                            capture_output=True, text=True, env={**os.environ, "DEEPFAKE_KEDRO_TRACKING": "on"})
    assert opened.returncode == 0, opened.stderr[-3000:]
    assert opened.stdout.strip().splitlines()[-1] == f"sqlite:///{(kedro_project.path / 'mlflow.db').as_posix()}"
    assert (kedro_project.path / "mlflow.db").exists()
    assert list(elsewhere.iterdir()) == []
    experiment = subprocess.run([sys.executable, "-c", "import mlflow, sys; mlflow.set_tracking_uri(sys.argv[1]); "
                                 "print(mlflow.get_experiment_by_name(\"deepfake_kedro\").artifact_location)",
                                 opened.stdout.strip().splitlines()[-1]], capture_output=True, text=True)
    assert experiment.stdout.strip() == (kedro_project.path / "mlruns").as_uri(), experiment.stderr[-2000:]


def test_with_tracking_off_kedro_mlflow_ui_still_finds_the_projects_store(kedro_project):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from deepfake_kedro.tracking import tracking_enabled

    assert not tracking_enabled()  # the tests' setting
    bootstrap_project(kedro_project.path)
    with KedroSession.create(project_path=kedro_project.path, env="demo") as session:
        context = session.load_context()
    # What `kedro mlflow ui` reads; kedro-mlflow's own hook, off with tracking, used to be the only one to set it.
    assert context.mlflow.server.mlflow_tracking_uri == f"sqlite:///{(kedro_project.path / 'mlflow.db').as_posix()}"
    assert (context.mlflow.ui.host, context.mlflow.ui.port) == ("127.0.0.1", "5000")
    assert not (kedro_project.path / "mlflow.db").exists(), "tracking off opens no store"


def test_a_tracking_server_that_does_not_answer_falls_back_to_the_projects_store_with_a_warning(kedro_project):
    import socket

    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kedro_project.edit_yaml("conf/base/mlflow.yml", {"server": {"mlflow_tracking_uri": f"http://127.0.0.1:{port}"}})
    opened = subprocess.run([sys.executable, "-c", OPEN_SESSION, str(kedro_project.path)], cwd=kedro_project.path,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "DEEPFAKE_KEDRO_TRACKING": "on", "COLUMNS": "400"})  # rich: no wrap
    assert opened.returncode == 0, opened.stderr[-3000:]
    assert opened.stdout.strip().splitlines()[-1] == f"sqlite:///{(kedro_project.path / 'mlflow.db').as_posix()}"
    log = " ".join((opened.stdout + opened.stderr).split())
    assert f"tracking server http://127.0.0.1:{port} does not answer" in log
