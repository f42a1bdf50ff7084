"""`kedro run --pipelines download` on four small DFF-shaped zips, then `eda` on what it extracted."""

from __future__ import annotations

import shutil
import zipfile
from collections import Counter
from pathlib import Path, PurePosixPath

import pandas as pd
import pytest
import yaml

from deepfake_kedro.config import ConfigError
from deepfake_kedro.demo_data import generate_demo_dataset
from deepfake_kedro.download import DownloadError
from deepfake_kedro.pipelines.download.nodes import plan_download
from tests.conftest import PROJECT_ROOT

DFF_SOURCES = ("wiki", "text2img", "inpainting", "insight")


def write_dff_zips(folder: Path, n_identities: int = 52) -> Counter:
    """DFF's four archives, ``<source>.zip`` holding ``<source>/<NN>/<id>_<birth>_<year>.jpg``; files per source."""
    images = generate_demo_dataset(n_identities=n_identities, seed=3)
    folder.mkdir(parents=True)
    for source in DFF_SOURCES:
        with zipfile.ZipFile(folder / f"{source}.zip", "w") as archive:
            for path, data in images.items():
                if path.startswith(f"{source}/"):
                    archive.writestr(path, data)
    return Counter(PurePosixPath(path).parts[0] for path in images)


def add_dff_env(project, root: Path, zips: Path, archives: Path) -> None:
    """The base (DFF) configuration with the raw tree, the hand-downloaded zips and small caches of this test."""
    env = project.path / "conf/dfftest"
    env.mkdir()
    (env / "globals.yml").write_text(f"data_root: {root}\ndata_dir: data/dfftest\n")
    (env / "parameters.yml").write_text(
        f"download:\n  local_archive_dir: {zips}\n  archive_dir: {archives}\n"
        "preprocessing: {image_sizes: [32], face_crop_sizes: []}\n")


def test_download_extracts_the_four_zips_and_eda_counts_them(kedro_project, tmp_path):
    expected = write_dff_zips(tmp_path / "zips")
    add_dff_env(kedro_project, tmp_path / "dff", tmp_path / "zips", tmp_path / "archives")

    kedro_project.run("download", env="dfftest")
    on_disk = Counter(p.relative_to(tmp_path / "dff").parts[0] for p in (tmp_path / "dff").rglob("*.jpg"))
    assert on_disk == expected and set(on_disk) == set(DFF_SOURCES)
    assert not list((tmp_path / "dff").glob(".*.partial")) and not (tmp_path / "archives").exists()

    kedro_project.run("eda", env="dfftest")
    counts = pd.read_csv(kedro_project.path / "data/dfftest/08_reporting/eda/counts.csv").set_index("source")
    for source in DFF_SOURCES:
        assert counts.loc[source, "files"] == counts.loc[source, "usable"] == expected[source], source


def test_the_base_configuration_leaves_the_zip_folder_to_the_raw_tree():
    download = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_download.yml").read_text())["download"]
    assert plan_download(download).archive_dir is None
    assert plan_download({**download, "archive_dir": "/zips"}).archive_dir == Path("/zips")


def test_download_follows_data_root_set_in_an_environments_parameters(kedro_project, tmp_path):
    write_dff_zips(tmp_path / "zips", n_identities=4)
    env = kedro_project.path / "conf/mydata"
    env.mkdir()
    (env / "parameters.yml").write_text(
        f"data:\n  root: {tmp_path / 'dff'}\ndownload:\n  local_archive_dir: {tmp_path / 'zips'}\n")

    kedro_project.run("download", env="mydata")
    assert {p.name for p in (tmp_path / "dff").iterdir()} == set(DFF_SOURCES)
    assert not (kedro_project.path / "data/01_raw/dff").exists()


def test_relative_zip_folders_are_read_from_the_project_when_the_run_starts_in_a_subfolder(
        kedro_project, tmp_path, monkeypatch):
    write_dff_zips(tmp_path / "hub", n_identities=4)
    (kedro_project.path / "by_hand").mkdir()
    for name in ("wiki.zip", "text2img.zip"):
        shutil.copy(tmp_path / "hub" / name, kedro_project.path / "by_hand" / name)
    fetched = []

    def hub_download(repo_id, filename, repo_type, revision, local_dir):  # the network edge
        fetched.append(Path(local_dir))
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        return shutil.copy(tmp_path / "hub" / filename, Path(local_dir) / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", hub_download)
    notebooks = kedro_project.path / "notebooks"
    notebooks.mkdir()
    monkeypatch.chdir(notebooks)  # a notebook's kernel, or kedro run from a subfolder
    kedro_project.run("download", env="base", params={
        "download": {"local_archive_dir": "by_hand", "archive_dir": "my_archives"}})

    assert fetched == [kedro_project.path / "my_archives"] * 2
    assert sorted(p.name for p in (kedro_project.path / "my_archives").glob("*.zip")) == ["inpainting.zip",
                                                                                         "insight.zip"]
    assert {p.name for p in (kedro_project.path / "data/01_raw/dff").iterdir()} == set(DFF_SOURCES)
    assert not any(notebooks.iterdir())


@pytest.mark.parametrize(("params", "message"), [
    ({"data": {"rot": "/x"}}, r"data \(parameters.yml\): key 'rot'.*did you mean 'root'"),
    ({"download": {"local_archives_dir": "/zips"}}, r"download \(parameters.yml\): key 'local_archives_dir'"),
])
def test_a_misspelt_data_or_download_key_stops_the_run_before_any_node(kedro_project, tmp_path, params, message):
    kedro_project.edit_yaml("conf/base/parameters_download.yml", {"download": {"archive_dir": str(tmp_path / "a")}})
    with pytest.raises(ConfigError, match=message):
        kedro_project.run("download", env="base", params=params)
    assert not (tmp_path / "a").exists() and not (kedro_project.path / "data").exists()


def test_archives_given_as_a_string_are_whole_names():
    download = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_download.yml").read_text())["download"]
    assert plan_download({**download, "archives": "wiki.zip"}).archives == ("wiki.zip",)
    assert plan_download({**download, "archives": "wiki.zip, insight.zip"}).archives == ("wiki.zip", "insight.zip")
    for archives, bad in [("wiki", "'wiki'"), (["wiki.zip", "insight.tar"], "'insight.tar'"), ([], r"\[\]")]:
        with pytest.raises(DownloadError, match=rf"download.archives: every archive must be a .zip file.*got .*{bad}"):
            plan_download({**download, "archives": archives})


def test_archives_outside_data_sources_are_named_in_a_warning(caplog):
    download = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_download.yml").read_text())["download"]
    data = {"root": "data/01_raw/mine", "sources": {"real": "real", "fake": "fake", "wiki": "real"}}
    plan_download(download, data)
    assert ("text2img, inpainting, insight will be extracted into data.root but are not in data.sources "
            "(['fake', 'real', 'wiki'])") in caplog.text
    caplog.clear()
    plan_download(download, {**data, "sources": dict.fromkeys(DFF_SOURCES, "fake")})
    assert "not in data.sources" not in caplog.text
