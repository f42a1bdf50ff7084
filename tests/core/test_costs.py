"""Backbone costs: parameter count, GFLOPs from torch's counter, throughput on the CPU."""

from __future__ import annotations

import pytest
import torch

from deepfake_kedro.costs import experiment_costs, inference_throughput, model_cost
from deepfake_kedro.models import count_parameters, create_model


def test_model_cost_counts_every_parameter_and_flops_grow_with_the_pixels():
    small, large = model_cost("simple_cnn", 32, "micro"), model_cost("simple_cnn", 64, "micro")
    model = create_model("simple_cnn", pretrained=False, cnn_preset="micro")
    assert small["params"] == count_parameters(model) == sum(p.numel() for p in model.parameters())
    assert small["params_m"] == pytest.approx(small["params"] / 1e6)
    # Convolutions dominate and scale with the pixel count: 4x the pixels, close to 4x the FLOPs.
    assert large["gflops"] / small["gflops"] == pytest.approx(4, rel=0.05)
    assert small["params"] == large["params"]


def test_inference_throughput_on_the_cpu_is_fp32():
    speed = inference_throughput("simple_cnn", 32, batch_size=4, device=torch.device("cpu"), cnn_preset="micro",
                                 warmup=1, repeats=2)
    assert speed["device"] == "cpu" and speed["precision"] == "fp32"
    assert speed["device_name"] == f"cpu, {torch.get_num_threads()} threads"
    assert speed["images_per_s"] > 0


def test_experiment_costs_price_each_experiment_at_its_own_size():
    from tests import tiny_tables as tt

    summaries = {name: tt.metrics_summary(name, {"auc": [0.7, 0.8]}, backbone="simple_cnn", cnn_preset="micro",
                                          image_size=size) for name, size in (("at32", 32), ("at64", 64))}
    table = experiment_costs(summaries).set_index("experiment")
    assert table.loc["at64", "gflops"] == model_cost("simple_cnn", 64, "micro")["gflops"]
    assert table.loc["at64", "gflops"] > table.loc["at32", "gflops"]
    assert table.loc["at32", "params_m"] == table.loc["at64", "params_m"]
    assert table.loc["at32", "auc_mean"] == pytest.approx(0.75) and table.loc["at32", "image_size"] == 32
