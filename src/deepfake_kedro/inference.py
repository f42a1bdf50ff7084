"""Scoring new images and videos with a model package: list the inputs, decode, crop as the study did, score.

Every input becomes one row, whatever happens to it, so a bad file never stops the others:

- ``ok``: scored. ``no_face``: a video in which no sampled frame has a face (face-crop packages only).
  ``unreadable``: the file cannot be read or decoded (empty, truncated, not what its extension says).
  ``not_media``: neither an image nor a video extension. ``no_frames``: a video with no decodable frame.
  ``too_small``: an image (or a video's frames) with a side below ``min_size``, as the study's index excludes.
- Square-crop package: no face detection; ``face_found`` stays empty.
- Face-crop package, image: MTCNN as in preprocessing; no face -> still scored on the square crop, as the
  study's face caches fall back, with ``face_found`` False and the fallback named in ``reason``.
- Video: ``frames`` frames sampled evenly over the stream, turned upright by the clip's rotation; with a
  face-crop package, frames without a face are skipped (a no-face square would not be what the model saw in
  training). The video's score is a named rule over its frames' ensemble scores: ``mean`` or ``topk_mean``
  (mean of the ``k`` most fake frames).
- ``p_fake`` is the mean over fold models of their calibrated p(fake) (``model_package.platt_calibration``),
  ``spread`` their std (for a video: of each fold's video score
  over the same frames), ``decision`` is ``fake`` from the package's threshold up.

Knows nothing of Kedro.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from deepfake_kedro.data_index import IMAGE_SUFFIXES, ImageTree, to_rgb8
from deepfake_kedro.explain import gradcam_maps, overlay
from deepfake_kedro.face_crops import FaceDetector
from deepfake_kedro.model_package import ModelPackage
from deepfake_kedro.progress import progress
from deepfake_kedro.training import predict, select_device

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v"}
LIST_SUFFIXES = {".txt", ".lst"}
STATUSES = ("ok", "no_face", "unreadable", "not_media", "no_frames", "too_small")
PREDICTION_COLUMNS = ["path", "kind", "frames_used", "face_found", "face_box", "p_fake", "spread", "decision",
                      "status", "reason"]
FRAME_COLUMNS = ["path", "frame", "time_s", "face_found", "face_box", "p_fake", "spread", "used", "counted"]
VIDEO_RULES = ("mean", "topk_mean")


class BadInput(Exception):
    """An input that cannot be scored: its status (one of ``STATUSES``) and the reason."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class VideoRule:
    """How a video is sampled and scored: ``frames`` evenly spaced frames, then ``mean`` or ``topk_mean``."""

    frames: int = 16
    rule: str = "mean"
    k: int = 4

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> VideoRule:
        """From ``predict.video`` (``frames``, ``rule``, ``k``); errors name the bad key."""
        params = dict(params or {})
        unknown = sorted(set(params) - {"frames", "rule", "k"})
        if unknown:
            raise ValueError(f"predict.video: unknown keys {unknown}; allowed: frames, rule, k")
        counts = {}
        for key, default in (("frames", 16), ("k", 4)):
            value = params.get(key, default)
            # bool is an int to Python, and 2.9 would be cut to 2: only whole numbers from 1 up.
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"predict.video.{key} must be a whole number of at least 1, got {value!r}")
            counts[key] = value
        rule = cls(counts["frames"], str(params.get("rule", "mean")), counts["k"])
        if rule.rule not in VIDEO_RULES:
            raise ValueError(f"predict.video.rule must be one of {', '.join(VIDEO_RULES)}, got {rule.rule!r}")
        return rule

    def counted(self, frame_scores: np.ndarray) -> np.ndarray:
        """The positions of the frames the video score averages (all, or the ``k`` most fake)."""
        if self.rule == "mean":
            return np.arange(len(frame_scores))
        # A stable sort: equal scores keep frame order, so the choice is deterministic.
        return np.sort(np.argsort(-np.asarray(frame_scores), kind="stable")[:self.k])

    def describe(self, n_frames: int) -> str:
        if self.rule == "mean" or self.k >= n_frames:
            return f"mean of {n_frames} frame(s)"
        return f"mean of the {self.k} most fake of {n_frames} frames"


def media_kind(path: str | Path) -> str:
    """``image``, ``video`` or ``other``, by the file's extension."""
    suffix = Path(path).suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else "other"


def _walk(folder: Path) -> list[str]:
    """Every file under ``folder`` as the study lists its tree (``ImageTree.files``: linked folders followed, each
    real folder once, unlistable ones named), hidden files and folders (.git, .DS_Store) left out."""
    return [str(folder / path) for path in ImageTree(folder).files()
            if not any(part.startswith(".") for part in path.split("/"))]


def _read_list(source: Path) -> list[str]:
    """The paths a list file names, its folders walked; missing paths kept."""
    try:
        # utf-8-sig: a list saved by Windows Notepad starts with a byte-order mark.
        text = source.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"predict.input: the list {source} is not UTF-8 text ({error.reason} at byte "
                         f"{error.start}); save it as UTF-8, one path per line") from error
    paths = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line).expanduser()
        path = path if path.is_absolute() else source.parent / path
        paths += _walk(path) if path.is_dir() else [str(path)]
    return paths


def list_inputs(source: str | Path) -> list[str]:
    """The files to score: an image or video, a folder (recursively, hidden files skipped) or a list of paths.

    A ``.txt`` / ``.lst`` file holds one path per line (blank lines and ``#`` comments skipped; relative paths
    are relative to the list's folder; a folder in the list is walked). Listed paths that do not exist are
    kept, so they get an ``unreadable`` row.

    Raises:
        FileNotFoundError: ``source`` itself does not exist.
        ValueError: a folder or list yields no image or video path, or the list is not UTF-8 text.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"predict.input: {source} does not exist; give an image, a video, a folder or a "
                                "text file of paths (kedro run --pipelines predict --params predict.input=PATH)")
    if not source.is_dir() and source.suffix.lower() not in LIST_SUFFIXES:
        return [str(source)]
    paths = _walk(source) if source.is_dir() else _read_list(source)
    # A run that scores nothing would look like success: a header-only predictions.csv.
    if not any(media_kind(path) != "other" for path in paths):
        what = "the folder" if source.is_dir() else "the list"
        raise ValueError(
            f"predict.input: nothing to score in {what} {source}: {len(paths)} file(s), none an image "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}) or a video ({', '.join(sorted(VIDEO_SUFFIXES))}); folders are "
            "searched recursively, hidden files skipped")
    return paths


def open_image(path: str | Path) -> Image.Image:
    """The image fully decoded as 8-bit RGB (as the caches convert it).

    Raises:
        BadInput: ``unreadable``, with why (missing, empty, truncated, not a decodable image).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise BadInput("unreadable", f"cannot read the file: {error}") from error
    if not data:
        raise BadInput("unreadable", "file is empty")
    try:
        with Image.open(BytesIO(data)) as image:
            image.load()  # a full decode is the only way to catch truncated files
            return to_rgb8(image)
    except UnidentifiedImageError as error:
        raise BadInput("unreadable", f"not a decodable image (extension {Path(path).suffix})") from error
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise BadInput("unreadable", f"{type(error).__name__}: {error}") from error


@dataclass
class Frame:
    """One decoded video frame: its index in the stream, its time and its pixels."""

    index: int
    time_s: float
    image: Image.Image


def _even_indices(total: int, n_frames: int) -> list[int]:
    """``n_frames`` frame indices spread evenly over ``0 .. total - 1`` (first and last included)."""
    return np.unique(np.linspace(0, max(total - 1, 0), n_frames).round().astype(int)).tolist()


def upright(frame, sample_aspect_ratio: Fraction | None = None) -> Image.Image:
    """A PyAV frame's pixels as displayed: widened by the stream's sample aspect ratio (an anamorphic clip stores
    each pixel narrower than it is shown), then turned by its rotation (a phone's portrait clip is stored sideways).
    """
    image = frame.to_image()
    if sample_aspect_ratio and sample_aspect_ratio != 1:
        # Faces are squeezed as stored; the models learnt from square-pixel photos.
        image = image.resize((max(1, round(image.width * sample_aspect_ratio)), image.height),
                             Image.Resampling.BICUBIC)
    # PyAV's rotation is counterclockwise in degrees, as PIL's rotate takes it.
    return image.rotate(frame.rotation, expand=True) if frame.rotation else image


def _decode_frames(path: str, wanted: Sequence[int]) -> tuple[list[Frame], int, str]:
    """The frames at ``wanted`` indices, how many frames were decoded, and why decoding stopped early if it did."""
    import av

    frames: list[Frame] = []
    decoded, note, wanted_set, last = 0, "", set(wanted), max(wanted)
    with av.open(path) as container:
        stream = container.streams.best("video")
        stream.thread_type = "AUTO"  # frame and slice threads: long videos decode several times faster, in order
        sample_aspect_ratio = stream.sample_aspect_ratio
        try:
            for frame in progress(container.decode(stream), f"frames of {Path(path).name}", total=last + 1,
                                  unit="frame"):
                if decoded in wanted_set:
                    time_s = float(frame.time) if frame.time is not None else math.nan
                    frames.append(Frame(decoded, time_s, upright(frame, sample_aspect_ratio)))
                decoded += 1
                if decoded > last:
                    break
        except (av.error.FFmpegError, OSError, ValueError) as error:
            note = f"decoding stopped at frame {decoded}: {error}"
    return frames, decoded, note


def read_video_frames(path: str | Path, n_frames: int) -> tuple[list[Frame], str]:
    """``n_frames`` frames spread evenly over a video (PyAV), and a note when the video is damaged.

    Frames are decoded in order up to the last one sampled. When fewer frames decode than the stream
    announces (a truncated file), the frames are sampled again, evenly over those that decode.

    Raises:
        BadInput: ``unreadable`` (not a video container), ``no_frames`` (no video stream or no decodable frame).
    """
    import av

    path = str(path)
    if not Path(path).exists():
        raise BadInput("unreadable", "the file does not exist")
    try:
        with av.open(path) as container:
            # FFmpeg's choice of the main video stream: not a cover picture muxed first (avi, mkv).
            stream = container.streams.best("video")
            if stream is None:
                raise BadInput("no_frames", "the file has no video stream")
            # The header's count when it has one (mp4, mov, avi), else the packets counted (webm), without decoding.
            total = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise BadInput("unreadable", f"cannot open as a video: {error}") from error
    wanted = _even_indices(total, n_frames)
    frames, decoded, note = _decode_frames(path, wanted)
    if len(frames) < len(wanted) and 0 < decoded < total:
        frames, _, _ = _decode_frames(path, _even_indices(decoded, n_frames))
        note = "; ".join(filter(None, [f"only {decoded} of {total} frames decode (damaged or truncated), sampled "
                                       "over those", note]))
    if not frames:
        raise BadInput("no_frames", "no decodable video frame" + (f" ({note})" if note else ""))
    return frames, note


def check_size(image: Image.Image, min_size: int, what: str = "") -> None:
    """Raises ``too_small`` when the image's shorter side is below ``min_size``, as the study's index does.

    Raises:
        BadInput: ``too_small``, with the size and the minimum.
    """
    if min(image.size) < min_size:
        raise BadInput("too_small", f"{what}{image.width}x{image.height} is below {min_size} px "
                                    "(preprocessing.min_image_size)")


def face_box(face: Mapping[str, Any] | None) -> str:
    """The detected box as ``x0,y0,x1,y1`` in the original image's pixels; empty when no face."""
    if not face or not face.get("detected"):
        return ""
    return ",".join(f"{face[c]:.1f}" for c in ("x0", "y0", "x1", "y1"))


@dataclass
class Prepared:
    """One input made ready for the models: its row so far, its frames' rows, and the pixels to score."""

    row: dict[str, Any]
    frames: list[dict[str, Any]] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list)


def _row(path: str, kind: str, status: str = "ok", reason: str = "") -> dict[str, Any]:
    return {"path": path, "kind": kind, "frames_used": 0, "face_found": None, "face_box": "", "p_fake": math.nan,
            "spread": math.nan, "decision": "", "status": status, "reason": reason}


class Predictor:
    """A package's fold models loaded once, with the face detector when the package needs faces.

    Images (and video frames) with a side below ``min_size`` get ``too_small``; 0 scores every size.
    """

    def __init__(self, package: ModelPackage, detector: FaceDetector | None = None, video: VideoRule | None = None,
                 device: torch.device | str | None = None, batch_size: int = 32, min_size: int = 0):
        if package.needs_faces and detector is None:
            raise ValueError(f"{package.resolved.label} is a face-crop package: give a FaceDetector")
        self.package = package
        self.detector = detector
        self.video = video or VideoRule()
        self.device = torch.device(device) if device is not None else select_device()
        self.batch_size = batch_size
        self.min_size = min_size
        self.models = [package.fold_model(k, self.device) for k in range(len(package.fold_states))]
        self.normalizers = [package.normalizer(k) for k in range(len(package.fold_states))]

    def score_folds(self, pixels: np.ndarray) -> np.ndarray:
        """Every fold model's calibrated p(fake) for rendered ``(N, size, size, 3)`` uint8 inputs: ``(folds, N)``."""
        rows = np.arange(len(pixels))
        return self.package.calibrate(np.stack([
            predict(model, pixels, rows, normalizer, self.device, self.batch_size, f"fold {k}")
            for k, (model, normalizer) in enumerate(zip(self.models, self.normalizers))]))

    def prepare(self, path: str) -> Prepared:
        """Decodes and renders one input; a bad input comes back as a row with its status and reason."""
        kind = media_kind(path)
        try:
            if kind == "image":
                return self._prepare_image(path)
            if kind == "video":
                return self._prepare_video(path)
            return Prepared(_row(path, "other", "not_media", f"extension {Path(path).suffix or '(none)'} is neither "
                                 f"an image ({', '.join(sorted(IMAGE_SUFFIXES))}) nor a video "
                                 f"({', '.join(sorted(VIDEO_SUFFIXES))})"))
        except BadInput as bad:
            return Prepared(_row(path, kind, bad.status, bad.reason))
        except Exception as error:  # noqa: BLE001 - one odd file must not stop the others; it is logged in full
            logger.exception("predict: %s failed", path)
            return Prepared(_row(path, kind, "unreadable", f"{type(error).__name__}: {error}"))

    def _prepare_image(self, path: str) -> Prepared:
        image = open_image(path)
        check_size(image, self.min_size)
        row = _row(path, "image")
        face = None
        if self.package.needs_faces:
            face = self.detector.detect_images([image])[0]
            row.update(face_found=bool(face["detected"]), face_box=face_box(face))
            if not face["detected"]:
                row["reason"] = (f"no face found (MTCNN, confidence {face['confidence']:.2f} below "
                                 f"{self.detector.min_confidence}): scored on the square crop, as the study's "
                                 "face caches fall back")
        return Prepared(row, pixels=[self.package.render(image, face)])

    def _prepare_video(self, path: str) -> Prepared:
        frames, note = read_video_frames(path, self.video.frames)
        check_size(frames[0].image, self.min_size, "frames: ")
        faces: list[dict | None] = [None] * len(frames)
        if self.package.needs_faces:
            faces = self.detector.detect_images([frame.image for frame in frames])
        prepared = Prepared(_row(path, "video", reason=note))
        for frame, face in zip(frames, faces):
            used = face is None or bool(face["detected"])
            prepared.frames.append({"path": path, "frame": frame.index, "time_s": frame.time_s,
                                    "face_found": None if face is None else bool(face["detected"]),
                                    "face_box": face_box(face), "p_fake": math.nan, "spread": math.nan,
                                    "used": used, "counted": False})
            if used:
                prepared.pixels.append(self.package.render(frame.image, face))
        if self.package.needs_faces:
            found = len(prepared.pixels)
            prepared.row["face_found"] = found > 0
            if not found:
                prepared.row.update(status="no_face", reason="; ".join(filter(None, [
                    f"no face in any of the {len(frames)} sampled frames (MTCNN, confidence "
                    f"{self.detector.min_confidence})", note])))
            elif found < len(frames):
                prepared.row["reason"] = "; ".join(filter(None, [
                    f"{len(frames) - found} of {len(frames)} sampled frames had no face and were skipped", note]))
        return prepared

    def finish(self, prepared: Prepared, per_fold: np.ndarray) -> None:
        """Fills the row (and frame rows) from its inputs' per-fold scores ``(folds, n_pixels)``."""
        row, threshold = prepared.row, self.package.threshold["value"]
        if row["status"] != "ok":
            return
        frame_p = per_fold.mean(axis=0)
        if row["kind"] == "video":
            counted = self.video.counted(frame_p)
            in_score = set(counted.tolist())
            used_rows = [f for f in prepared.frames if f["used"]]
            for position, frame in enumerate(used_rows):
                frame.update(p_fake=float(frame_p[position]), spread=float(per_fold[:, position].std()),
                             counted=position in in_score)
            fold_scores = per_fold[:, counted].mean(axis=1)
            rule = self.video.describe(len(frame_p))
            row["reason"] = "; ".join(filter(None, [rule, row["reason"]]))
        else:
            fold_scores = per_fold[:, 0]
        p_fake = float(fold_scores.mean())
        row.update(frames_used=per_fold.shape[1], p_fake=p_fake, spread=float(fold_scores.std()),
                   decision="fake" if p_fake >= threshold else "real")

    def __call__(self, paths: Sequence[str], chunk_size: int = 64) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Scores every path: ``(predictions, frame_scores)``, one prediction row per path in the given order."""
        rows: list[dict] = []
        frames: list[dict] = []
        bar = progress(total=len(paths), description="predict", unit="file")
        with bar:
            for chunk in _chunks(paths, chunk_size):
                prepared = []
                for path in chunk:
                    prepared.append(self.prepare(path))
                    bar.update(1)
                pixels = [p for item in prepared for p in item.pixels]
                size = self.package.preprocessing["image_size"]
                stacked = np.stack(pixels) if pixels else np.empty((0, size, size, 3), dtype=np.uint8)
                scores = self.score_folds(stacked)
                start = 0
                for item in prepared:
                    self.finish(item, scores[:, start:start + len(item.pixels)])
                    start += len(item.pixels)
                    rows.append(item.row)
                    frames += item.frames
                logger.info("predict: %d of %d inputs scored", len(rows), len(paths))
        predictions = pd.DataFrame(rows, columns=PREDICTION_COLUMNS)
        return predictions, pd.DataFrame(frames, columns=FRAME_COLUMNS)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def status_counts(predictions: pd.DataFrame) -> str:
    """``ok 12, unreadable 2`` in the vocabulary's order: one line for the log."""
    counts = predictions["status"].value_counts()
    return ", ".join(f"{status} {counts[status]}" for status in STATUSES if status in counts) or "no inputs"


def gallery_choice(predictions: pd.DataFrame, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n`` most fake and the ``n`` most real scored inputs (ties broken by path), without overlap; with
    fewer than ``2 n`` scored, the more fake half and the more real half."""
    scored = predictions[predictions["status"] == "ok"].sort_values("path").sort_values(
        "p_fake", ascending=False, kind="mergesort")
    # Otherwise a small folder fills the fake row alone and its most real input is explained as evidence for fake.
    most_fake = scored.head(min(n, -(-len(scored) // 2)))
    most_real = scored.drop(most_fake.index).tail(n).iloc[::-1]
    return most_fake, most_real


def _gallery_pixels(predictor: Predictor, row: pd.Series, frame_scores: pd.DataFrame,
                    most_fake: bool) -> tuple[np.ndarray, str]:
    """The rendered input behind a row and what it is; for a video, its most fake (or most real) used frame."""
    prepared = predictor.prepare(row["path"])
    if row["kind"] != "video":
        return prepared.pixels[0], "image"
    used = [f["frame"] for f in prepared.frames if f["used"]]
    of_video = frame_scores[(frame_scores["path"] == row["path"]) & frame_scores["used"]].set_index("frame")
    best = int(of_video["p_fake"].idxmax() if most_fake else of_video["p_fake"].idxmin())
    return prepared.pixels[used.index(best)], f"video, frame {best}"


def fold_mean_cams(predictor: Predictor, pixels: np.ndarray, target: str) -> np.ndarray:
    """Grad-CAM of every fold model for ``target`` (``fake`` / ``real``), averaged: the ensemble's evidence."""
    backbone = predictor.package.resolved.config.backbone
    maps = [gradcam_maps(model, backbone, pixels, normalizer, predictor.device, target=target)
            for model, normalizer in zip(predictor.models, predictor.normalizers)]
    return np.mean(maps, axis=0)


def gallery_figure(predictor: Predictor, predictions: pd.DataFrame, frame_scores: pd.DataFrame, n: int = 6) -> Figure:
    """The ``n`` most fake inputs (top row) and ``n`` most real (bottom row), each with the folds' mean Grad-CAM.

    The most fake are explained for ``fake`` and the most real for ``real``; a video shows its most fake
    (or most real) scored frame. Captions are red when the input is called fake at the package's threshold,
    green when called real. Inputs are decoded again (cheap for ``2 n`` inputs).
    """
    most_fake, most_real = gallery_choice(predictions, n)
    columns = max(1, len(most_fake), len(most_real))
    figure = Figure(figsize=(max(2.4 * columns, 6.0), 6.0))
    label = predictor.package.resolved.label
    figure.suptitle(f"{label}\nmost fake (top, evidence for fake) and most real (bottom, evidence for real)\n"
                    f"Grad-CAM = mean of the {len(predictor.models)} fold models' maps; threshold "
                    f"{predictor.package.threshold['value']:.3f}", fontsize=9)
    if most_fake.empty:
        figure.text(0.5, 0.5, "no input could be scored (see predictions.csv)", ha="center", va="center")
        return figure
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.1, top=0.8, hspace=0.45, wspace=0.08)
    for row_number, (chosen, target) in enumerate(((most_fake, "fake"), (most_real, "real"))):
        if chosen.empty:
            continue
        shown = [_gallery_pixels(predictor, row, frame_scores, target == "fake") for _, row in chosen.iterrows()]
        pixels = np.stack([image for image, _ in shown])
        cams = fold_mean_cams(predictor, pixels, target)
        for position, ((_, row), image, cam, (_, what)) in enumerate(zip(chosen.iterrows(), pixels, cams, shown)):
            ax = figure.add_subplot(2, columns, row_number * columns + position + 1)
            ax.imshow(overlay(image, cam))
            ax.set_xticks([])
            ax.set_yticks([])
            name = Path(row["path"]).name
            name = name if len(name) <= 24 else name[:10] + "…" + name[-12:]
            ax.set_xlabel(f"{name} ({what})\np(fake)={row['p_fake']:.3f} ± {row['spread']:.3f}\n"
                          f"called {row['decision']}", fontsize=7,
                          color="firebrick" if row["decision"] == "fake" else "darkgreen")
    return figure
