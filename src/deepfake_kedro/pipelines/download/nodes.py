"""Nodes of the download pipeline: the plan only; ``DownloadedImageTreeDataset`` fetches and extracts on save."""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath
from typing import Any

from deepfake_kedro.download import DownloadPlan, archive_names

logger = logging.getLogger(__name__)


def plan_download(
    download: dict[str, Any], data: dict[str, Any] | None = None, project_path: Path | None = None
) -> DownloadPlan:
    """Which archives to fetch and where to keep them, from the ``download`` parameters.

    Args:
        download: ``repo_id``, ``repo_type``, ``revision``, ``archives`` (a list, or one name or several
            comma-separated in a string, as ``--params download.archives=wiki.zip`` gives), ``archive_dir`` and
            ``local_archive_dir`` (a folder of zips downloaded by hand, or null). A null ``archive_dir`` keeps
            the zips beside ``data.root`` (``<data.root>_archives``), whichever folder the run starts from.
        data: ``data.sources``: an archive whose stem is not among them would be extracted but never indexed.
        project_path: The project folder (the catalog's ``project_path``): a relative ``archive_dir`` or
            ``local_archive_dir`` is read from it, as ``data.root`` is, not from the cwd; None: from the cwd.

    Returns:
        The plan the ``raw_download`` dataset executes into ``data.root`` on save.
    """
    local, archive_dir = download.get("local_archive_dir"), download.get("archive_dir")
    anchor = Path(project_path or ".")
    plan = DownloadPlan(
        archives=archive_names(download["archives"]), archive_dir=anchor / archive_dir if archive_dir else None,
        repo_id=download["repo_id"],
        repo_type=download.get("repo_type", "dataset"), revision=download.get("revision"),
        local_archive_dir=anchor / local if local else None,
    )
    sources = (data or {}).get("sources") or {}
    unlisted = [PurePosixPath(name).stem for name in plan.archives if PurePosixPath(name).stem not in sources]
    if data is not None and unlisted:
        logger.warning("%s will be extracted into data.root but %s not in data.sources (%s), so the study will "
                       "ignore %s; add each with its label (real or fake) to data.sources",
                       ", ".join(unlisted), "is" if len(unlisted) == 1 else "are", sorted(sources),
                       "it" if len(unlisted) == 1 else "them")
    logger.info("Fetching %s from %s (%s) into %s", ", ".join(plan.archives), plan.repo_id,
                f"local copies from {plan.local_archive_dir} first" if local else "Hugging Face Hub",
                plan.archive_dir or "<data.root>_archives")
    return plan
