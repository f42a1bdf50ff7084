import logging
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage import data

from deepfake_kedro.data_index import ImageTree, decode_squares
from deepfake_kedro.experiment import evaluate_runs, plan_fold_runs
from deepfake_kedro.face_crops import FaceDetector, render_face_crop
from deepfake_kedro.folds import build_fold_table
from deepfake_kedro.image_cache import ImageStack
from deepfake_kedro.inference import (
    PREDICTION_COLUMNS,
    Predictor,
    VideoRule,
    gallery_choice,
    gallery_figure,
    list_inputs,
    media_kind,
    read_video_frames,
)
from deepfake_kedro.model_package import ModelPackage, build_package, calibrate
from deepfake_kedro.pipelines.predict.nodes import _predictor, predict_inputs
from deepfake_kedro.run_store import FoldRunStore, run_key
from deepfake_kedro.study import ResolvedExperiment
from tests.conftest import FACES140K_ENV, faces140k_root
from tests.core.test_folds import dff_like_images
from tests.core.test_model_package import SOURCES
from tests.core.test_training import tiny_config

FOLDS = 2


def write_raw_images(root: Path, table: pd.DataFrame) -> None:
    """Non-square 24x20 JPEGs (so the square crop matters), fakes with a red patch the model can learn."""
    rng = np.random.default_rng(0)
    for path, label in zip(table["path"], table["label"]):
        pixels = rng.integers(0, 200, (20, 24, 3), dtype=np.uint8)
        if label == 1:
            pixels[5:15, 6:18, 0] = 255
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / path, quality=90)


def finished_from_files(root: Path) -> tuple[ResolvedExperiment, FoldRunStore, pd.DataFrame, dict]:
    """Two trained folds of a tiny experiment whose square cache is decoded from raw files under ``root/raw``."""
    table = build_fold_table(dff_like_images(60), 5, 0.1, seed=1)
    write_raw_images(root / "raw", table)
    pixels = decode_squares(ImageTree(root / "raw"), table["path"].tolist(), 16, workers=1)
    cache = ImageStack(table["path"].tolist(), ["s"] * len(table), pixels)
    config = tiny_config(epochs=1, normalization="real_norm", subsample=1.0)
    store = FoldRunStore(root / "runs")
    plans = plan_fold_runs(config, "fp", table, cache, SOURCES, "tiny", device=torch.device("cpu"))
    for fold in range(FOLDS):
        store.write(run_key("fp", fold), plans[run_key("fp", fold)](), plans[run_key("fp", fold)].data)
    _, fold_metrics, summary, _ = evaluate_runs(store, "fp", FOLDS, SOURCES, n_bootstrap=20)
    return ResolvedExperiment("phase1", "tiny", config, "fp"), store, fold_metrics, summary


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    resolved, store, fold_metrics, summary = finished_from_files(root)
    return root, store, build_package(resolved, store, FOLDS, summary, fold_metrics)


def only_fold(package: ModelPackage, fold: int) -> ModelPackage:
    """The package reduced to its fold ``fold``: its ensemble score is that fold model's score."""
    preprocessing = {**package.preprocessing, "fold_normalization": [package.preprocessing["fold_normalization"][fold]]}
    return replace(package, fold_states=[package.fold_states[fold]], preprocessing=preprocessing,
                   calibration=[package.calibration[fold]])


def test_fold_k_through_the_predict_path_reproduces_its_calibrated_out_of_fold_probabilities(finished):
    root, store, package = finished
    for fold in range(FOLDS):
        stored = store.read(run_key("fp", fold)).predictions
        paths = [str(root / "raw" / p) for p in stored["path"]]
        predictions, _ = Predictor(only_fold(package, fold), device="cpu")(paths, chunk_size=7)
        assert predictions["path"].tolist() == paths and (predictions["status"] == "ok").all()
        np.testing.assert_allclose(predictions["p_fake"], calibrate(stored["prob"], package.calibration[fold]),
                                   rtol=1e-5, atol=1e-6)
        assert (predictions["spread"] == 0).all() and predictions["face_found"].isna().all()


def test_ensemble_row_is_the_fold_mean_and_the_decision_uses_the_package_threshold(finished):
    root, store, package = finished
    paths = [str(p) for p in sorted((root / "raw" / "wiki").rglob("*.jpg"))[:6]]
    predictions, _ = Predictor(package, device="cpu")(paths)
    per_fold = np.stack([Predictor(only_fold(package, k), device="cpu")(paths)[0]["p_fake"] for k in range(FOLDS)])
    np.testing.assert_allclose(predictions["p_fake"], per_fold.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(predictions["spread"], per_fold.std(axis=0), rtol=1e-5, atol=1e-7)
    expected = np.where(per_fold.mean(axis=0) >= package.threshold["value"], "fake", "real")
    assert predictions["decision"].tolist() == expected.tolist()


def test_a_photo_stored_sideways_with_its_exif_turn_scores_as_the_upright_picture(finished, tmp_path):
    from tests.core.test_data_index import save_sideways

    root, _, package = finished
    with Image.open(sorted((root / "raw" / "wiki").rglob("*.jpg"))[0]) as image:
        upright = image.convert("RGB")  # 24 wide, 20 high: its centre square moves when turned
    upright.save(tmp_path / "upright.png")
    save_sideways(upright, tmp_path / "phone.png")
    predictions, _ = Predictor(package, device="cpu")([str(tmp_path / "upright.png"), str(tmp_path / "phone.png")])
    assert (predictions["status"] == "ok").all()
    assert predictions["p_fake"].iloc[1] == pytest.approx(predictions["p_fake"].iloc[0], abs=1e-6)


def write_video(path: Path, frames: list[np.ndarray], codec: str = "mpeg4", rate: int = 5,
                sample_aspect_ratio=None) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if sample_aspect_ratio is not None:
            stream.codec_context.sample_aspect_ratio = sample_aspect_ratio
        for pixels in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, finished):
    """Two images, a square-package video, a truncated JPEG, an empty PNG, a text file, a fake .mp4, a list."""
    root, _, _ = finished
    folder = tmp_path_factory.mktemp("inputs")
    sources = sorted((root / "raw" / "text2img").rglob("*.jpg"))[:2]
    for source in sources:
        (folder / "images").mkdir(exist_ok=True)
        (folder / "images" / source.name).write_bytes(source.read_bytes())
    frames = [np.asarray(Image.open(s).convert("RGB").resize((32, 32))) for s in sources] * 3
    write_video(folder / "clip.mp4", frames)
    (folder / "broken.jpg").write_bytes(sources[0].read_bytes()[:200])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.csv").write_text("a,b\n1,2\n")
    (folder / "fake.mp4").write_text("not a video")
    (folder / ".hidden.jpg").write_bytes(b"")
    return folder


def test_a_folder_of_good_and_broken_files_gives_one_row_each_with_status_and_reason(finished, mixed_folder):
    _, _, package = finished
    paths = list_inputs(mixed_folder)
    assert not any(".hidden" in p for p in paths) and len(paths) == 7
    predictions, frame_scores = Predictor(package, video=VideoRule(frames=4), device="cpu")(paths)
    assert list(predictions.columns) == PREDICTION_COLUMNS
    by_name = predictions.assign(name=predictions["path"].map(lambda p: Path(p).name)).set_index("name")
    assert by_name.loc["broken.jpg", "status"] == "unreadable"
    assert "truncated" in by_name.loc["broken.jpg", "reason"].lower()
    assert by_name.loc["empty.png", ["status", "reason"]].tolist() == ["unreadable", "file is empty"]
    assert by_name.loc["notes.csv", ["status", "kind"]].tolist() == ["not_media", "other"]
    assert by_name.loc["fake.mp4", "status"] == "unreadable" and "cannot open as a video" in by_name.loc[
        "fake.mp4", "reason"]
    clip = by_name.loc["clip.mp4"]
    assert clip["status"] == "ok" and clip["kind"] == "video" and clip["frames_used"] == 4
    # Four frames sampled evenly over six: 0, 2, 3, 5; the video score is their mean (rule "mean").
    assert frame_scores["frame"].tolist() == [0, 2, 3, 5] and frame_scores["counted"].all()
    assert clip["p_fake"] == pytest.approx(frame_scores["p_fake"].mean())
    bad = predictions[predictions["status"] != "ok"]
    assert bad["p_fake"].isna().all() and (bad["decision"] == "").all()


def test_a_truncated_video_is_sampled_over_the_frames_that_decode_and_audio_only_has_no_frames(tmp_path):
    import av

    rng = np.random.default_rng(1)
    # Noise frames are large (about 2 kB each), so 70% of the file keeps its header and a few whole frames.
    write_video(tmp_path / "whole.avi", [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(10)])
    frames, note = read_video_frames(tmp_path / "whole.avi", 4)
    assert [f.index for f in frames] == [0, 3, 6, 9] and note == ""
    assert [f.time_s for f in frames] == pytest.approx([0.0, 0.6, 1.2, 1.8])
    data = (tmp_path / "whole.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[:len(data) * 7 // 10])
    frames, note = read_video_frames(tmp_path / "cut.avi", 4)
    decoded = int(note.split()[1])
    assert 0 < decoded < 10 and f"only {decoded} of 10 frames decode" in note
    assert [f.index for f in frames] == np.unique(np.linspace(0, decoded - 1, 4).round()).astype(int).tolist()
    with av.open(str(tmp_path / "sound.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(Exception, match="the file has no video stream") as raised:
        read_video_frames(tmp_path / "sound.mp4", 4)
    assert raised.value.status == "no_frames"


def test_topk_mean_scores_a_video_by_its_most_fake_frames():
    rule = VideoRule(frames=8, rule="topk_mean", k=2)
    assert rule.counted(np.array([0.1, 0.9, 0.2, 0.8, 0.8])).tolist() == [1, 3]
    assert VideoRule().counted(np.array([0.3, 0.1])).tolist() == [0, 1]
    with pytest.raises(ValueError, match="predict.video.rule must be one of mean, topk_mean, got 'max'"):
        VideoRule.from_params({"rule": "max"})
    assert VideoRule.from_params({"frames": 8, "rule": "topk_mean", "k": 2}) == rule


@pytest.mark.parametrize(("params", "message"), [
    ({"frame": 4}, r"predict.video: unknown keys \['frame'\]; allowed: frames, rule, k"),
    ({"frames": "eight"}, r"predict.video.frames must be a whole number of at least 1, got 'eight'"),
    ({"frames": None}, r"predict.video.frames must be a whole number of at least 1, got None"),
    ({"k": 2.9}, r"predict.video.k must be a whole number of at least 1, got 2.9"),
    ({"k": 0}, r"predict.video.k must be a whole number of at least 1, got 0"),
])
def test_a_bad_video_setting_is_refused_naming_its_key(params, message):
    with pytest.raises(ValueError, match=message):
        VideoRule.from_params(params)


def test_a_list_file_resolves_relative_paths_and_keeps_missing_ones(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.mp4").write_bytes(b"x")
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# scored by predict\na.png\n\nsub\n{tmp_path / 'missing.jpg'}\n")
    assert list_inputs(listing) == [str(tmp_path / "a.png"), str(tmp_path / "sub" / "b.mp4"),
                                    str(tmp_path / "missing.jpg")]
    assert [media_kind(p) for p in list_inputs(listing)] == ["image", "video", "image"]
    assert list_inputs(tmp_path / "a.png") == [str(tmp_path / "a.png")]
    with pytest.raises(FileNotFoundError, match=r"predict.input: .*nowhere does not exist"):
        list_inputs(tmp_path / "nowhere")


def test_a_folder_s_linked_subfolders_are_scored_once_and_a_link_loop_ends(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "face.jpg").write_bytes(b"x")
    inputs = tmp_path / "inputs"
    (inputs / "local").mkdir(parents=True)
    (inputs / "local" / "a.jpg").write_bytes(b"x")
    (inputs / "linked").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "back").symlink_to(inputs, target_is_directory=True)  # a loop through the link
    assert list_inputs(inputs) == [str(inputs / "linked" / "face.jpg"), str(inputs / "local" / "a.jpg")]


def test_gallery_shows_the_most_fake_and_most_real_without_overlap(finished, mixed_folder):
    _, _, package = finished
    predictor = Predictor(package, video=VideoRule(frames=4), device="cpu")
    predictions, frame_scores = predictor(list_inputs(mixed_folder))
    most_fake, most_real = gallery_choice(predictions, 2)
    scored = predictions[predictions["status"] == "ok"].sort_values("p_fake")
    assert most_fake["path"].tolist() == scored["path"].iloc[::-1].head(2).tolist()
    assert most_real["path"].tolist() == [scored["path"].iloc[0]]
    # Fewer scored inputs than the gallery holds: split in halves, so the most real one is explained as real.
    most_fake, most_real = gallery_choice(predictions, 6)
    assert len(most_fake) == 2 and most_real["path"].tolist() == [scored["path"].iloc[0]]
    figure = gallery_figure(predictor, predictions, frame_scores, n=2)
    assert len(figure.axes) == 3


def face_package(package: ModelPackage) -> ModelPackage:
    """The same fold models fed MTCNN face crops: the plumbing of a face-crop package, cheap to build."""
    return replace(package, preprocessing={**package.preprocessing, "crop": "face", "face_crop_margin": 0.6})


def test_face_video_gets_a_score_and_a_faceless_video_gets_no_face(finished, tmp_path):
    _, _, package = finished
    astronaut = np.asarray(Image.fromarray(data.astronaut()).resize((256, 256)))
    rng = np.random.default_rng(0)
    write_video(tmp_path / "face.mp4", [astronaut] * 3)
    write_video(tmp_path / "noise.webm", [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(3)],
                codec="libvpx")
    Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(tmp_path / "noise.png")
    predictor = Predictor(face_package(package), FaceDetector(None, device="cpu"), VideoRule(frames=2), "cpu")
    predictions, frames = predictor([str(tmp_path / n) for n in ("face.mp4", "noise.webm", "noise.png")])
    face, noise, image = (row for _, row in predictions.iterrows())
    assert face["status"] == "ok" and face["face_found"] and 0 <= face["p_fake"] <= 1 and face["frames_used"] == 2
    assert noise["status"] == "no_face" and "no face in any of the 2 sampled frames" in noise["reason"]
    assert np.isnan(noise["p_fake"]) and noise["face_found"] is False
    # An image without a face is still scored, on the square crop, as the face caches fall back.
    assert image["status"] == "ok" and image["face_found"] is False and "square crop" in image["reason"]
    of_face = frames[frames["path"].str.endswith("face.mp4")]
    x0, y0, x1, y1 = map(float, of_face["face_box"].iloc[0].split(","))
    # Eileen Collins' face sits around x 90-135, y 30-85 in the astronaut scaled to 256 px.
    assert 70 < x0 < 110 and 120 < x1 < 150 and 15 < y0 < 50 and 65 < y1 < 100


def test_a_face_crop_package_sees_the_crop_the_face_cache_holds(finished, tmp_path):
    _, _, package = finished
    (tmp_path / "real").mkdir()
    Image.fromarray(data.astronaut()).resize((200, 200)).save(tmp_path / "real" / "astronaut.png")
    tree = ImageTree(tmp_path)
    # The preprocessing pipeline's way: detect on the tree's key, crop with the margin at the cache's size.
    cached = render_face_crop(tree, {"real/astronaut.png": FaceDetector(tree, device="cpu")(["real/astronaut.png"])[0]},
                              "real/astronaut.png", 0.6, 16)
    predictor = Predictor(face_package(package), FaceDetector(None, device="cpu"), device="cpu")
    prepared = predictor.prepare(str(tmp_path / "real" / "astronaut.png"))
    assert prepared.row["face_found"] is True
    np.testing.assert_array_equal(prepared.pixels[0], cached)


def test_real_faces_from_faces140k_are_found_and_scored(finished):
    root = faces140k_root()
    if root is None:
        pytest.skip(f"faces140k not found: set {FACES140K_ENV} to the shared sample (see its SOURCE.md)")
    _, _, package = finished
    paths = [str(p) for p in sorted((root / "real").glob("*.jpg"))[:3] + sorted((root / "fake").glob("*.jpg"))[:3]]
    predictor = Predictor(face_package(package), FaceDetector(None, device="cpu"), device="cpu")
    predictions, _ = predictor(paths)
    assert (predictions["status"] == "ok").all() and predictions["face_found"].all()
    boxes = predictions["face_box"].str.split(",", expand=True).astype(float)
    # FFHQ-style 256 px portraits: the face is big and central.
    assert ((boxes[2] - boxes[0]) > 80).all() and (boxes[0] < 128).all() and (boxes[2] > 128).all()


def test_a_folder_or_list_with_nothing_to_score_raises_naming_it_and_what_was_searched(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"nothing to score in the folder .*/empty: 0 file\(s\), none an image "
                                         r"\(.*\.jpg.*\) or a video \(.*\.mp4.*\)"):
        list_inputs(tmp_path / "empty")
    (tmp_path / "only_empty.txt").write_text("empty\n")
    with pytest.raises(ValueError, match=r"nothing to score in the list .*/only_empty\.txt"):
        list_inputs(tmp_path / "only_empty.txt")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "notes.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"nothing to score in the folder .*/tables: 1 file\(s\)"):
        list_inputs(tmp_path / "tables")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9.jpg\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"the list .*/latin1\.txt is not UTF-8 text .*save it as UTF-8"):
        list_inputs(tmp_path / "latin1.txt")
    # A list naming a missing image still gets its row; the empty folder beside it adds nothing.
    (tmp_path / "partly.txt").write_text("empty\nmissing.jpg\n")
    assert list_inputs(tmp_path / "partly.txt") == [str(tmp_path / "missing.jpg")]


def turn_display_matrix(path: Path) -> None:
    """Sets the mp4 track's display matrix to a 90 degree turn, as a phone does for a portrait clip."""
    stored = path.read_bytes()
    identity = struct.pack(">9i", 1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)
    turned = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    at = stored.index(identity, stored.index(b"tkhd"))  # the track's matrix, not the movie header's
    path.write_bytes(stored[:at] + turned + stored[at + len(turned):])


def test_a_clip_stored_sideways_with_a_rotation_flag_is_decoded_and_scored_upright(finished, tmp_path):
    _, _, package = finished
    upright = np.asarray(Image.fromarray(data.astronaut()).resize((192, 256)))  # portrait, 192 wide
    write_video(tmp_path / "upright.mp4", [upright] * 2)
    write_video(tmp_path / "phone.mp4", [np.ascontiguousarray(np.rot90(upright))] * 2)
    turn_display_matrix(tmp_path / "phone.mp4")
    frames, _ = read_video_frames(tmp_path / "phone.mp4", 1)
    decoded = np.asarray(frames[0].image, dtype=float)
    assert decoded.shape == upright.shape and np.abs(decoded - upright).mean() < 8
    # MTCNN finds no sideways face: scored as stored, the clip would be no_face.
    predictor = Predictor(face_package(package), FaceDetector(None, device="cpu"), VideoRule(frames=1), "cpu")
    predictions, frame_scores = predictor([str(tmp_path / "upright.mp4"), str(tmp_path / "phone.mp4")])
    assert (predictions["status"] == "ok").all() and predictions["face_found"].all()
    boxes = frame_scores["face_box"].str.split(",", expand=True).astype(float).to_numpy()
    np.testing.assert_allclose(boxes[1], boxes[0], atol=4)


def test_an_anamorphic_clip_is_scored_as_displayed_not_as_stored(tmp_path):
    from fractions import Fraction

    shown = np.asarray(Image.fromarray(data.astronaut()).resize((128, 128)))
    stored = np.asarray(Image.fromarray(shown).resize((64, 128)))  # each stored pixel is shown two wide
    write_video(tmp_path / "anamorphic.mp4", [stored] * 2, sample_aspect_ratio=Fraction(2, 1))
    frames, _ = read_video_frames(tmp_path / "anamorphic.mp4", 1)
    decoded = np.asarray(frames[0].image, dtype=float)
    assert decoded.shape == shown.shape and np.abs(decoded - shown).mean() < 10


def test_a_cover_picture_muxed_before_the_clip_is_not_taken_for_the_video(tmp_path):
    import av

    clip = [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(1, 6)]
    with av.open(str(tmp_path / "covered.avi"), "w") as container:
        # One still picture in its own stream, first, as a tagging tool adds cover art.
        cover = container.add_stream("mjpeg", rate=1)
        cover.height = cover.width = 64
        cover.pix_fmt = "yuvj420p"
        main = container.add_stream("mpeg4", rate=5)
        main.height = main.width = 64
        main.pix_fmt = "yuv420p"
        still = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 255, np.uint8), format="rgb24")
        container.mux(cover.encode(still.reformat(format="yuvj420p")))
        container.mux(cover.encode())
        for pixels in clip:
            container.mux(main.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(main.encode())
    frames, note = read_video_frames(tmp_path / "covered.avi", 5)
    assert note == "" and [frame.index for frame in frames] == [0, 1, 2, 3, 4]
    means = [np.asarray(frame.image, dtype=float).mean() for frame in frames]
    np.testing.assert_allclose(means, [40, 80, 120, 160, 200], atol=6)


def test_an_image_too_small_for_mtcnn_falls_back_to_the_square_crop(finished, tmp_path, caplog):
    _, _, package = finished
    astronaut = Image.fromarray(data.astronaut())
    paths = [str(tmp_path / f"face_{w}x{h}.png") for w, h in ((16, 16), (40, 19))]
    for path, size in zip(paths, ((16, 16), (40, 19))):
        astronaut.resize(size).save(path)
    predictor = Predictor(face_package(package), FaceDetector(None, device="cpu"), device="cpu")
    with caplog.at_level(logging.ERROR):
        predictions, _ = predictor(paths)
    assert (predictions["status"] == "ok").all() and not predictions["face_found"].any()
    assert predictions["reason"].str.contains("scored on the square crop").all()
    assert not caplog.records


def test_inputs_below_the_study_min_image_size_are_too_small(finished, tmp_path):
    _, _, package = finished
    rng = np.random.default_rng(2)
    for name, (height, width) in {"dot.png": (1, 1), "strip.png": (19, 40), "edge.png": (32, 32)}.items():
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(tmp_path / name)
    write_video(tmp_path / "small.mp4", [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)] * 2)
    # The node reads the study's preprocessing.min_image_size.
    predictions, frame_scores = predict_inputs(package, {"input": str(tmp_path), "device": "cpu"},
                                               {"min_image_size": 32})
    by_name = predictions.assign(name=predictions["path"].map(lambda p: Path(p).name)).set_index("name")
    assert by_name["status"].to_dict() == {"dot.png": "too_small", "edge.png": "ok", "small.mp4": "too_small",
                                           "strip.png": "too_small"}
    assert by_name.loc["dot.png", "reason"].startswith("1x1 is below 32 px")
    assert by_name.loc["strip.png", "reason"].startswith("40x19 is below 32 px")
    assert by_name.loc["small.mp4", "reason"].startswith("frames: 24x24 is below 32 px")
    assert frame_scores.empty and by_name.loc[["dot.png", "small.mp4"], "p_fake"].isna().all()


def test_predict_finds_faces_at_the_threshold_the_package_was_trained_with(finished):
    _, _, package = finished
    face = {**package.preprocessing, "crop": "face", "face_min_confidence": 0.97}
    face_package = replace(package, preprocessing=face)
    run_params = {"face_detection": {"min_confidence": 0.5, "device": "cpu"}}
    assert _predictor(face_package, {}, run_params).detector.min_confidence == 0.97
    # A package written before the threshold was recorded uses the run's setting.
    older = {k: v for k, v in face_package.preprocessing.items() if k != "face_min_confidence"}
    assert _predictor(replace(package, preprocessing=older), {}, run_params).detector.min_confidence == 0.5
    assert _predictor(package, {}, run_params).detector is None  # square crops need no detector
