import pytest
import timm
import torch

from deepfake_kedro.models import (
    BACKBONES,
    MIN_CAM_SIDE,
    PretrainedWeightsError,
    cam_target_layer,
    count_parameters,
    create_model,
)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_gives_one_logit_and_a_cam_layer(name):
    model = create_model(name, pretrained=False, cnn_preset="micro")
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1)
    assert isinstance(cam_target_layer(name, model), torch.nn.Module)
    if BACKBONES[name].timm_name:
        reference = timm.create_model(BACKBONES[name].timm_name, pretrained=False, num_classes=1)
        assert count_parameters(model) == count_parameters(reference)


def _map_side(model, layer, image_size):
    seen = []
    handle = layer.register_forward_hook(lambda _m, _i, output: seen.append(output.shape[-2:]))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    handle.remove()
    return min(seen[0])


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("image_size", [32, 64])
def test_cam_layer_is_the_deepest_stage_with_a_map_of_at_least_4x4(name, image_size):
    model = create_model(name, pretrained=False, cnn_preset="small")
    chosen = cam_target_layer(name, model, image_size)
    stages = BACKBONES[name].cam_stages(model)
    sides = [_map_side(model, stage, image_size) for stage in stages]
    position = next(i for i, stage in enumerate(stages) if stage is chosen)
    assert sides[position] >= MIN_CAM_SIDE
    # Every deeper stage would be smaller than 4 x 4: the chosen one is the deepest that can still say where.
    assert all(side < MIN_CAM_SIDE for side in sides[position + 1:])


def test_missing_pretrained_weights_is_a_clear_error_not_a_random_init(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsError, match="pretrained_path"):
        create_model("resnet18", pretrained=True)
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        create_model("resnet18", pretrained=True, pretrained_path="/nowhere/resnet18.safetensors")
    with pytest.raises(PretrainedWeightsError, match="simple_cnn"):
        create_model("simple_cnn", pretrained=True)


def test_local_weights_file_is_loaded(tmp_path):
    source = timm.create_model("resnet18", pretrained=False)  # stands in for downloaded ImageNet weights
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    model = create_model("resnet18", pretrained=True, pretrained_path=str(tmp_path / "resnet18.pth"))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert model.fc.out_features == 1


def test_a_weights_file_that_does_not_fit_is_an_error_not_a_silent_random_init(tmp_path):
    source = timm.create_model("resnet18", pretrained=False)
    # Saved from a wrapped model: every key carries a prefix, so nothing would load.
    torch.save({f"model.{k}": v for k, v in source.state_dict().items()}, tmp_path / "prefixed.pth")
    with pytest.raises(PretrainedWeightsError, match=r"does not hold resnet18's weights: .* unexpected keys"):
        create_model("resnet18", pretrained=True, pretrained_path=str(tmp_path / "prefixed.pth"))
    # Another architecture's weights: resnet34 has blocks resnet18 lacks.
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(PretrainedWeightsError, match=r"unexpected keys \(e.g. \['layer1.2"):
        create_model("resnet18", pretrained=True, pretrained_path=str(tmp_path / "resnet34.pth"))
    # A checkpoint that nests the weights (timm's training script) loads, classifier aside.
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pth")
    model = create_model("resnet18", pretrained=True, pretrained_path=str(tmp_path / "checkpoint.pth"))
    assert torch.equal(model.conv1.weight, source.conv1.weight) and model.fc.out_features == 1


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_gives_num_classes_logits(name):
    model = create_model(name, pretrained=False, cnn_preset="micro", num_classes=4)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 4)
