"""The image index: one row per file under ``root/<source>/**``, with its integrity status.

Every file is listed, good or bad: unreadable, truncated, zero-byte, non-image
and tiny images get a status other than ``ok`` and a reason, so they are
excluded from training without vanishing silently.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path, PurePosixPath

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from deepfake_kedro.progress import progress

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
_SUFFIX_FORMATS = {".jpg": {"JPEG", "MPO"}, ".jpeg": {"JPEG", "MPO"}, ".png": {"PNG"}, ".webp": {"WEBP"},
                   ".bmp": {"BMP"}, ".tif": {"TIFF"}, ".tiff": {"TIFF"}}
LABELS = {"real": 0, "fake": 1}
INDEX_COLUMNS = [
    "path", "source", "label", "label_name", "basename", "group", "width", "height", "orientation",
    "mode", "format", "bytes", "jpeg_quality", "status", "reason", "content",
]
# The cached audit table: one row per file, reused while the file and the settings in its signature are unchanged.
AUDIT_COLUMNS = ["key", "signature", "bytes", "width", "height", "orientation", "mode", "format", "jpeg_quality",
                 "status", "reason", "phash", "content"]
# Part of every audit row's signature: raising it re-audits every file once (2: orientation, upright sizes).
AUDIT_VERSION = 2
# The EXIF tag saying how a viewer turns or mirrors the stored pixels (1-8; 1 = as stored).
EXIF_ORIENTATION = 0x0112
# What every cache, face box and fold run derived from a file is keyed by: its bytes, not its size and mtime,
# which a copy (cp -p, rsync, tar) keeps while the content changes, and a touch changes while it does not.
# The IJG standard luminance table at quality 50, which libjpeg scales for other qualities.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=float)


class DataLayoutError(ValueError):
    """The raw data folder does not match ``data.root`` / ``data.sources``."""


@dataclass(frozen=True)
class ImageTree:
    """A read-only folder of images: ``root/<source>/**/<file>``."""

    root: Path

    def files(self) -> list[str]:
        """Every file under the root, as sorted POSIX paths relative to it.

        Symlinked folders are followed (a dataset assembled from links is common), each real folder once so a
        link loop ends; a folder that cannot be listed is logged with the error, never skipped silently.
        """
        found, seen = [], set()

        def unlisted(error: OSError) -> None:
            logger.warning("Cannot list %s (%s): its images are left out; fix its permissions to include them",
                           error.filename, error.strerror)

        for directory, subfolders, names in os.walk(self.root, followlinks=True, onerror=unlisted):
            stat = os.stat(directory)
            if (stat.st_dev, stat.st_ino) in seen:  # reached again through a link: already listed
                subfolders.clear()
                continue
            seen.add((stat.st_dev, stat.st_ino))
            for name in names:
                found.append(Path(directory, name).relative_to(self.root).as_posix())
        return sorted(found)

    def read_bytes(self, relative_path: str) -> bytes:
        return (self.root / relative_path).read_bytes()

    def open_image(self, relative_path: str) -> Image.Image:
        """One image, decoded now (the file is closed before it is returned)."""
        with Image.open(BytesIO(self.read_bytes(relative_path))) as image:
            image.load()
            return image

    def signature(self, relative_path: str) -> str:
        """Size, modification and change time: whether the file may have changed since it was last read.

        ctime cannot be set back (a copy that keeps mtime still moves it) and moves with permissions too, so a
        file made readable again is read again. What was read is keyed by its content (``content_digest``).
        """
        stat = (self.root / relative_path).stat()
        return f"{stat.st_size}-{stat.st_mtime_ns}-{stat.st_ctime_ns}"


def content_digest(data: bytes) -> str:
    """A file's identity for everything derived from it: 16 hex digits of BLAKE2b over its bytes."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def estimate_jpeg_quality(image: Image.Image) -> float:
    """Estimates the libjpeg quality (1-100) from the luminance quantisation table; nan if not JPEG."""
    tables = getattr(image, "quantization", None)
    if not tables:
        return float("nan")
    luma = np.asarray(tables[0], dtype=float)
    scale = 100.0 * luma.mean() / _IJG_LUMA.mean()
    quality = (200.0 - scale) / 2.0 if scale <= 100 else 5000.0 / scale
    return float(np.clip(round(quality), 1, 100))


def perceptual_hash(pixels: np.ndarray) -> int:
    """pHash of a uint8 RGB image as a 64-bit integer."""
    bits = imagehash.phash(Image.fromarray(pixels)).hash.ravel()
    return int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])


def inspect_image(data: bytes, suffix: str, min_size: int, hash_size: int | None = None) -> dict[str, object]:
    """Decodes one file fully and says whether it is usable, and why not.

    Args:
        data: The file's bytes.
        suffix: Its lower-case extension.
        min_size: Smallest accepted side in pixels.
        hash_size: If given, a usable image's square crop at this size (``square_resize``, the pixels the
            ``square_<size>`` cache holds) is hashed from the same decode.

    Returns:
        width and height as shown (after the EXIF ``orientation``, also returned), mode, format, jpeg_quality,
        status, reason and ``phash`` (the signed 64-bit view of ``perceptual_hash``; 0 when not hashed).
    """
    row: dict[str, object] = {"width": 0, "height": 0, "orientation": 1, "mode": "", "format": "",
                              "jpeg_quality": float("nan"), "phash": 0}
    if not data:
        return {**row, "status": "zero_byte", "reason": "file is empty"}
    try:
        with Image.open(BytesIO(data)) as image:
            orientation = exif_orientation(image)
            # Orientations 5-8 turn the picture a quarter: shown, its width is the stored height.
            width, height = (image.height, image.width) if orientation >= 5 else (image.width, image.height)
            row.update(width=width, height=height, orientation=orientation, mode=image.mode,
                       format=image.format or "")
            row["jpeg_quality"] = estimate_jpeg_quality(image)
            image.load()  # a full decode is the only way to catch truncated files
            if hash_size and min(image.width, image.height) >= min_size:
                row["phash"] = int(np.uint64(perceptual_hash(square_resize(image, hash_size))).view(np.int64))
    except Image.DecompressionBombError as error:
        return {**row, "status": "too_large", "reason": f"DecompressionBombError: {error}"}
    except UnidentifiedImageError:
        status = "not_image" if suffix not in IMAGE_SUFFIXES else "unreadable"
        return {**row, "status": status, "reason": "not a decodable image"}
    except (OSError, ValueError, SyntaxError) as error:
        status = "truncated" if "truncated" in str(error).lower() else "unreadable"
        return {**row, "status": status, "reason": f"{type(error).__name__}: {error}"}
    if min(row["width"], row["height"]) < min_size:  # type: ignore[type-var]
        return {**row, "status": "too_small", "reason": f"{row['width']}x{row['height']} is below {min_size} px"}
    notes = []
    expected = _SUFFIX_FORMATS.get(suffix)
    if expected and row["format"] not in expected:
        notes.append(f"extension {suffix} but {row['format']} data (read as {row['format']})")
    if row["mode"] != "RGB":
        notes.append(f"mode {row['mode']} converted to 8-bit RGB")
    if row["orientation"] != 1:
        notes.append(f"EXIF orientation {row['orientation']}: used turned as viewers show it")
    return {**row, "status": "ok", "reason": "; ".join(notes)}


def _source_folders(tree: ImageTree, sources: Mapping[str, str], key: str = "data") -> None:
    if not tree.root.is_dir():
        raise DataLayoutError(
            f"{key}.root {str(tree.root)!r} is not a folder; put the images there or set {key}.root "
            f"(e.g. kedro run --params {key}.root=/path/to/images)"
        )
    for source, label in sources.items():
        if label not in LABELS:
            raise DataLayoutError(f"{key}.sources.{source}: label must be 'real' or 'fake', got {label!r}")
        if not (tree.root / source).is_dir():
            present = sorted(p.name for p in tree.root.iterdir() if p.is_dir())
            raise DataLayoutError(
                f"{key}.sources names {source!r}, but {str(tree.root / source)!r} does not exist "
                f"(folders present: {present})"
            )
    if set(LABELS.values()) - {LABELS[v] for v in sources.values()}:
        raise DataLayoutError(f"{key}.sources needs at least one 'real' and one 'fake' folder")


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def source_files(tree: ImageTree, sources: Mapping[str, str], key: str = "data") -> list[str]:
    """Every file under the source folders, sorted; checks the layout first.

    Raises:
        DataLayoutError: The root or a source folder is missing, or a label is not real / fake.
    """
    _source_folders(tree, sources, key)
    everything = tree.files()
    paths = [p for p in everything if p.split("/", 1)[0] in sources]
    # A name that is not UTF-8 (os.walk gives it surrogate escapes) cannot be stored in any table.
    bad_names = [p for p in paths if not _utf8(p)]
    if bad_names:
        shown = [os.fsencode(p).decode("utf-8", "backslashreplace") for p in bad_names]
        logger.warning("Excluding %d file(s) whose names are not UTF-8 (rename them to use them): %s",
                       len(bad_names), shown)
        paths = [p for p in paths if _utf8(p)]
    # Dot entries (the demo's .generator.json, a download's .wiki.partial) are bookkeeping; files at the root
    # (SOURCE.md) are no source folders at all.
    skipped = sorted({p.split("/", 1)[0] for p in everything if "/" in p and not p.startswith(".")} - set(sources))
    if skipped:
        logger.warning("Ignoring folders not named in %s.sources: %s", key, skipped)
    return paths


def file_signature(tree: ImageTree, relative_path: str) -> str:
    """``ImageTree.signature``, or ``unreadable`` for a file that cannot be stat-ed (a dangling link)."""
    try:
        return tree.signature(relative_path)
    except OSError:
        return "unreadable"


@dataclass(frozen=True)
class FileAuditor:
    """Reads and decodes files once each: integrity, metadata and, for usable images, the pHash of the square crop.

    Called with a batch of relative paths, it returns one row per path (``AUDIT_COLUMNS`` without ``key`` and
    ``signature``), decoding the batch on ``workers`` threads.
    """

    tree: ImageTree
    min_size: int
    hash_size: int | None = None
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)

    def audit(self, relative_path: str) -> dict[str, object]:
        suffix = PurePosixPath(relative_path).suffix.lower()
        try:
            data = self.tree.read_bytes(relative_path)
        except OSError as error:  # a dangling link, a folder without read permission, a file gone meanwhile
            return {"bytes": 0, "width": 0, "height": 0, "orientation": 1, "mode": "", "format": "",
                    "jpeg_quality": float("nan"),
                    "status": "unreadable", "reason": f"cannot read the file: {type(error).__name__}: {error}",
                    "phash": 0, "content": ""}
        row = {"bytes": len(data), **inspect_image(data, suffix, self.min_size, self.hash_size),
               "content": content_digest(data)}
        return {column: row[column] for column in AUDIT_COLUMNS[2:]}

    def __call__(self, paths: Sequence[str]) -> list[dict[str, object]]:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(self.audit, paths))

    def signature(self, relative_path: str) -> str:
        """When a cached row is read again: the file may have changed (size, mtime, ctime), or the settings did."""
        return (f"{file_signature(self.tree, relative_path)}|min_size={self.min_size}|hash_size={self.hash_size}"
                f"|audit={AUDIT_VERSION}")


@dataclass(frozen=True)
class TreeChanges:
    """How the raw tree differs from the audit a study's results were computed from (sorted relative paths)."""

    added: list[str]
    removed: list[str]
    replaced: list[str]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.replaced)

    def summary(self, examples: int = 3) -> str:
        """``60 added, 0 removed, 3 replaced (e.g. wiki/00/a.jpg, ...)``."""
        named = (self.added + self.removed + self.replaced)[:examples]
        more = ", ..." if len(self.added) + len(self.removed) + len(self.replaced) > examples else ""
        return (f"{len(self.added)} added, {len(self.removed)} removed, {len(self.replaced)} replaced "
                f"(e.g. {', '.join(named)}{more})")


def tree_changes(tree: ImageTree, sources: Mapping[str, str], audit: pd.DataFrame) -> TreeChanges:
    """Files of the source folders added, removed or replaced since ``audit`` was taken, decoding nothing.

    A file whose size and times match its audit row is unchanged without being read; one whose times moved
    (a touch, a copy) is read and its digest compared, so only a change of content counts.
    """
    stored = dict(zip(audit["key"], audit["signature"].str.split("|").str[0]))
    content = dict(zip(audit["key"], audit["content"]))
    paths = source_files(tree, sources)
    added = [path for path in paths if path not in stored]
    removed = sorted(set(stored) - set(paths))
    now = {path: file_signature(tree, path) for path in paths if path in stored}
    replaced = []
    for path in progress([path for path, signature in now.items() if signature != stored[path]],
                         description="checking moved files"):
        if now[path] == "unreadable" or now[path].split("-")[0] != stored[path].split("-")[0]:
            same = now[path] == "unreadable" and content[path] == ""  # a size change is a change of content
        else:
            same = content_digest(tree.read_bytes(path)) == content[path]
        if not same:
            replaced.append(path)
    return TreeChanges(added, removed, replaced)


def index_from_audit(audit: pd.DataFrame, sources: Mapping[str, str]) -> pd.DataFrame:
    """The image index from the audit rows (``key`` = relative path): source, label and group from the path.

    Args:
        audit: One row per file with ``key`` and the ``FileAuditor`` columns.
        sources: Folder name -> ``real`` or ``fake``.

    Returns:
        One row per file, columns ``INDEX_COLUMNS``; ``group`` is the lower-case basename,
        so a fake and the real image it was made from share a group.
    """
    paths = audit["key"].astype(str)
    source = paths.str.split("/", n=1).str[0]
    stem = pd.Series([os.path.splitext(os.path.basename(p))[0] for p in paths], index=audit.index, dtype=object)
    label_name = source.map(sources)
    index = audit.drop(columns=["key", "signature", "phash"], errors="ignore").assign(
        path=paths, source=source, label=label_name.map(LABELS), label_name=label_name, basename=stem,
        group=stem.str.lower(),
    )
    index = index.reindex(columns=INDEX_COLUMNS).reset_index(drop=True)
    bad = index[index["status"] != "ok"]
    converted = int(((index["status"] == "ok") & (index["reason"] != "")).sum())
    logger.info("Indexed %d files: %d usable (%d converted or noted), %d excluded",
                len(index), len(index) - len(bad), converted, len(bad))
    for row in bad.itertuples():
        logger.warning("Excluded %s: %s (%s)", row.path, row.status, row.reason)
    return index


def build_image_index(
    tree: ImageTree, sources: Mapping[str, str], min_size: int = 32, workers: int | None = None, key: str = "data",
    hash_size: int | None = None,
) -> pd.DataFrame:
    """Lists and checks every file of every source folder (all decoded; the pipeline reuses an audit table instead).

    Args:
        tree: The raw images.
        sources: Folder name -> ``real`` or ``fake``.
        min_size: Images with a smaller side are flagged ``too_small``.
        workers: Decoding threads (default: CPU count).
        key: Where ``root`` and ``sources`` are configured, for errors (``data``; an external set's entry).
        hash_size: When given, a ``phash`` column: the pHash of each usable image's square crop at this size,
            as the study's audit takes it (0 for unusable files).

    Returns:
        One row per file, columns ``INDEX_COLUMNS`` (see ``index_from_audit``), and ``phash`` with ``hash_size``.
    """
    paths = source_files(tree, sources, key)
    started = time.perf_counter()
    auditor = FileAuditor(tree, min_size, hash_size, workers=workers or os.cpu_count() or 1)
    rows = list(progress(auditor(paths), "indexing", total=len(paths)))
    logger.info("Decoded %d files in %.1f s", len(paths), time.perf_counter() - started)
    audit = pd.DataFrame(rows).assign(key=paths)
    index = index_from_audit(audit, sources)
    if hash_size is not None:
        index["phash"] = index["path"].map(audit.set_index("key")["phash"]).astype(np.int64)
    return index


def check_usable_images(index: pd.DataFrame, root: Path, sources: Mapping[str, str], cv_folds: int,
                        min_groups: int) -> None:
    """Fails before any cache or training when the usable images cannot make the study's folds.

    Args:
        index: The image index (``build_image_index``).
        root: ``data.root``, to name folders in errors.
        sources: ``data.sources``.
        cv_folds: Outer folds: each label needs at least this many groups, so every test fold holds both classes.
        min_groups: Groups needed in all (``folds.required_groups``).

    Raises:
        DataLayoutError: Naming the source folder or label and the counts.
    """
    ok = index[index["status"] == "ok"]
    for source in sources:
        files = index[index["source"] == source]
        if not (ok["source"] == source).any():
            excluded = ", ".join(f"{n} {status}" for status, n in files["status"].value_counts().sort_index().items())
            raise DataLayoutError(
                f"data.sources names {source!r}, but {str(Path(root) / source)!r} holds no usable image "
                f"({len(files)} files{': ' + excluded if excluded else ''}); add images there or remove "
                f"{source!r} from data.sources"
            )
    for label, value in LABELS.items():
        groups = ok.loc[ok["label"] == value, "group"].nunique()
        if groups < cv_folds:
            folders = sorted(s for s, kind in sources.items() if kind == label)
            raise DataLayoutError(
                f"only {groups} usable {label} image groups (folders {folders} under {str(root)!r}); "
                f"cv_folds={cv_folds} needs at least {cv_folds} so every test fold holds both classes"
            )
    n_groups = ok["group"].nunique()
    if n_groups < min_groups:
        per_source = ok["source"].value_counts().reindex(list(sources), fill_value=0).to_dict()
        raise DataLayoutError(
            f"{n_groups} usable image groups under {str(root)!r} are too few for defaults.cv_folds and "
            f"defaults.val_ratio: need at least {min_groups} (usable images per source: {per_source}); "
            f"add images or lower cv_folds / raise val_ratio"
        )


SAME_CONTENT_OTHER_LABEL = "same_content_other_label"
"""Integrity status of a usable file whose bytes are also a file of the other label (kept: one group holds both)."""


def _same_content_other_label(index: pd.DataFrame) -> pd.Series:
    """For each usable file whose exact bytes also sit under the other label: the other files, else ''."""
    usable = index[(index["status"] == "ok") & (index["content"].fillna("") != "")]
    mixed = usable.groupby("content")["label"].transform("nunique") > 1
    reasons = pd.Series("", index=index.index, dtype=object)
    for _, same in usable[mixed].groupby("content"):
        for row in same.itertuples():
            others = same[same["label"] != row.label]
            listed = ", ".join(f"{path} ({name})" for path, name in zip(others["path"], others["label_name"]))
            reasons[row.Index] = f"identical bytes to {listed}"
    return reasons


def integrity_report(index: pd.DataFrame) -> pd.DataFrame:
    """Every file that was excluded, converted or is otherwise odd, with the reason.

    A usable file whose exact bytes are also a file of the other label is ``same_content_other_label``,
    naming the other files: it is kept (the near-duplicate groups put both in one fold), but its label is in doubt.
    """
    index = index.copy()
    same = _same_content_other_label(index) if "content" in index.columns else pd.Series("", index=index.index)
    index.loc[same != "", "status"] = SAME_CONTENT_OTHER_LABEL
    index["reason"] = [f"{a}; {b}" if a and b else a or b for a, b in zip(same, index["reason"])]
    flagged = (index["status"] != "ok") | (index["reason"] != "")
    report = index.loc[flagged, ["path", "source", "status", "reason", "bytes"]].reset_index(drop=True)
    kept = report["status"].isin(["ok", SAME_CONTENT_OTHER_LABEL])
    report.insert(3, "action", np.where(kept, "kept", "excluded"))
    n_same = int((report["status"] == SAME_CONTENT_OTHER_LABEL).sum())
    if n_same:
        logger.warning("%d usable files have the same bytes as a file of the other label (kept, in one group): "
                       "see integrity_report.csv, status %s", n_same, SAME_CONTENT_OTHER_LABEL)
    return report


def exif_orientation(image: Image.Image) -> int:
    """The image's EXIF orientation: 2-8 when a viewer turns or mirrors the stored pixels, else 1."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError, TypeError, KeyError, struct.error):
        return 1  # an unreadable EXIF block: viewers show the pixels as stored, and so does the study
    return int(value) if isinstance(value, int) and 2 <= value <= 8 else 1


def exif_upright(image: Image.Image) -> Image.Image:
    """The picture as viewers show it: the stored pixels turned by their EXIF orientation.

    Phones store a portrait sideways and tag it; a detector or model fed the stored pixels sees a face lying
    down. Applying it twice is harmless: Pillow drops the tag from the turned image.
    """
    return ImageOps.exif_transpose(image) if exif_orientation(image) != 1 else image


def render_signatures(images: pd.DataFrame) -> list[str]:
    """What every cache row, face box and fold run rendered from each image depends on in its file.

    Its bytes (``content``), and the EXIF turn applied to them where there is one: an image audited before
    orientations were applied is rendered again, and the folds that used it retrain. An image without a turn
    keeps its bare content digest, so its cached rows stay valid.
    """
    orientation = images["orientation"] if "orientation" in images else pd.Series(1, index=images.index)
    return [content if int(turn) == 1 else f"{content}|orientation={int(turn)}"
            for content, turn in zip(images["content"], orientation, strict=True)]


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB, as viewers show it: grey, palette, RGBA, CMYK, 16-bit and float images included.

    The EXIF orientation is applied first (``exif_upright``): every path from a file to the study's pixels (the
    caches, face detection, predict, the external sets) passes here, so they all see the picture upright.

    16-bit greys (0-65535) are divided by 257, the inverse of how 8 bits widen to 16, so the same picture
    saved at either depth gives the same pixels; a per-image stretch would change its contrast. Float
    greys in [0, 1] are scaled by 255, others taken as 0-255; both clip to the range.
    """
    image = exif_upright(image)
    if image.mode in {"I;16", "I;16B", "I;16L", "I"}:
        # A plain convert("RGB") clips 16-bit values to 255: nearly every pixel would be white.
        values = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        values = values * 255.0 if values.size and values.min() >= 0.0 and values.max() <= 1.0 else values
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def square_resize(image: Image.Image, size: int) -> np.ndarray:
    """Centre-crops to a square and resizes with antialiasing; returns uint8 RGB (size, size, 3).

    Grey, palette, RGBA, CMYK and 16-bit images are converted to 8-bit RGB first (``to_rgb8``).
    """
    image = to_rgb8(image)
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None), dtype=np.uint8)


def decode_square(tree: ImageTree, relative_path: str, size: int) -> np.ndarray:
    """Reads one image of the tree and returns its square, resized uint8 RGB array."""
    with Image.open(BytesIO(tree.read_bytes(relative_path))) as image:
        return square_resize(image, size)


def decode_squares(tree: ImageTree, paths: Sequence[str], size: int, workers: int | None = None) -> np.ndarray:
    """A few images' square crops as one ``(n, size, size, 3)`` uint8 array: the pixels the square cache holds."""
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        squares = list(pool.map(lambda path: decode_square(tree, path, size), paths))
    return np.stack(squares) if squares else np.empty((0, size, size, 3), dtype=np.uint8)


def usable(index: pd.DataFrame) -> pd.DataFrame:
    """The rows with status ``ok``, in index order."""
    return index[index["status"] == "ok"].reset_index(drop=True)


def write_tree(root: Path, files: Iterable[tuple[str, bytes]]) -> int:
    """Writes ``(relative path, bytes)`` pairs under a fresh folder, atomically replacing ``root``."""
    root = Path(root)
    staging = root.with_name(root.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    count = 0
    for relative_path, data in files:
        target = staging / relative_path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        count += 1
    if root.exists():
        shutil.rmtree(root)
    staging.rename(root)
    return count
