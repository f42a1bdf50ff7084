"""json_safe: what json.dumps(allow_nan=False) rejects becomes null; numpy scalars become Python numbers."""

from __future__ import annotations

import json

import numpy as np

from deepfake_kedro.serialization import json_safe


def test_nan_and_inf_become_null_at_any_depth():
    value = {"auc": float("nan"), "folds": [{"eer": float("inf")}, (1.5, -float("inf"))], "name": "p1"}
    safe = json_safe(value)
    assert safe == {"auc": None, "folds": [{"eer": None}, [1.5, None]], "name": "p1"}
    json.dumps(safe, allow_nan=False)  # raises on any nan / inf left


def test_numpy_scalars_become_python_numbers():
    safe = json_safe({"n": np.int64(3), "auc": np.float32(0.5), "bad": np.float64("nan"), "flag": np.bool_(True)})
    assert safe == {"n": 3, "auc": 0.5, "bad": None, "flag": True}
    assert type(safe["n"]) is int and type(safe["auc"]) is float and type(safe["flag"]) is bool


def test_input_is_not_modified():
    value = {"a": [float("nan")]}
    json_safe(value)
    assert np.isnan(value["a"][0])
