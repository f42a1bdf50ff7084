"""Fetching and extracting DFF's archives: local copies first, each zip extracted once and atomically."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from deepfake_kedro.download import DownloadError, DownloadPlan, download_dataset, extract_archive, fetch_archive


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_a_zip_with_its_own_top_folder_has_it_stripped(tmp_path):
    zip_path = write_zip(tmp_path / "wiki.zip", {"wiki/00/a_1_2.jpg": b"a", "wiki/01/b_1_2.jpg": b"b",
                                                 "__MACOSX/wiki/._a_1_2.jpg": b"junk"})
    assert extract_archive(zip_path, tmp_path / "dff/wiki") == 2
    assert files_under(tmp_path / "dff") == {"wiki/00/a_1_2.jpg", "wiki/01/b_1_2.jpg"}


def test_a_zip_without_a_top_folder_becomes_the_source_folder(tmp_path):
    zip_path = write_zip(tmp_path / "insight.zip", {"00/a_1_2.jpg": b"a"})
    assert extract_archive(zip_path, tmp_path / "dff/insight") == 1
    # A single folder not named after the source (00/) is content, not a wrapper.
    assert files_under(tmp_path / "dff") == {"insight/00/a_1_2.jpg"}


def test_extraction_happens_once(tmp_path):
    zip_path = write_zip(tmp_path / "wiki.zip", {"wiki/00/a_1_2.jpg": b"a"})
    extract_archive(zip_path, tmp_path / "dff/wiki")
    (tmp_path / "dff/wiki/00/a_1_2.jpg").write_bytes(b"kept")
    assert extract_archive(zip_path, tmp_path / "dff/wiki") == 1
    assert (tmp_path / "dff/wiki/00/a_1_2.jpg").read_bytes() == b"kept"


def test_a_broken_zip_leaves_nothing_half_extracted(tmp_path):
    (tmp_path / "text2img.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DownloadError, match=r"text2img.zip is not a valid zip.*delete it"):
        extract_archive(tmp_path / "text2img.zip", tmp_path / "dff/text2img")
    assert not (tmp_path / "dff").exists() or list((tmp_path / "dff").iterdir()) == []


def test_a_corrupt_deflate_stream_names_the_zip_and_leaves_no_staging_folder(tmp_path):
    zip_path = tmp_path / "wiki.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("wiki/00/a_1_2.jpg", bytes(range(256)) * 64)
    raw = bytearray(zip_path.read_bytes())
    start = 30 + len("wiki/00/a_1_2.jpg")  # the local header, then the compressed data
    raw[start:start + 8] = b"\xff" * 8
    zip_path.write_bytes(bytes(raw))
    with pytest.raises(DownloadError, match=r"wiki.zip is not a valid zip \(error: Error -3 .*delete it and run"):
        extract_archive(zip_path, tmp_path / "dff/wiki")
    assert list((tmp_path / "dff").iterdir()) == []


def test_a_member_outside_the_folder_is_refused(tmp_path):
    zip_path = write_zip(tmp_path / "wiki.zip", {"../evil.jpg": b"x"})
    with pytest.raises(DownloadError, match=r"'\.\./evil\.jpg'.*outside"):
        extract_archive(zip_path, tmp_path / "dff/wiki")
    assert not (tmp_path / "evil.jpg").exists()
    assert list((tmp_path / "dff").iterdir()) == []  # no .wiki.partial left behind


def test_local_copies_are_used_and_counted_per_source(tmp_path):
    zips = tmp_path / "zips"
    write_zip(zips / "wiki.zip", {"wiki/00/a_1_2.jpg": b"a", "wiki/00/b_1_2.jpg": b"b"})
    write_zip(zips / "insight.zip", {"insight/00/a_1_2.jpg": b"a"})
    plan = DownloadPlan(archives=("wiki.zip", "insight.zip"), archive_dir=tmp_path / "hub", local_archive_dir=zips)
    assert download_dataset(plan, tmp_path / "dff") == {"wiki": 2, "insight": 1}
    # Extracted folders are not fetched again: the zips may be deleted.
    for archive in zips.iterdir():
        archive.unlink()
    assert download_dataset(plan, tmp_path / "dff") == {"wiki": 2, "insight": 1}


def test_an_unreachable_hub_names_the_file_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    plan = DownloadPlan(archives=("inpainting.zip",), archive_dir=tmp_path / "archives",
                        local_archive_dir=tmp_path / "by_hand")
    with pytest.raises(DownloadError) as error:
        fetch_archive(plan, "inpainting.zip")
    message = str(error.value)
    assert "'inpainting.zip'" in message and "OpenRL/DeepFakeFace" in message
    assert "HF_HUB_OFFLINE" in message and str(tmp_path / "by_hand") in message
    assert not (tmp_path / "dff").exists()


def test_zips_from_the_hub_are_kept_beside_the_raw_tree_whatever_the_cwd(tmp_path, monkeypatch):
    """The default plan (``archive_dir`` None, as ``download.archive_dir: null``) from a run started elsewhere."""
    fetched = []

    def hub_download(repo_id, filename, repo_type, revision, local_dir):  # the network edge
        fetched.append(Path(local_dir))
        return write_zip(Path(local_dir) / filename, {f"{Path(filename).stem}/00/a_1_2.jpg": b"a"})

    monkeypatch.setattr("huggingface_hub.hf_hub_download", hub_download)
    elsewhere = tmp_path / "notebooks"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    root = tmp_path / "data/01_raw/dff"
    assert download_dataset(DownloadPlan(archives=("wiki.zip",)), root) == {"wiki": 1}
    assert fetched == [tmp_path / "data/01_raw/dff_archives"]
    assert (tmp_path / "data/01_raw/dff_archives/wiki.zip").is_file() and not any(elsewhere.iterdir())


@pytest.mark.parametrize("client", ["httpx2", "httpx"])
def test_a_dropped_connection_says_that_rerunning_resumes(tmp_path, monkeypatch, client):
    httpx = pytest.importorskip(client)

    def hub_download(repo_id, filename, repo_type, revision, local_dir):  # the network edge
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", hub_download)
    plan = DownloadPlan(archives=("wiki.zip",), archive_dir=tmp_path / "archives")
    with pytest.raises(DownloadError, match=r"'wiki.zip' .* broke off: RemoteProtocolError: peer closed.*"
                                            r"Run the download again: it resumes"):
        fetch_archive(plan, "wiki.zip")
