import warnings
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from deepfake_kedro.demo_data import generate_demo_dataset
from deepfake_kedro.folds import (
    LeakageError,
    build_fold_table,
    check_no_leakage,
    select_fold_rows,
    split_column,
    stratified_group_folds,
)


def dff_like_images(n_identities: int = 120, seed: int = 0) -> pd.DataFrame:
    """Four sources per identity sharing a basename, a few identities missing a fake."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_identities):
        for source, label in (("wiki", 0), ("text2img", 1), ("inpainting", 1), ("insight", 1)):
            if label and rng.random() < 0.1:
                continue
            rows.append({"path": f"{source}/{i % 7:02d}/{i}_1970_2000.jpg", "source": source, "label": label,
                         "group": f"{i}_1970_2000"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return build_fold_table(dff_like_images(), cv_folds=5, val_ratio=0.1, seed=42)


def test_no_group_crosses_train_val_test_in_any_fold(table):
    for fold in range(5):
        roles_per_group = table.groupby("group")[split_column(fold)].nunique()
        assert roles_per_group.max() == 1
        assert set(table[split_column(fold)]) == {"train", "val", "test"}


def test_every_image_is_tested_exactly_once_and_folds_are_stratified(table):
    assert sorted(table["fold"].unique()) == [0, 1, 2, 3, 4]
    for fold in range(5):
        assert (table[split_column(fold)] == "test").equals(table["fold"] == fold)
    shares = table.groupby("fold")["label"].mean()
    assert shares.max() - shares.min() < 0.08


def test_val_share_follows_val_ratio(table):
    for fold in range(5):
        training = table[table[split_column(fold)] != "test"]
        share = (training[split_column(fold)] == "val").mean()
        assert 0.05 < share < 0.15


def test_a_val_ratio_that_is_not_one_over_k_says_what_share_it_gets(caplog):
    table = build_fold_table(dff_like_images(), cv_folds=5, val_ratio=0.4, seed=42)
    training = table[table[split_column(0)] != "test"]
    share = training.groupby("group")[split_column(0)].first().eq("val").mean()
    assert share == pytest.approx(0.5, abs=0.03)  # round(1 / 0.4) = 2 parts: half the groups validate
    assert "val_ratio 0.4 is realised as 1/2 = 0.5" in caplog.text
    caplog.clear()
    build_fold_table(dff_like_images(), cv_folds=5, val_ratio=0.2, seed=42)
    assert "realised" not in caplog.text


def test_same_seed_same_table_other_seed_other_table():
    images = dff_like_images()
    first = build_fold_table(images, 5, 0.1, seed=7)
    again = build_fold_table(images, 5, 0.1, seed=7)
    other = build_fold_table(images, 5, 0.1, seed=8)
    pd.testing.assert_frame_equal(first, again)
    assert not first["fold"].equals(other["fold"])


def test_subsample_keeps_whole_groups_nested_and_per_source(table):
    selected = {}
    for share in (0.2, 0.5, 1.0):
        rows = select_fold_rows(table, 0, share)
        chosen = table.iloc[np.concatenate([rows.train, rows.val, rows.test])]
        selected[share] = set(chosen["group"])
        # Every image of a chosen group is chosen: groups are never split by subsampling.
        assert len(chosen) == table["group"].isin(selected[share]).sum()
    assert selected[0.2] < selected[0.5] < selected[1.0]
    assert abs(len(selected[0.2]) / table["group"].nunique() - 0.2) < 0.05


def test_subsample_can_leave_the_test_fold_whole(table):
    whole, thinned = select_fold_rows(table, 0, 1.0), select_fold_rows(table, 0, 0.2)
    kept = select_fold_rows(table, 0, 0.2, subsample_test=False)
    # Train and val are thinned alike; the test part is the whole fold's, as at 1.0.
    np.testing.assert_array_equal(kept.train, thinned.train)
    np.testing.assert_array_equal(kept.val, thinned.val)
    np.testing.assert_array_equal(kept.test, whole.test)
    assert len(thinned.test) < len(whole.test)


def single_source_table() -> pd.DataFrame:
    """148 identities, each with one source (a real or a fake face, never both)."""
    images = dff_like_images(160)
    images = images[images["group"].str.split("_").str[0].astype(int) % 4 == images["source"].map(
        {"wiki": 0, "text2img": 1, "inpainting": 2, "insight": 3})]
    return build_fold_table(images, cv_folds=5, val_ratio=0.1, seed=3)


def test_small_subsample_keeps_every_part_stratified_and_with_every_source():
    # 148 identities with one source each. At 10%, the single rank cut over the table used before
    # left two of five validation parts empty and the other three without a real image.
    small = single_source_table()
    for fold in range(5):
        kept = {share: select_fold_rows(small, fold, share) for share in (0.1, 0.2, 0.5)}
        for role in ("train", "val", "test"):
            part = small[small[split_column(fold)] == role]
            chosen = [small.iloc[getattr(kept[share], role)] for share in (0.1, 0.2, 0.5)]
            assert set(chosen[0]["group"]) <= set(chosen[1]["group"]) <= set(chosen[2]["group"])
            for share, rows in zip((0.1, 0.2, 0.5), chosen):
                # Every source, so every label: both classes here, every class of an attribution model.
                assert set(rows["source"]) == set(part["source"]), (fold, role, share)
                assert set(rows["label"]) == {0, 1}, (fold, role, share)
                # Stratified: each source keeps its share of the part's groups, give or take one
                # (two for the labels' minimum), never all of a small source at a small share.
                n_groups = part.groupby("source")["group"].nunique()
                kept_groups = rows.groupby("source")["group"].nunique().reindex(n_groups.index, fill_value=0)
                assert (abs(kept_groups - share * n_groups) <= 2).all(), (fold, role, share)


def test_labels_never_change_which_groups_a_subsample_keeps():
    # Attribution relabels the table with class indices; its fold data and its training must select alike.
    table = single_source_table()
    relabelled = table.assign(label=table["source"].map({"wiki": -1, "text2img": 0, "inpainting": 1, "insight": 2}))
    for fold in range(5):
        before, after = select_fold_rows(table, fold, 0.1), select_fold_rows(relabelled, fold, 0.1)
        for role in ("train", "val", "test"):
            np.testing.assert_array_equal(getattr(before, role), getattr(after, role))


def test_row_order_never_changes_which_groups_a_subsample_keeps():
    # Four sources of six training groups each, ranked alike: at 25% the queue's fifth and sixth places are a
    # tie between the four sources' second groups. The choice must not follow the order rows are stored in.
    rows = [{"path": f"{source}/{i}.jpg", "source": source, "label": int(source != "wiki"), "group": f"{source}{i}",
             split_column(0): "val" if i < 2 else "test" if i < 4 else "train", "subsample_rank": (i + 1) / 10}
            for source in ("wiki", "text2img", "inpainting", "insight") for i in range(10)]
    table = pd.DataFrame(rows)
    kept = set(table.iloc[select_fold_rows(table, 0, 0.25).train]["group"])
    assert len(kept) == 6
    for seed in range(5):
        shuffled = table.sample(frac=1.0, random_state=seed)
        assert set(shuffled.iloc[select_fold_rows(shuffled, 0, 0.25).train]["group"]) == kept


def test_an_empty_part_is_an_error_that_names_the_fold_and_sources(table):
    with pytest.raises(ValueError, match=r"fold 3 has no train / val images .*\['wikipedia'\]"):
        select_fold_rows(table, 3, 1.0, train_sources=["wikipedia"])


def test_source_holdout_trains_without_the_source_but_tests_on_it(table):
    rows = select_fold_rows(table, 1, 1.0, train_sources=["wiki", "text2img", "insight"])
    assert "inpainting" not in set(table.iloc[rows.train]["source"]) | set(table.iloc[rows.val]["source"])
    assert "inpainting" in set(table.iloc[rows.test]["source"])


def test_leakage_check_fails_on_a_crossing_group(table):
    leaky = table.copy()
    sizes = leaky.groupby("group")["path"].transform("size")
    members = leaky.index[(sizes > 1) & (leaky[split_column(2)] == "test")]
    group_rows = leaky.index[leaky["group"] == leaky.loc[members[0], "group"]]
    leaky.loc[group_rows[0], split_column(2)] = "train"  # one image of a test group moves to train
    with pytest.raises(LeakageError, match="fold 2"):
        check_no_leakage(leaky)


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(ValueError, match="too few"):
        build_fold_table(dff_like_images(10), 5, 0.1, seed=0)


def sklearn_folds(strata, groups, n_splits: int, seed: int) -> np.ndarray:
    folds = np.full(len(strata), -1)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fold, (_, test_rows) in enumerate(splitter.split(np.zeros(len(strata)), strata, groups)):
        folds[test_rows] = fold
    return folds


def sklearn_fold_table(images: pd.DataFrame, cv_folds: int, val_ratio: float, seed: int) -> pd.DataFrame:
    """The fold and role columns as build_fold_table made them with scikit-learn's StratifiedGroupKFold."""
    strata, groups = pd.Categorical(images["source"]).codes, images["group"].to_numpy()
    table = pd.DataFrame({"fold": sklearn_folds(strata, groups, cv_folds, seed)})
    for fold in range(cv_folds):
        roles = np.where(table["fold"] == fold, "test", "train").astype(object)
        train = np.flatnonzero(roles == "train")
        inner = sklearn_folds(strata[train], groups[train], max(2, round(1 / val_ratio)), seed + 1 + fold)
        roles[train[inner == 0]] = "val"
        table[split_column(fold)] = roles
    return table


def test_fold_assignment_equals_scikit_learns_on_random_strata_and_groups():
    rng = np.random.default_rng(3)
    for _ in range(60):
        n, n_splits = int(rng.integers(20, 300)), int(rng.integers(2, 6))
        strata = rng.integers(0, int(rng.integers(1, 5)), n)
        groups = np.array([f"g{g}" for g in rng.integers(0, n // int(rng.integers(1, 4)), n)], dtype=object)
        if len(set(groups)) < n_splits:
            continue
        seed = int(rng.integers(0, 10_000))
        with warnings.catch_warnings():  # scikit-learn warns when a class has fewer members than folds
            warnings.simplefilter("ignore", UserWarning)
            expected = sklearn_folds(strata, groups, n_splits, seed)
        np.testing.assert_array_equal(stratified_group_folds(strata, groups, n_splits, seed), expected)


@pytest.mark.parametrize("seed", [42, 0, 7])
def test_demo_fold_table_is_the_one_scikit_learn_gave(seed):
    """Finished runs are keyed by the fold table: the faster assignment must not move a single demo image."""
    rows = []
    for path in generate_demo_dataset(n_identities=64, seed=0):
        source, stem = PurePosixPath(path).parts[0], PurePosixPath(path).stem
        rows.append({"path": path, "source": source, "label": int(source != "wiki"), "group": stem.lower()})
    images = pd.DataFrame(rows)
    table = build_fold_table(images, cv_folds=5, val_ratio=0.1, seed=seed)
    expected = sklearn_fold_table(images, cv_folds=5, val_ratio=0.1, seed=seed)
    pd.testing.assert_frame_equal(table[expected.columns], expected, check_dtype=False)
