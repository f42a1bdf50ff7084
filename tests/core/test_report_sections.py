import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from deepfake_kedro.datasets import ReportSectionDataset, ReportSectionsDataset
from deepfake_kedro.report_sections import ReportSection, ordered, section_slides


def _figure():
    figure, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [1, 0])
    return figure


def test_section_round_trips_through_its_folder_and_replaces_the_previous_one(tmp_path):
    dataset = ReportSectionDataset(str(tmp_path / "sections" / "robustness"))
    table = pd.DataFrame({"corruption": ["jpeg", "blur"], "auc": [0.91, 0.84]})
    dataset.save(ReportSection.with_figure("robustness", "Robustness", "AUC per corruption.", _figure(), table))
    loaded = dataset.load()
    assert (loaded.name, loaded.title, loaded.caption) == ("robustness", "Robustness", "AUC per corruption.")
    pd.testing.assert_frame_equal(loaded.table, table)
    assert loaded.image.ndim == 3 and loaded.image.shape[2] == 3
    dataset.save(ReportSection("robustness", "Robustness v2", "No figure this time."))
    again = dataset.load()
    assert again.title == "Robustness v2" and again.image is None and again.table is None
    assert not list((tmp_path / "sections").glob("*.partial")) and not list((tmp_path / "sections").glob("*.old"))


def test_sections_are_read_in_deck_order_and_a_missing_folder_is_no_section(tmp_path):
    root = tmp_path / "sections"
    assert ReportSectionsDataset(str(root)).load() == []
    for name in ("zeta_extra", "attribution", "external"):
        ReportSectionDataset(str(root / name)).save(ReportSection(name, name.title(), "caption"))
    assert [s.name for s in ReportSectionsDataset(str(root)).load()] == ["external", "attribution", "zeta_extra"]
    with pytest.raises(DatasetError, match="read-only"):
        ReportSectionsDataset(str(root)).save(["not a section"])


def test_missing_section_names_its_file(tmp_path):
    with pytest.raises(DatasetError, match="section.json"):
        ReportSectionDataset(str(tmp_path / "external")).load()


def test_section_slides_hold_its_table_then_its_figure():
    table = pd.DataFrame({"a": [1.0]})
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    assert len(section_slides(ReportSection("x", "X", "c", table, image))) == 2
    assert len(section_slides(ReportSection("x", "X", "c", None, image))) == 1
    assert section_slides(ReportSection("x", "X", "c", table.iloc[:0], None)) == []
    assert [s.name for s in ordered([ReportSection("b", "", ""), ReportSection("demo_check", "", "")])] == \
        ["demo_check", "b"]
    plt.close("all")
