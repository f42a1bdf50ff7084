import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score
from torch import nn

from deepfake_kedro.config import ExperimentConfig
from deepfake_kedro.explain import (
    FLAT_CAM_NOTE,
    PRED_TYPES,
    cam_comparison_grid,
    cam_is_flat,
    cam_mass_in_region,
    choose_examples,
    explain_examples,
    explanation_table,
    gradcam_gallery,
    gradcam_maps,
    load_fold_model,
    overlay,
    prediction_types,
)
from deepfake_kedro.image_cache import ImageStack
from deepfake_kedro.models import BACKBONES, create_model
from deepfake_kedro.run_store import FoldResult, FoldRunStore, run_key
from deepfake_kedro.training import IMAGENET_MEAN, IMAGENET_STD, Normalizer, train_step

CPU = torch.device("cpu")
IMAGENET = Normalizer(IMAGENET_MEAN, IMAGENET_STD)
ARTEFACT_BOX = (0.5, 0.5, 1.0, 1.0)  # the bottom-right quadrant: a quarter of the image

# At 32 px (the demo's size) every timm backbone here (total stride 32) ends in a 1x1 feature map, whose
# Grad-CAM is one number: the registry then explains the stage before (stride 16). 64 px exercises the
# last stage itself (ConvNeXt's unpadded stem and downsampling layers round 32..63 px down to 1x1).
CAM_TEST_SIZES = (32, 64)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny inputs gain nothing from threads, and on shared cores OpenMP spin-waiting made them ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_model(name: str, seed: int, preset: str = "small") -> nn.Module:
    """A randomly initialised backbone whose prediction comes from the image, not the head's bias.

    A random bias can outweigh random features; the predicted class then has no positive spatial
    evidence and Grad-CAM is rightly all zero (nn.Linear draws a bias for ResNet and SimpleCNN,
    timm zero-initialises the others' heads).
    """
    torch.manual_seed(seed)
    model = create_model(name, pretrained=False, cnn_preset=preset)
    head = model.head if name == "simple_cnn" else model.get_classifier()
    nn.init.zeros_(head.bias)
    return model


@pytest.mark.parametrize("size", CAM_TEST_SIZES)
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_gives_one_real_map_per_image(name, size):
    pixels = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    model = random_model(name, seed=0)
    cams = gradcam_maps(model, name, pixels, IMAGENET)
    assert cams.shape == (2, size, size) and cams.dtype == np.float32
    assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1
    fake, real = (gradcam_maps(model, name, pixels, IMAGENET, target=t) for t in ("fake", "real"))
    for cam, for_fake, for_real in zip(cams, fake, real):
        # A 2x2 map (the demo's 32 px) can hold no positive evidence for the predicted class at all; then
        # Grad-CAM is rightly zero, and the other class's map must carry the spatial signal instead.
        assert cam.max() > cam.min() or (cam.max() == 0 and max(np.ptp(for_fake), np.ptp(for_real)) > 0)
    assert not model.training


def test_predicted_target_explains_the_class_the_model_calls_even_under_no_grad():
    pixels = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    model = random_model("simple_cnn", seed=1).eval()
    inputs = IMAGENET(torch.from_numpy(pixels), CPU)
    with torch.no_grad():
        middle = model(inputs).squeeze(1).sort().values[3:5].mean()
        model.head.bias.fill_(-middle)  # half the images called fake, half real
        called_fake = (model(inputs).squeeze(1) >= 0).numpy()
        predicted = gradcam_maps(model, "simple_cnn", pixels, IMAGENET, batch_size=3)
    assert called_fake.sum() == 4
    fake = gradcam_maps(model, "simple_cnn", pixels, IMAGENET, target="fake")
    real = gradcam_maps(model, "simple_cnn", pixels, IMAGENET, target="real")
    expected = np.where(called_fake[:, None, None], fake, real)
    np.testing.assert_allclose(predicted, expected, atol=1e-6)
    assert not np.allclose(fake, real)


def test_maps_never_contain_nan_even_when_the_model_outputs_nan():
    pixels = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    broken = Normalizer(IMAGENET_MEAN, (0.0, 0.0, 0.0))  # division by zero: inf / NaN inputs
    cams = gradcam_maps(random_model("simple_cnn", seed=2), "simple_cnn", pixels, broken)
    assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1


def artefact_study(n: int = 160, size: int = 48, patch: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth noisy backgrounds; fakes carry a checkerboard patch somewhere inside ``ARTEFACT_BOX``.

    48 px, not 32: SimpleCNN's last block sees 36 px, so at 32 px every cell of its 4x4 map sees the
    whole image and Grad-CAM cannot localise anything (box mass about 0.40 there, 0.6 at 48 px).
    """
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.normal(120, 40, (n, 3, 4, 4)).astype(np.float32))
    background = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    images = background.permute(0, 2, 3, 1).numpy() + rng.normal(0, 6, (n, size, size, 3))
    labels = np.arange(n) % 2
    checkerboard = 40.0 * (np.indices((patch, patch)).sum(axis=0) % 2 * 2 - 1)[..., None]
    low, high = int(ARTEFACT_BOX[0] * size), size - patch
    for index in np.flatnonzero(labels == 1):
        y, x = rng.integers(low, high + 1, 2)
        images[index, y:y + patch, x:x + patch] += checkerboard
    return np.clip(images, 0, 255).astype(np.uint8), labels


def test_cam_of_a_trained_model_lands_on_the_artefact():
    pixels, labels = artefact_study()
    normalizer = Normalizer((0.47, 0.47, 0.47), (0.17, 0.17, 0.17))
    inputs, targets = normalizer(torch.from_numpy(pixels), CPU), torch.from_numpy(labels.astype(np.float32))
    torch.manual_seed(0)
    model = create_model("simple_cnn", cnn_preset="small")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(0)
    for _ in range(6):
        model.train()
        for batch in torch.randperm(len(inputs), generator=order).split(20):
            train_step(model, inputs[batch], targets[batch], optimizer, nn.BCEWithLogitsLoss(), CPU)
    with torch.no_grad():
        scores = model.eval()(inputs).squeeze(1).numpy()
    assert roc_auc_score(labels, scores) > 0.9
    cams = gradcam_maps(model, "simple_cnn", pixels[labels == 1], normalizer, target="fake")
    masses = np.array([cam_mass_in_region(cam, ARTEFACT_BOX) for cam in cams])
    area = 0.25
    assert np.isnan(masses).mean() < 0.1
    assert np.nanmean(masses) > area + 0.15, f"mean box mass {np.nanmean(masses):.2f}"


def synthetic_oof(n: int = 150, seed: int = 0) -> pd.DataFrame:
    """Out-of-fold predictions of one real and two fake sources, mostly right, some confidently wrong."""
    rng = np.random.default_rng(seed)
    source = np.array(["ffhq", "stylegan", "diffusion"])[rng.integers(0, 3, n)]
    label = (source != "ffhq").astype(int)
    prob = np.where(label == 1, rng.beta(4, 2, n), rng.beta(2, 4, n))
    return pd.DataFrame({
        "path": [f"{s}/{i:04d}.png" for i, s in enumerate(source)], "source": source, "label": label,
        "group": [f"id{i // 3}" for i in range(n)], "fold": rng.integers(0, 5, n), "prob": prob,
    })


def test_choose_examples_spreads_over_prediction_types_and_sources_most_confident_first():
    oof = synthetic_oof()
    chosen = choose_examples(oof, n_images=16)
    assert 10 <= len(chosen) <= 20 and len(chosen) == 16
    assert set(chosen["pred_type"]) == set(PRED_TYPES)
    assert (chosen["pred_type"].to_numpy() == prediction_types(chosen["label"], chosen["prob"])).all()
    assert chosen["path"].is_unique and set(chosen["path"]) <= set(oof["path"])
    everything = oof.assign(pred_type=prediction_types(oof["label"], oof["prob"]),
                            confidence=(oof["prob"] - 0.5).abs())
    cells = everything.groupby(["pred_type", "source"])
    assert set(chosen.groupby(["pred_type", "source"]).groups) == set(cells.groups)  # 6 cells: all get a turn
    for pred_type in PRED_TYPES:
        assert (chosen["pred_type"] == pred_type).sum() >= min(4, (everything["pred_type"] == pred_type).sum())
    for (_pred_type, _source), cell in cells:
        picked = cell["path"].isin(chosen["path"])
        if picked.any() and not picked.all():
            assert cell.loc[picked, "confidence"].min() >= cell.loc[~picked, "confidence"].max()


def test_choose_examples_judges_each_image_at_its_folds_threshold():
    oof = synthetic_oof().assign(threshold=0.8)
    chosen = choose_examples(oof, n_images=len(oof))
    assert (chosen["pred_type"].to_numpy() == prediction_types(chosen["label"], chosen["prob"], 0.8)).all()
    # A real at p = 0.6 is a true negative at 0.8, though it would be a false positive at 0.5.
    between = chosen[(chosen["label"] == 0) & chosen["prob"].between(0.5, 0.8)]
    assert len(between) and set(between["pred_type"]) == {"TN"}


def test_choose_examples_is_deterministic_and_breaks_ties_by_path():
    oof = synthetic_oof()
    shuffled = oof.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(choose_examples(oof), choose_examples(shuffled))
    tied = pd.DataFrame({"path": [f"img_{i:02d}.png" for i in range(30)][::-1], "source": "ffhq",
                         "label": 0, "group": "g", "fold": 0, "prob": 0.2})
    assert choose_examples(tied, n_images=12)["path"].tolist() == [f"img_{i:02d}.png" for i in range(12)]


def test_choose_examples_fills_empty_cells_from_the_others():
    oof = synthetic_oof()
    calls = prediction_types(oof["label"], oof["prob"])
    without_fp = oof[(calls != "FP") & ((calls != "FN") | (np.cumsum(calls == "FN") == 1))]
    chosen = choose_examples(without_fp, n_images=16)
    assert len(chosen) == 16
    assert chosen["pred_type"].value_counts().to_dict().get("FP", 0) == 0
    assert (chosen["pred_type"] == "FN").sum() == 1
    assert len(choose_examples(oof.head(5), n_images=16)) == 5


def test_each_image_is_explained_by_the_model_of_its_own_fold():
    oof = synthetic_oof()
    pixels = np.random.default_rng(4).integers(0, 256, (len(oof), 32, 32, 3), dtype=np.uint8)
    cache = ImageStack(oof["path"].tolist(), oof["path"].tolist(), pixels)
    examples = choose_examples(oof, n_images=12)
    calls, models, seen = [], {}, {}

    def fold_model_loader(fold: int) -> tuple[nn.Module, Normalizer]:
        calls.append(fold)
        models[fold] = random_model("simple_cnn", seed=100 + fold, preset="micro")
        models[fold].register_forward_pre_hook(lambda _, args, fold=fold: seen.setdefault(fold, []).append(args[0]))
        return models[fold], IMAGENET

    explained = explain_examples(examples, cache, fold_model_loader, "simple_cnn")
    assert sorted(calls) == sorted(set(examples["fold"])) and len(set(examples["fold"])) > 1
    inputs_seen = {fold: torch.cat(batches) for fold, batches in seen.items()}
    different_elsewhere = 0
    for item, row in zip(explained, examples.itertuples()):
        assert (item["path"], item["source"], item["fold"], item["pred_type"]) == (row.path, row.source, row.fold,
                                                                                    row.pred_type)
        assert item["prob"] == row.prob and item["label"] == row.label
        np.testing.assert_array_equal(item["image"], pixels[cache.rows([row.path])[0]])
        model_input = IMAGENET(torch.from_numpy(item["image"][None]), CPU)
        for fold, inputs in inputs_seen.items():
            fed = bool((inputs == model_input).flatten(1).all(1).any())
            assert fed == (fold == row.fold), f"{row.path} (fold {row.fold}) went through fold {fold}'s model"
        own = gradcam_maps(models[row.fold], "simple_cnn", item["image"][None], IMAGENET)[0]
        np.testing.assert_allclose(item["cam"], own, atol=1e-5)
        other = models[min(set(models) - {row.fold})]
        different_elsewhere += not np.allclose(gradcam_maps(other, "simple_cnn", item["image"][None], IMAGENET)[0], own)
    assert different_elsewhere == len(explained)  # so matching its own fold's map means something


def test_load_fold_model_rebuilds_the_stored_model_and_normalization(tmp_path):
    torch.manual_seed(5)
    trained = create_model("simple_cnn", cnn_preset="micro", dropout=0.3)
    trained(torch.randn(4, 3, 32, 32))  # moves BatchNorm's running statistics off their defaults
    config = ExperimentConfig(backbone="simple_cnn", cnn_preset="micro", dropout=0.3, pretrained=False)
    meta = {"fold": 2, "config": config.model_dump(mode="json"),
            "normalization_mean": [0.4, 0.5, 0.6], "normalization_std": [0.2, 0.3, 0.1]}
    store = FoldRunStore(tmp_path)
    store.write(run_key("abc123", 2), FoldResult(trained.state_dict(), pd.DataFrame({"epoch": [1]}),
                                                 pd.DataFrame({"path": ["a.png"]}), meta))
    model, normalizer = load_fold_model(store, "abc123", 2, device="cpu")
    assert normalizer == Normalizer((0.4, 0.5, 0.6), (0.2, 0.3, 0.1))
    assert not model.training
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), trained.eval()(x))


def test_overlay_is_uint8_rgb_with_red_where_the_cam_is_hot():
    image = np.full((24, 40, 3), 128, dtype=np.uint8)
    cam = np.zeros((24, 40), dtype=np.float32)
    cam[:, :20] = 1.0
    blended = overlay(image, cam)
    assert blended.shape == (24, 40, 3) and blended.dtype == np.uint8
    hot, cold = blended[:, :20].reshape(-1, 3).mean(0), blended[:, 20:].reshape(-1, 3).mean(0)
    assert hot[0] > hot[2] and cold[2] > cold[0]
    with pytest.raises(ValueError, match="does not match"):
        overlay(image, cam[:, :10])


def test_gallery_has_one_captioned_axis_per_image():
    rng = np.random.default_rng(6)
    explained = [
        {"path": f"p{i}.png", "source": source, "label": label, "fold": 0, "prob": prob, "pred_type": kind,
         "image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "cam": rng.random((32, 32), dtype=np.float32)}
        for i, (kind, source, label, prob) in enumerate([("TP", "stylegan", 1, 0.87), ("TN", "ffhq", 0, 0.1),
                                                         ("FP", "ffhq", 0, 0.7), ("FN", "diffusion", 1, 0.3),
                                                         ("TP", "diffusion", 1, 0.99)])
    ]
    figure = gradcam_gallery(explained, "Grad-CAM")
    assert isinstance(figure, Figure) and len(figure.axes) == len(explained)
    first = figure.axes[0]
    assert "TP" in first.get_xlabel() and "stylegan" in first.get_xlabel()
    assert "p(fake)=0.87" in first.get_xlabel() and "label fake" in first.get_xlabel()
    np.testing.assert_array_equal(first.images[0].get_array(), overlay(explained[0]["image"], explained[0]["cam"]))
    assert "CAM all zero" not in first.get_xlabel()
    # A map with no evidence anywhere says so, instead of showing a plain picture as if it were explained.
    flat = gradcam_gallery([{**explained[0], "cam": np.zeros((32, 32), np.float32)}], "Grad-CAM").axes[0]
    assert "CAM all zero" in flat.get_xlabel()


def test_cam_mass_in_region_is_the_share_of_the_map_inside_the_box():
    assert cam_mass_in_region(np.ones((32, 32)), ARTEFACT_BOX) == pytest.approx(0.25)
    inside_only = np.zeros((32, 32))
    inside_only[20:28, 18:30] = 0.7
    assert cam_mass_in_region(inside_only, ARTEFACT_BOX) == pytest.approx(1.0)
    assert cam_mass_in_region(inside_only, (0.0, 0.0, 0.5, 0.5)) == 0.0
    assert np.isnan(cam_mass_in_region(np.zeros((8, 8)), ARTEFACT_BOX))
    with pytest.raises(ValueError, match="box_fraction"):
        cam_mass_in_region(inside_only, (0.5, 0.0, 0.4, 1.0))


def test_explanation_table_scores_each_cam_against_its_own_face_box():
    hot_top_left = np.zeros((32, 32), dtype=np.float32)
    hot_top_left[0:8, 0:8] = 1.0
    uniform = np.ones((32, 32), dtype=np.float32)

    def explanation(path: str, cam: np.ndarray) -> dict:
        return {"path": path, "source": "insight", "label": 1, "fold": 0, "prob": 0.9, "pred_type": "TP",
                "image": np.zeros((32, 32, 3), dtype=np.uint8), "cam": cam}

    explained = [explanation("on_face.jpg", hot_top_left), explanation("off_face.jpg", hot_top_left),
                 explanation("uniform.jpg", uniform), explanation("no_face.jpg", uniform),
                 explanation("flat.jpg", np.zeros((32, 32), dtype=np.float32))]
    boxes = {"on_face.jpg": (0.0, 0.0, 0.25, 0.25), "off_face.jpg": (0.5, 0.5, 1.0, 1.0),
             "uniform.jpg": (0.5, 0.5, 1.0, 1.0), "flat.jpg": (0.0, 0.0, 0.5, 0.5)}
    table = explanation_table(explained, boxes).set_index("path")
    assert table.loc["on_face.jpg", "cam_mass_face"] == pytest.approx(1.0)
    assert table.loc["off_face.jpg", "cam_mass_face"] == 0.0
    # A map without preference puts on the face exactly the face's share of the input.
    assert table.loc["uniform.jpg", "cam_mass_face"] == pytest.approx(table.loc["uniform.jpg", "face_area_share"])
    assert table.loc["uniform.jpg", "face_area_share"] == pytest.approx(0.25)
    assert np.isnan(table.loc["no_face.jpg", "cam_mass_face"]) and not table.loc["no_face.jpg", "cam_flat"]
    assert np.isnan(table.loc["flat.jpg", "cam_mass_face"]) and table.loc["flat.jpg", "cam_flat"]


def test_cam_comparison_grid_flags_an_all_zero_map_in_its_panel_title():
    rng = np.random.default_rng(7)

    def explanation(source: str, cam: np.ndarray) -> dict:
        return {"path": f"{source}.png", "source": source, "label": 1, "fold": 0, "prob": 0.98, "pred_type": "TP",
                "image": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "cam": cam}

    hot = rng.random((16, 16), dtype=np.float32)
    zero = np.zeros((16, 16), np.float32)
    figure = cam_comparison_grid({"resnet": [explanation("insight", hot), explanation("wiki", hot)],
                                  "efficientnet": [explanation("insight", zero), explanation("wiki", hot)]})
    titles = [ax.get_title().replace("\n", " ") for ax in figure.axes]
    # Rows are images, columns models: the row-major axes alternate resnet, efficientnet.
    assert titles[0] == "resnet insight p(fake)=0.98" and titles[3] == "efficientnet wiki p(fake)=0.98"
    assert [FLAT_CAM_NOTE in title for title in titles] == [False, True, False, False]
    assert titles[1].startswith("efficientnet insight")
    assert cam_is_flat(zero) and not cam_is_flat(hot)
