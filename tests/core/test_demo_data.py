"""Tests for the synthetic DeepFakeFace-like demo dataset generator."""

from __future__ import annotations

import io
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from deepfake_kedro.data_index import square_resize
from deepfake_kedro.demo_data import (
    ARTEFACT_REGIONS,
    DEFAULT_SOURCES,
    FINE_PERIOD,
    SEAM_INNER_RADIUS,
    SEAM_OUTER_RADIUS,
    generate_demo_dataset,
)
from deepfake_kedro.face_crops import crop_box

N_IDENTITIES = 60
PATH_RE = re.compile(r"^(?P<source>[a-z0-9]+)/(?P<folder>\d{2})/(?P<name>\d+_\d{4}_\d{4}\.jpg)$")


@pytest.fixture(scope="module")
def dataset() -> dict[str, bytes]:
    """Default-configuration dataset shared by the module's tests."""
    return generate_demo_dataset(n_identities=N_IDENTITIES, seed=0)


def _decode(data: bytes) -> Image.Image:
    """Decode JPEG bytes, checking the format."""
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    img.load()
    return img.convert("RGB")


def _thumbnail(data: bytes, size: int = 32) -> np.ndarray:
    """Centre-square-crop, antialias-resize and re-JPEG an image, as a training pipeline would."""
    img = _decode(data)
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return np.asarray(Image.open(buffer), dtype=np.float32) / 255.0


def _spectra(files: dict[str, bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log power spectra of the 32x32 thumbnails, with each image's source and identity (its file name).

    The artefacts are textures at a random phase: their power spectrum, not their pixels, is what a
    linear model can see.
    """
    features, sources, groups = [], [], []
    for path, data in files.items():
        source, _, name = path.split("/")
        features.append(np.log1p(np.abs(np.fft.fft2(_thumbnail(data), axes=(0, 1)))).ravel())
        sources.append(source)
        groups.append(name)
    return np.stack(features), np.array(sources), np.array(groups)


def _spectral_model():
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.05, solver="liblinear", class_weight="balanced"))


def _grouped_auc(files: dict[str, bytes], positive: set[str]) -> float:
    """AUC of a logistic regression on 32x32 spectra, cross-validated with identities held out."""
    x, sources, groups = _spectra(files)
    y = np.isin(sources, list(positive))
    scores = np.zeros(len(y))
    for train, test in GroupKFold(n_splits=4).split(x, y, groups):
        scores[test] = _spectral_model().fit(x[train], y[train]).predict_proba(x[test])[:, 1]
    return float(roc_auc_score(y, scores))


def _holdout_delta(files: dict[str, bytes], held_out: str) -> float:
    """AUC on ``held_out``'s fakes against the reals, trained with that source minus trained without it
    (identities grouped in 4 folds), as phase 2's hold-out experiments measure it."""
    x, sources, groups = _spectra(files)
    fake = sources != "wiki"
    seen, unseen = np.zeros(len(fake)), np.zeros(len(fake))
    for train, test in GroupKFold(n_splits=4).split(x, fake, groups):
        seen[test] = _spectral_model().fit(x[train], fake[train]).predict_proba(x[test])[:, 1]
        without = train[sources[train] != held_out]
        unseen[test] = _spectral_model().fit(x[without], fake[without]).predict_proba(x[test])[:, 1]
    scored = (sources == "wiki") | (sources == held_out)
    return float(roc_auc_score(fake[scored], seen[scored]) - roc_auc_score(fake[scored], unseen[scored]))


def test_deterministic() -> None:
    first = generate_demo_dataset(n_identities=6, seed=3)
    second = generate_demo_dataset(n_identities=6, seed=3)
    other = generate_demo_dataset(n_identities=6, seed=4)
    assert list(first) == list(second)
    assert all(first[path] == second[path] for path in first)
    assert set(first) != set(other)
    assert set(first.values()).isdisjoint(other.values())


def test_prefix_stable_across_sizes() -> None:
    small = generate_demo_dataset(n_identities=3, seed=3)
    large = generate_demo_dataset(n_identities=6, seed=3)
    assert all(large[path] == data for path, data in small.items())


def test_layout(dataset: dict[str, bytes]) -> None:
    matches = [PATH_RE.match(path) for path in dataset]
    assert all(matches), [p for p, m in zip(dataset, matches) if not m]
    counts = Counter(m["source"] for m in matches if m)
    assert counts == {source: N_IDENTITIES for source in DEFAULT_SOURCES}
    real_keys = {(m["folder"], m["name"]) for m in matches if m and m["source"] == "wiki"}
    assert len(real_keys) == N_IDENTITIES
    for m in matches:
        if m and DEFAULT_SOURCES[m["source"]] == "fake":
            assert (m["folder"], m["name"]) in real_keys
    folders = {m["folder"] for m in matches if m}
    assert folders <= {f"{i:02d}" for i in range(4)} and len(folders) > 1


def test_custom_sources_and_subfolders() -> None:
    files = generate_demo_dataset(n_identities=5, seed=1, sources={"real": "real", "swap": "fake"}, n_subfolders=1)
    assert sorted({path.split("/")[0] for path in files}) == ["real", "swap"]
    assert {path.split("/")[1] for path in files} == {"00"}
    assert len(files) == 10


def test_images_decode_with_expected_sizes(dataset: dict[str, bytes]) -> None:
    real_sizes = []
    for path, data in dataset.items():
        img = _decode(data)
        if DEFAULT_SOURCES[path.split("/")[0]] == "fake":
            assert img.size == (128, 128)
        else:
            assert all(96 <= side <= 160 for side in img.size)
            real_sizes.append(img.size)
    assert len(set(real_sizes)) > N_IDENTITIES // 2
    assert any(w == h for w, h in real_sizes) and any(w != h for w, h in real_sizes)


def test_fake_size_parameter() -> None:
    files = generate_demo_dataset(n_identities=2, fake_size=64, real_size_range=(40, 50))
    for path, data in files.items():
        size = _decode(data).size
        if path.startswith("wiki/"):
            assert all(40 <= side <= 50 for side in size)
        else:
            assert size == (64, 64)


@pytest.mark.parametrize("bad", [{"wiki": "genuine"}, {}])
def test_rejects_bad_sources(bad: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        generate_demo_dataset(n_identities=1, sources=bad)


def _pairs(dataset: dict[str, bytes], source: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fake, its real) pixel arrays at the fakes' size, for every identity of ``source``."""
    pairs = []
    for path, data in dataset.items():
        if path.startswith(f"{source}/"):
            real = _decode(dataset["wiki/" + path.split("/", 1)[1]])
            fake = _decode(data)
            pairs.append((np.asarray(fake, dtype=float), square_resize(real, fake.width).astype(float)))
    return pairs


def _fine_detail(pixels: np.ndarray) -> np.ndarray:
    """Red minus green, minus its blur: the fine chroma detail a face swap's blending texture adds."""
    chroma = pixels[..., 0] - pixels[..., 1]
    return np.abs(chroma - gaussian_filter(chroma, 1.5))


def _face_radius(size: int = 128) -> np.ndarray:
    """Each pixel's elliptical radius in the face box (1 on the face's outline)."""
    x0, y0, x1, y1 = (v * size for v in ARTEFACT_REGIONS["insight"])
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    return np.hypot((xs - (x0 + x1) / 2) / ((x1 - x0) / 2), (ys - (y0 + y1) / 2) / ((y1 - y0) / 2))


@pytest.mark.parametrize("source", ["text2img", "inpainting", "insight"])
def test_blending_texture_is_fine_and_sits_around_the_face_only(dataset: dict[str, bytes], source: str) -> None:
    radius = _face_radius()
    seam = (radius > SEAM_INNER_RADIUS + 0.08) & (radius < SEAM_OUTER_RADIUS - 0.08)
    centre = radius < SEAM_INNER_RADIUS - 0.25          # eyes, nose, mouth: what the face detector needs
    background = radius > SEAM_OUTER_RADIUS + 0.2
    ratios = {"seam": [], "centre": [], "background": []}
    for fake, real in _pairs(dataset, source):
        fake_detail, real_detail = _fine_detail(fake), _fine_detail(real)
        for name, region in (("seam", seam), ("centre", centre), ("background", background)):
            ratios[name].append(fake_detail[region].mean() / real_detail[region].mean())
    median = {name: float(np.median(values)) for name, values in ratios.items()}
    # Fake / real fine detail on the seam against the rest (reals are resized, so the rest is not exactly 1).
    assert median["seam"] > 2 * median["centre"] and median["seam"] > 2 * median["background"], median


def _chroma_detail(pixels: np.ndarray) -> float:
    """Mean fine chroma detail (red minus green, minus its blur at one pixel) of a small image."""
    chroma = pixels[..., 0].astype(float) - pixels[..., 1].astype(float)
    return float(np.abs(chroma - gaussian_filter(chroma, 1.0)).mean())


def test_blending_texture_is_resolved_in_a_tight_face_crop_more_than_in_the_32px_frame(
    dataset: dict[str, bytes],
) -> None:
    """The face-crop effect's physics: the demo's tight crop (margin 0.3) magnifies the face 3x over the frame."""
    x0, y0, x1, y1 = (v * 128 for v in ARTEFACT_REGIONS["insight"])
    crop = crop_box((x0, y0, x1, y1), margin=0.3)
    frame, cropped = [], []
    for fake, real in _pairs(dataset, "insight"):
        fake_image, real_image = (Image.fromarray(p.astype(np.uint8)) for p in (fake, real))
        frame.append(_chroma_detail(square_resize(fake_image, 32)) / _chroma_detail(square_resize(real_image, 32)))
        cropped.append(_chroma_detail(square_resize(fake_image.crop(crop), 32))
                       / _chroma_detail(square_resize(real_image.crop(crop), 32)))
    # The diagonal texture keeps a little energy inside the frame's Nyquist square; the crop more than doubles it.
    in_crop, in_frame = float(np.median(cropped)), float(np.median(frame))
    assert in_crop > 3.0 and in_crop > 1.8 * in_frame, (in_crop, in_frame)


def _band_energy(images: list[np.ndarray], size: int, cycles: int) -> float:
    """Mean spectral magnitude of the grey images, resized to ``size``, at ``cycles`` per image along x and y."""
    total = 0.0
    for pixels in images:
        grey = square_resize(Image.fromarray(pixels.astype(np.uint8)), size).astype(float).mean(axis=2)
        spectrum = np.abs(np.fft.fft2(grey - grey.mean()))
        total += spectrum[0, cycles] + spectrum[cycles, 0]
    return total / len(images)


def test_the_upsampler_grid_shows_at_32px_and_is_averaged_away_at_16px(dataset: dict[str, bytes]) -> None:
    pairs = _pairs(dataset, "text2img")
    fakes, reals = [fake for fake, _ in pairs], [real for _, real in pairs]
    cycles = round(1 / FINE_PERIOD)  # the grid's cycles per image, at any size
    at_32 = _band_energy(fakes, 32, cycles) / _band_energy(reals, 32, cycles)
    # At 16 px the grid lies past Nyquist (8 cycles): the antialiasing resize mostly removes it, little folds back.
    at_16 = _band_energy(fakes, 16, 16 - cycles) / _band_energy(reals, 16, 16 - cycles)
    assert at_32 > 5 and at_32 > 3 * at_16


def test_real_vs_fake_is_learnable(dataset: dict[str, bytes]) -> None:
    fakes = {s for s, label in DEFAULT_SOURCES.items() if label == "fake"}
    assert _grouped_auc(dataset, fakes) > 0.75


def test_holding_out_insight_costs_far_more_than_holding_out_inpainting(dataset: dict[str, bytes]) -> None:
    # The planted hold-out direction: insight's stripes are its own, inpainting shares the diffusion family's
    # stripes and grid with text2img. (The reduced study's CNNs at 60 identities are too noisy to show it.)
    insight, inpainting = _holdout_delta(dataset, "insight"), _holdout_delta(dataset, "inpainting")
    assert insight > 0.1 and insight > inpainting + 0.05, (insight, inpainting)


def test_real_vs_real_is_not_learnable() -> None:
    """Negative control: two real sources differ only in pose, size and JPEG noise."""
    files = generate_demo_dataset(n_identities=N_IDENTITIES, seed=0, sources={"wiki": "real", "wiki2": "real"})
    assert _grouped_auc(files, {"wiki2"}) < 0.65


def test_mtcnn_finds_the_face_in_nearly_every_demo_image(dataset: dict[str, bytes]) -> None:
    # Face crops fall back to the whole frame when MTCNN misses; at 80% detection (generator v4: solid beards,
    # dark skin without a highlight) those fall-backs were most of the face-crop model's mistakes.
    from deepfake_kedro.face_crops import FaceDetector

    images = {path: _decode(data) for path, data in dataset.items()}
    found = FaceDetector(None, device="cpu").detect_images(list(images.values()))
    rates = Counter()
    for path, face in zip(images, found):
        rates[path.split("/")[0]] += face["detected"] / N_IDENTITIES
    assert all(rate >= 0.95 for rate in rates.values()), rates
