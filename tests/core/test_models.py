import pytest
import timm
import torch

from deepfake_kedro.models import BACKBONES, PretrainedWeightsError, cam_target_layer, count_parameters, create_model


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_gives_one_logit_and_a_cam_layer(name):
    model = create_model(name, pretrained=False, cnn_preset="micro")
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1)
    assert isinstance(cam_target_layer(name, model), torch.nn.Module)
    if BACKBONES[name].timm_name:
        reference = timm.create_model(BACKBONES[name].timm_name, pretrained=False, num_classes=1)
        assert count_parameters(model) == count_parameters(reference)


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


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_gives_num_classes_logits(name):
    model = create_model(name, pretrained=False, cnn_preset="micro", num_classes=4)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 4)
