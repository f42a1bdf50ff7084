"""Warnings from the libraries beneath the project that tell a user nothing to act on, silenced in one place.

`settings.py` calls `silence_known_warnings` for sessions opened from Python (notebooks, tests); the `kedro.init`
entry point in pyproject.toml calls `silence_known_warnings_for_kedro_cli` on every `kedro` command, before Kedro
imports its plugins' commands.
"""

from __future__ import annotations

import logging
import sys
import warnings


def silence_known_warnings() -> None:
    """Ignore the known, harmless warnings below; every other warning still shows."""
    # Kedro 1.7 calls an OmegaConf API that OmegaConf now marks deprecated.
    warnings.filterwarnings("ignore", message=r".*register_new_resolver\(\) is deprecated", category=UserWarning)
    # Kedro warns about any dotted dataset name a node reads outside its own namespace, which is how phase 2
    # compares phase 1's experiments and reporting reads every experiment: namespaced outputs, read by name.
    # Every dotted name a node writes is its own namespace's (tests/pipelines/test_namespaces.py).
    warnings.filterwarnings("ignore", message=r"One or more dataset names contain '\.' characters",
                            category=UserWarning)
    # kedro-mlflow's CLI imports its pipeline model, whose `predict` has no type hints; mlflow warns (twelve
    # coloured lines) as the class is defined. The project logs no MLflow models, only params, metrics and figures.
    # mlflow raises it under its own `simplefilter("once")`, which overrides any warnings filter, so the log drops it.
    logging.getLogger("py.warnings").addFilter(_not_mlflow_type_hint_notice)


def silence_known_warnings_for_kedro_cli() -> None:
    """The ``kedro.init`` entry point: silences the known warnings, then forgets this package's modules.

    Kedro runs it before it puts the project's own ``src`` first on ``sys.path``. Kept in ``sys.modules``, the
    package would stay the one the venv installed, so a venv shared by two checkouts would run the other
    checkout's code. The filters stay installed; the next import finds the project's copy.
    """
    silence_known_warnings()
    package = __name__.partition(".")[0]
    for name in [name for name in sys.modules if name == package or name.startswith(f"{package}.")]:
        del sys.modules[name]


def _not_mlflow_type_hint_notice(record: logging.LogRecord) -> bool:
    return "Add type hints to the `predict` method" not in record.getMessage()
