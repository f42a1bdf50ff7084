"""Fetching DeepFakeFace (DFF): its four zips from the Hugging Face Hub, each extracted once into the raw tree.

``OpenRL/DeepFakeFace`` holds ``wiki.zip`` (real), ``text2img.zip``, ``inpainting.zip`` and ``insight.zip``
(fakes). Each zip becomes one source folder ``<root>/<stem>/`` (``<root>/wiki/<NN>/<id>_<birth>_<year>.jpg``).
Assumed layout: a zip whose files all sit under one top folder named after it (``wiki/...``) has that folder
stripped; any other zip's content is taken as the source folder itself (``00/...`` -> ``wiki/00/...``).
"""

from __future__ import annotations

import importlib
import logging
import shutil
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from deepfake_kedro.progress import progress

logger = logging.getLogger(__name__)

DFF_REPO_ID = "OpenRL/DeepFakeFace"
DFF_ARCHIVES = ("wiki.zip", "text2img.zip", "inpainting.zip", "insight.zip")


class DownloadError(RuntimeError):
    """An archive could neither be found locally nor fetched from the Hub, or is not a usable zip."""


@dataclass(frozen=True)
class DownloadPlan:
    """Which archives to fetch, from where, and where the zips are kept.

    Attributes:
        archives: File names in the Hub repository; each zip's stem names its source folder.
        archive_dir: Where downloaded zips are kept (a partial download resumes from here); ``None``: beside
            the raw tree, ``<root>_archives`` (see ``archives_beside``), wherever the run starts from.
        repo_id: The Hub repository.
        repo_type: ``dataset`` for DFF.
        revision: A branch, tag or commit of the repository; ``None`` for the default branch.
        local_archive_dir: A folder of zips already downloaded by hand, used instead of the Hub when it has them.
    """

    archives: tuple[str, ...] = DFF_ARCHIVES
    archive_dir: Path | None = None
    repo_id: str = DFF_REPO_ID
    repo_type: str = "dataset"
    revision: str | None = None
    local_archive_dir: Path | None = None


def archive_names(archives: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``download.archives`` as file names: a list, or a string of one name or several separated by commas.

    ``--params download.archives=wiki.zip`` arrives as a string, which would otherwise be read letter by letter.

    Raises:
        DownloadError: A name that is not a ``.zip`` file, or no name at all.
    """
    names = tuple(n.strip() for n in archives.split(",")) if isinstance(archives, str) else tuple(archives)
    bad = [name for name in names if not (isinstance(name, str) and name.endswith(".zip") and len(name) > 4)]
    if bad or not names:
        raise DownloadError(
            f"download.archives: every archive must be a .zip file of the repository (DFF's: "
            f"{', '.join(DFF_ARCHIVES)}), got {bad or list(names)!r}; pass one as download.archives=wiki.zip or "
            f"several as a list or a comma-separated string"
        )
    return names


def archives_beside(root: Path) -> Path:
    """Where zips are kept by default: ``<root>_archives`` next to the raw tree (``data/01_raw/dff_archives``)."""
    return Path(root).with_name(f"{Path(root).name}_archives")


def fetch_archive(plan: DownloadPlan, filename: str) -> Path:
    """The local path of one archive: the hand-downloaded copy if there is one, else fetched from the Hub.

    ``hf_hub_download`` draws its own progress bar, resumes an interrupted download and returns the file
    at once when ``archive_dir`` already holds it complete (``download_dataset`` fills in a ``None`` one).

    Raises:
        DownloadError: The Hub cannot be reached (offline, no network, unknown file) and no local copy exists.
    """
    if plan.local_archive_dir is not None and (Path(plan.local_archive_dir) / filename).is_file():
        return Path(plan.local_archive_dir) / filename
    if plan.archive_dir is None:
        raise ValueError("the plan has no archive_dir; download_dataset places it beside the raw tree")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id=plan.repo_id, filename=filename, repo_type=plan.repo_type,
                                    revision=plan.revision, local_dir=plan.archive_dir))
    except _transport_errors() as error:
        cause = (str(error).splitlines() or [""])[0].rstrip(".")
        raise DownloadError(
            f"the download of {filename!r} from the Hugging Face Hub ({plan.repo_type} {plan.repo_id}) broke off: "
            f"{type(error).__name__}: {cause}. Run the download again: it resumes from the part already in "
            f"{plan.archive_dir}/"
        ) from error
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        by_hand = Path(plan.local_archive_dir or plan.archive_dir)
        cause = (str(error).splitlines() or [""])[0].rstrip(".")
        raise DownloadError(
            f"cannot fetch {filename!r} from the Hugging Face Hub ({plan.repo_type} {plan.repo_id}): "
            f"{type(error).__name__}: {cause}. Either let the Hub be reached (unset HF_HUB_OFFLINE or set it "
            f"to 0, set HTTPS_PROXY behind a proxy, or HF_ENDPOINT for a mirror), or download it by hand from "
            f"https://huggingface.co/datasets/{plan.repo_id} into {by_hand}/ and set "
            f"download.local_archive_dir: {by_hand}"
        ) from error


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's own errors (a dropped connection, a timeout), which are no ``OSError``.

    huggingface_hub 2.x fetches through ``httpx2``, 1.x through ``httpx`` (0.x's ``requests`` errors are OSErrors).
    """
    errors = []
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).HTTPError)
        except ImportError:
            continue
    return tuple(errors)


def _members(archive: zipfile.ZipFile, zip_path: Path) -> list[zipfile.ZipInfo]:
    """The archive's files, without macOS metadata; refuses members that would land outside the target."""
    files = []
    for info in archive.infolist():
        path = PurePosixPath(info.filename)
        if path.is_absolute() or ".." in path.parts:
            raise DownloadError(f"{zip_path} holds {info.filename!r}, a path outside its folder; refusing to extract")
        if not info.is_dir() and path.parts[0] != "__MACOSX" and not path.name.startswith("._"):
            files.append(info)
    return files


def extract_archive(zip_path: Path, destination: Path) -> int:
    """Extracts a zip into ``destination`` once, atomically (a staging folder renamed when complete).

    A destination that already exists is left as it is: the archive was extracted by an earlier run.

    Returns:
        The number of files in ``destination``.
    """
    destination = Path(destination)
    if destination.is_dir():
        logger.info("%s: already extracted into %s", zip_path.name, destination)
        return sum(1 for p in destination.rglob("*") if p.is_file())
    staging = destination.with_name(f".{destination.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                files = _members(archive, zip_path)
                for info in progress(files, f"extracting {zip_path.name}", unit="file"):
                    archive.extract(info, staging)
        # A truncated or corrupt download fails in zipfile, in zlib (a broken deflate stream) or as a short read.
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:
            raise DownloadError(f"{zip_path} is not a valid zip ({type(error).__name__}: {error}); delete it and "
                                f"run the download again") from error
        except OSError as error:
            raise DownloadError(f"cannot extract {zip_path} into {destination.parent} ({type(error).__name__}: "
                                f"{error}); if the zip is damaged, delete it and run the download again") from error
        parts = [PurePosixPath(info.filename).parts for info in files]
        own_top_folder = bool(parts) and all(len(p) > 1 and p[0] == destination.name for p in parts)
        # A zip with its own top folder (wiki/...) has that folder moved into place; any other, the staging folder.
        (staging / destination.name if own_top_folder else staging).rename(destination)
    finally:
        # Whatever stopped the extraction, no half-extracted staging folder is left beside the sources.
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("%s: extracted %d files into %s", zip_path.name, len(files), destination)
    return len(files)


def download_dataset(plan: DownloadPlan, root: Path) -> dict[str, int]:
    """Fetches every archive of ``plan`` and extracts each into ``root/<stem>/``.

    Returns:
        Files per source folder, e.g. ``{"wiki": 30000, ...}``.
    """
    if plan.archive_dir is None:
        # Beside the (absolute) raw tree, not under the cwd: a run started from notebooks/ keeps one copy.
        plan = replace(plan, archive_dir=archives_beside(root))
    counts = {}
    for filename in plan.archives:
        source = PurePosixPath(filename).stem
        destination = Path(root) / source
        if destination.is_dir():
            counts[source] = extract_archive(Path(filename), destination)
            continue
        counts[source] = extract_archive(fetch_archive(plan, filename), destination)
    logger.info("Raw images under %s: %s", root, ", ".join(f"{s} {n}" for s, n in counts.items()))
    return counts
