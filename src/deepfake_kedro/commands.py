"""The ``kedro run`` commands that messages suggest, written for the environment of the current run.

A hook records the run's environment in ``DEEPFAKE_KEDRO_ENV`` (empty for the default one); outside a Kedro
run the variable is unset and the commands carry no ``--env``.
"""

from __future__ import annotations

import os

RUN_ENV_VARIABLE = "DEEPFAKE_KEDRO_ENV"


def kedro_run(arguments: str) -> str:
    """``kedro run <arguments>``, with ``--env <env>`` when the current run is not in the default environment.

    Args:
        arguments: What follows ``kedro run``, e.g. ``--pipelines phase1``.

    Returns:
        The command, e.g. ``kedro run --env demo --pipelines phase1``.
    """
    env = os.environ.get(RUN_ENV_VARIABLE, "").strip()
    return f"kedro run --env {env} {arguments}" if env else f"kedro run {arguments}"
