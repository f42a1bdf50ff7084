import os
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake_kedro.data_index import (
    AUDIT_COLUMNS,
    DataLayoutError,
    FileAuditor,
    ImageTree,
    build_image_index,
    check_usable_images,
    decode_square,
    estimate_jpeg_quality,
    exif_orientation,
    index_from_audit,
    inspect_image,
    integrity_report,
    render_signatures,
    source_files,
    square_resize,
    to_rgb8,
    tree_changes,
)
from deepfake_kedro.image_cache import TablePlan, write_table

SOURCES = {"real": "real", "fake": "fake"}


def jpeg(size=(64, 48), quality=90, seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture
def messy_tree(tmp_path: Path) -> ImageTree:
    files = {
        "real/a/good_1.jpg": jpeg(seed=1),
        "real/b/good_2.jpg": jpeg(seed=2),
        "fake/a/good_1.jpg": jpeg(seed=3),
        "fake/empty.jpg": b"",
        "fake/truncated.jpg": jpeg(seed=4)[:400],
        "fake/notes.txt": b"not an image",
        "fake/garbage.jpg": b"\x00\x01garbage" * 50,
        "fake/tiny.jpg": jpeg(size=(8, 8)),
        "other/ignored.jpg": jpeg(seed=5),
    }
    for relative, data in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(data)
    grey = tmp_path / "real/grey.png"
    Image.fromarray(np.full((40, 50), 128, np.uint8), mode="L").save(grey)
    Image.new("CMYK", (40, 40), (10, 200, 30, 0)).save(tmp_path / "real/cmyk.jpg", "JPEG")
    Image.new("RGBA", (40, 40), (10, 200, 30, 100)).save(tmp_path / "real/rgba.png")
    Image.fromarray(np.arange(48 * 48, dtype=np.uint16).reshape(48, 48) * 20).save(tmp_path / "real/deep16.png")
    Image.new("RGB", (40, 40), (1, 2, 3)).save(tmp_path / "fake/really_png.jpg", "PNG")
    # 200 megapixels of one-bit black: a few KB on disk, past Pillow's decompression-bomb limit.
    Image.new("1", (20_000, 10_000)).save(tmp_path / "fake/huge.png")
    return ImageTree(tmp_path)


def test_bad_files_are_reported_with_reason_and_good_ones_kept(messy_tree):
    index = build_image_index(messy_tree, SOURCES, min_size=32).set_index("path")
    assert index.loc["fake/empty.jpg", "status"] == "zero_byte"
    assert index.loc["fake/truncated.jpg", "status"] == "truncated"
    assert index.loc["fake/notes.txt", "status"] == "not_image"
    assert index.loc["fake/garbage.jpg", "status"] == "unreadable"
    assert index.loc["fake/tiny.jpg", "status"] == "too_small"
    assert index.loc["fake/huge.png", "status"] == "too_large"
    assert (index.loc[index["status"] != "ok", "reason"] != "").all()
    good = index[index["status"] == "ok"]
    assert set(good.index) == {"real/a/good_1.jpg", "real/b/good_2.jpg", "fake/a/good_1.jpg", "real/grey.png",
                               "real/cmyk.jpg", "real/rgba.png", "real/deep16.png", "fake/really_png.jpg"}
    assert "converted" in good.loc["real/cmyk.jpg", "reason"] and "converted" in good.loc["real/deep16.png", "reason"]
    assert "PNG data" in good.loc["fake/really_png.jpg", "reason"]
    report = integrity_report(build_image_index(messy_tree, SOURCES, min_size=32)).set_index("path")
    assert report.loc["fake/truncated.jpg", "action"] == "excluded" and report.loc["real/cmyk.jpg", "action"] == "kept"
    for path in ("real/cmyk.jpg", "real/rgba.png", "real/deep16.png", "fake/really_png.jpg"):
        assert decode_square(messy_tree, path, 16).shape == (16, 16, 3)
    assert "other/ignored.jpg" not in index.index
    assert good.loc["fake/a/good_1.jpg", "group"] == good.loc["real/a/good_1.jpg", "group"]
    assert good.loc["fake/a/good_1.jpg", "label"] == 1 and good.loc["real/a/good_1.jpg", "label"] == 0
    assert good.loc["real/a/good_1.jpg", "width"] == 64 and good.loc["real/a/good_1.jpg", "height"] == 48


def test_missing_source_folder_names_it(tmp_path):
    (tmp_path / "real").mkdir()
    with pytest.raises(DataLayoutError, match="'fake'"):
        build_image_index(ImageTree(tmp_path), SOURCES)


@pytest.mark.parametrize("quality", [60, 75, 90, 95])
def test_jpeg_quality_estimate_recovers_the_encoder_setting(quality):
    with Image.open(BytesIO(jpeg(quality=quality))) as image:
        assert abs(estimate_jpeg_quality(image) - quality) <= 2


def test_square_resize_centre_crops_and_converts_modes():
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 20:60] = 255  # the centre square is white, the side bands black
    out = square_resize(Image.fromarray(wide), 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert out.min() > 240
    sixteen_bit = Image.fromarray(np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16))
    converted = square_resize(sixteen_bit, 8)
    assert converted.shape == (8, 8, 3) and converted.max() > 200 and converted.min() < 50
    rgba = Image.new("RGBA", (20, 20), (10, 20, 30, 0))
    assert square_resize(rgba, 4)[0, 0].tolist() == [10, 20, 30]


def test_decode_square_reads_through_the_tree(messy_tree):
    assert decode_square(messy_tree, "real/grey.png", 12).shape == (12, 12, 3)


def save_sideways(upright: Image.Image, path: Path) -> None:
    """What a phone writes for a portrait: the pixels stored turned a quarter left, tagged Orientation 6."""
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers turn the stored pixels 90 degrees clockwise to show them
    upright.rotate(90, expand=True).save(path, exif=exif.tobytes())  # PNG: lossless, so pixels compare exactly


def test_a_sideways_stored_photo_is_indexed_hashed_and_cached_as_viewers_show_it(tmp_path):
    (tmp_path / "real").mkdir()
    upright = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 40, 3), dtype=np.uint8))  # 40 wide
    upright.save(tmp_path / "real" / "upright.png")
    save_sideways(upright, tmp_path / "real" / "phone.png")
    tree = ImageTree(tmp_path)
    with Image.open(tmp_path / "real" / "phone.png") as stored:
        assert stored.size == (60, 40) and exif_orientation(stored) == 6
    phone = inspect_image(tree.read_bytes("real/phone.png"), ".png", min_size=16, hash_size=32)
    plain = inspect_image(tree.read_bytes("real/upright.png"), ".png", min_size=16, hash_size=32)
    assert (phone["width"], phone["height"], phone["orientation"]) == (40, 60, 6)
    assert phone["status"] == "ok" and "EXIF orientation 6" in phone["reason"]
    assert (plain["width"], plain["height"], plain["orientation"]) == (40, 60, 1)
    assert phone["phash"] == plain["phash"]
    # The square the cache holds is the upright picture's, pixel for pixel (the stored one's centre differs).
    upright_square = decode_square(tree, "real/upright.png", 24)
    np.testing.assert_array_equal(decode_square(tree, "real/phone.png", 24), upright_square)
    with Image.open(tmp_path / "real" / "phone.png") as stored:
        as_stored = square_resize(Image.fromarray(np.asarray(stored)), 24)  # the pixels alone, without the tag
    assert not np.array_equal(as_stored, upright_square)
    index = pd.DataFrame({"content": ["aa", "bb"], "orientation": [1, 6]})
    # An unturned image keeps its bare digest (its cached rows stay valid); a turned one is rendered anew.
    assert render_signatures(index) == ["aa", "bb|orientation=6"]
    assert render_signatures(index.drop(columns="orientation")) == ["aa", "bb"]


def test_broken_symlink_is_an_integrity_row_with_its_reason(messy_tree):
    (messy_tree.root / "real/dangling.jpg").symlink_to(messy_tree.root / "real/gone.jpg")
    index = build_image_index(messy_tree, SOURCES, min_size=32).set_index("path")
    assert index.loc["real/dangling.jpg", "status"] == "unreadable"
    assert "cannot read the file: FileNotFoundError" in index.loc["real/dangling.jpg", "reason"]
    assert index.loc["real/a/good_1.jpg", "bytes"] == len(jpeg(seed=1))
    report = integrity_report(index.reset_index()).set_index("path")
    assert report.loc["real/dangling.jpg", "action"] == "excluded"


def test_one_class_data_fails_before_training_naming_the_folder(messy_tree):
    index = build_image_index(messy_tree, SOURCES, min_size=32)
    # fake/ keeps only its bad files: empty, truncated, text, garbage, tiny, huge.
    only_real = index[(index["source"] == "real") | (index["status"] != "ok")]
    with pytest.raises(DataLayoutError, match=r"data.sources names 'fake', but '.*/fake' holds no usable image "
                                              r"\(6 files: 1 not_image, 1 too_large, 1 too_small, 1 truncated, "
                                              r"1 unreadable, 1 zero_byte\)"):
        check_usable_images(only_real, messy_tree.root, SOURCES, cv_folds=5, min_groups=10)
    # Every source has images, but the fakes come from 2 groups: too few for 5 test folds.
    with pytest.raises(DataLayoutError, match=r"only 2 usable fake image groups .*cv_folds=5 needs at least 5"):
        check_usable_images(index, messy_tree.root, SOURCES, cv_folds=5, min_groups=10)
    many = pd.DataFrame({"path": [f"{s}/{i}.jpg" for s in SOURCES for i in range(8)],
                         "source": np.repeat(list(SOURCES), 8), "label": np.repeat([0, 1], 8),
                         "group": [str(i) for _ in SOURCES for i in range(8)], "status": "ok"})
    with pytest.raises(DataLayoutError, match=r"8 usable image groups .* need at least 50 .*'real': 8, 'fake': 8"):
        check_usable_images(many, messy_tree.root, SOURCES, cv_folds=5, min_groups=50)
    check_usable_images(many, messy_tree.root, SOURCES, cv_folds=5, min_groups=8)


def test_to_rgb8_gives_a_16_bit_or_float_picture_the_pixels_of_its_8_bit_twin(tmp_path):
    grey8 = np.random.default_rng(0).integers(20, 120, (8, 8), dtype=np.uint8)  # a dark picture
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # how 8 bits widen to 16
    with Image.open(tmp_path / "deep.png") as deep:
        assert deep.mode.startswith("I")
        assert (np.asarray(deep.convert("RGB")) == 255).mean() > 0.9  # what a plain convert gives
        rgb = np.asarray(to_rgb8(deep))
    assert rgb.shape == (8, 8, 3)
    np.testing.assert_array_equal(rgb[..., 0], grey8)  # not stretched to 0-255: the contrast is the picture's
    as_float = Image.fromarray(grey8.astype(np.float32) / 255.0, mode="F")
    np.testing.assert_array_equal(np.asarray(to_rgb8(as_float))[..., 1], grey8)


class CountingAuditor(FileAuditor):
    """The real auditor, remembering which files it decoded."""

    def __call__(self, paths):
        self.decoded.extend(paths)
        return super().__call__(paths)


def audit_tree(tree: ImageTree, table: Path, min_size: int = 32, hash_size: int = 32) -> tuple[list[str], pd.DataFrame]:
    """One incremental audit as the pipeline runs it; returns the files decoded and the index."""
    auditor = CountingAuditor(tree, min_size, hash_size, workers=2)
    object.__setattr__(auditor, "decoded", [])
    paths = source_files(tree, SOURCES)
    write_table(TablePlan(paths, [auditor.signature(p) for p in paths], auditor, batch_size=4), table)
    return auditor.decoded, index_from_audit(pd.read_parquet(table), SOURCES)


@pytest.fixture
def table(tmp_path_factory) -> Path:
    """Where the audit table is kept: outside the image tree, as data/02_intermediate is."""
    return tmp_path_factory.mktemp("intermediate") / "image_audit.parquet"


def test_audit_index_equals_the_full_decode_index(messy_tree, table):
    _, index = audit_tree(messy_tree, table)
    pd.testing.assert_frame_equal(index, build_image_index(messy_tree, SOURCES, min_size=32), check_dtype=False)
    audit = pd.read_parquet(table)
    assert list(audit.columns) == AUDIT_COLUMNS
    hashed = audit.set_index("key")["phash"]
    assert hashed["real/a/good_1.jpg"] != 0 and hashed["fake/truncated.jpg"] == 0 and hashed["fake/tiny.jpg"] == 0


def test_unchanged_tree_reindexes_without_decoding(messy_tree, table):
    first, index = audit_tree(messy_tree, table)
    written = table.stat().st_mtime_ns
    again, reindexed = audit_tree(messy_tree, table)
    assert len(first) == len(index) == 14 and again == []
    assert table.stat().st_mtime_ns == written  # nothing to rewrite either
    pd.testing.assert_frame_equal(reindexed, index)


def test_changed_file_is_decoded_again(messy_tree, table):
    same_size = messy_tree.root / "real/b/flat.bmp"
    Image.new("RGB", (40, 40), (200, 10, 10)).save(same_size)
    audit_tree(messy_tree, table)
    bigger = messy_tree.root / "real/a/good_1.jpg"
    bigger.write_bytes(jpeg(size=(96, 80), seed=9))  # new size on disk
    stat = same_size.stat()
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(same_size)
    assert same_size.stat().st_size == stat.st_size  # same byte count: only the mtime tells
    os.utime(same_size, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    decoded, index = audit_tree(messy_tree, table)
    assert sorted(decoded) == ["real/a/good_1.jpg", "real/b/flat.bmp"]
    row = index.set_index("path").loc["real/a/good_1.jpg"]
    assert (row["width"], row["height"], row["bytes"]) == (96, 80, bigger.stat().st_size)
    new_hash = pd.read_parquet(table).set_index("key").loc["real/b/flat.bmp", "phash"]
    assert new_hash == FileAuditor(messy_tree, 32, 32).audit("real/b/flat.bmp")["phash"] != 0


def test_changed_settings_decode_again(messy_tree, table):
    audit_tree(messy_tree, table)
    decoded, index = audit_tree(messy_tree, table, min_size=50)
    assert len(decoded) == 14  # min_image_size is part of every row's signature
    assert index.set_index("path").loc["real/grey.png", "status"] == "too_small"


def test_deleted_file_leaves_the_index_and_a_new_file_enters(messy_tree, table):
    audit_tree(messy_tree, table)
    (messy_tree.root / "fake/a/good_1.jpg").unlink()
    (messy_tree.root / "fake/c").mkdir()
    (messy_tree.root / "fake/c/newcomer.jpg").write_bytes(jpeg(seed=30))
    decoded, index = audit_tree(messy_tree, table)
    assert decoded == ["fake/c/newcomer.jpg"]
    assert "fake/a/good_1.jpg" not in set(index["path"])
    assert index.set_index("path").loc["fake/c/newcomer.jpg", "status"] == "ok"
    assert list(pd.read_parquet(table)["key"]) == source_files(messy_tree, SOURCES)


def test_tree_changes_names_files_added_removed_or_replaced_since_the_audit_and_no_other(messy_tree, table):
    audit_tree(messy_tree, table)
    audit = pd.read_parquet(table)
    assert not tree_changes(messy_tree, SOURCES, audit)
    root = messy_tree.root
    # A touch and a copy move the times, not the content: read again, found the same, not a change.
    os.utime(root / "real/a/good_1.jpg", ns=(0, 1_000_000_000))
    data = (root / "real/b/good_2.jpg").read_bytes()
    (root / "real/b/good_2.jpg").unlink()
    (root / "real/b/good_2.jpg").write_bytes(data)
    assert not tree_changes(messy_tree, SOURCES, audit)
    # Same byte count, other bytes (only the digest tells), a new size, a file gone and one new.
    stat = (root / "fake/a/good_1.jpg").stat()
    (root / "fake/a/good_1.jpg").write_bytes(jpeg(seed=31))
    assert (root / "fake/a/good_1.jpg").stat().st_size == stat.st_size
    os.utime(root / "fake/a/good_1.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (root / "real/grey.png").write_bytes(jpeg(seed=32))
    (root / "fake/tiny.jpg").unlink()
    (root / "fake/c").mkdir()
    (root / "fake/c/newcomer.jpg").write_bytes(jpeg(seed=30))
    (root / "other/also_ignored.jpg").write_bytes(jpeg(seed=33))  # not a source folder
    changes = tree_changes(messy_tree, SOURCES, audit)
    assert (changes.added, changes.removed, changes.replaced) == (
        ["fake/c/newcomer.jpg"], ["fake/tiny.jpg"], ["fake/a/good_1.jpg", "real/grey.png"])
    assert changes.summary(examples=2) == ("1 added, 1 removed, 2 replaced "
                                           "(e.g. fake/c/newcomer.jpg, fake/tiny.jpg, ...)")
    # The next audit records them: the tree is then unchanged again.
    audit_tree(messy_tree, table)
    assert not tree_changes(messy_tree, SOURCES, pd.read_parquet(table))


def test_a_file_name_that_is_not_utf8_is_excluded_with_a_warning_and_the_index_still_saves(tmp_path, caplog):
    for source in SOURCES:
        (tmp_path / source).mkdir()
        (tmp_path / source / "a.jpg").write_bytes(jpeg(seed=1))
    # A Latin-1 name, as old archives and Windows shares leave them: os.walk returns it with a surrogate.
    with open(os.path.join(os.fsencode(tmp_path / "real"), b"caf\xe9.jpg"), "wb") as handle:
        handle.write(jpeg(seed=2))

    paths = source_files(ImageTree(tmp_path), SOURCES)

    assert paths == ["fake/a.jpg", "real/a.jpg"]
    assert "not UTF-8" in caplog.text and "real/caf\\\\xe9.jpg" in caplog.text
    build_image_index(ImageTree(tmp_path), SOURCES, min_size=8).to_parquet(tmp_path / "index.parquet")


def test_symlinked_folders_are_followed_once_and_a_link_loop_ends(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.jpg").write_bytes(jpeg(seed=3))
    root = tmp_path / "tree"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.jpg").write_bytes(jpeg(seed=4))
    (root / "real" / "linked").symlink_to(outside, target_is_directory=True)  # a dataset assembled from links
    (root / "real" / "loop").symlink_to(root / "real", target_is_directory=True)

    assert ImageTree(root).files() == ["real/a.jpg", "real/linked/x.jpg"]


def test_only_folders_not_named_in_sources_are_reported_as_ignored(tmp_path, caplog):
    for folder in (*SOURCES, "extra"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.jpg").write_bytes(jpeg(seed=1))
    (tmp_path / "SOURCE.md").write_text("where the images came from")

    assert source_files(ImageTree(tmp_path), SOURCES) == ["fake/a.jpg", "real/a.jpg"]
    assert "Ignoring folders not named in data.sources: ['extra']" in caplog.text


def test_identical_bytes_under_both_labels_are_reported_and_kept(tmp_path):
    for source in SOURCES:
        (tmp_path / source).mkdir()
    (tmp_path / "real/a.jpg").write_bytes(jpeg(seed=1))
    (tmp_path / "fake/copy_of_a.jpg").write_bytes(jpeg(seed=1))
    (tmp_path / "fake/b.jpg").write_bytes(jpeg(seed=2))
    (tmp_path / "fake/same_b.jpg").write_bytes(jpeg(seed=2))  # same bytes, same label: not a label conflict

    index = build_image_index(ImageTree(tmp_path), SOURCES, min_size=8)
    report = integrity_report(index).set_index("path")

    assert sorted(report.index) == ["fake/copy_of_a.jpg", "real/a.jpg"]
    assert set(report["status"]) == {"same_content_other_label"} and set(report["action"]) == {"kept"}
    assert report.loc["real/a.jpg", "reason"] == "identical bytes to fake/copy_of_a.jpg (fake)"
    assert report.loc["fake/copy_of_a.jpg", "reason"] == "identical bytes to real/a.jpg (real)"
    assert (index["status"] == "ok").all()  # the index keeps them usable
