"""The fold table: leak-free grouped, stratified cross-validation computed once for the study.

Every image gets an outer test fold (``StratifiedGroupKFold`` over groups,
stratified by source) and, for each outer fold, a role: ``train``, ``val``
(a group-aware stratified inner split of the training folds, for early
stopping) or ``test``. A per-group ``subsample_rank`` orders the groups a
subsample keeps, so every subsample is a nested set of whole groups on the
same folds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


class LeakageError(RuntimeError):
    """A group appears on more than one side of a split."""


def split_column(fold: int) -> str:
    """Name of the column holding every image's role when ``fold`` is the test fold."""
    return f"split_{fold}"


def _subsample_ranks(groups: pd.DataFrame, seed: int) -> pd.Series:
    """A rank in (0, 1] per group, uniform within each source-composition stratum."""
    rng = np.random.default_rng(seed)
    ranks = pd.Series(0.0, index=groups.index)
    for _, members in groups.groupby("stratum", sort=True):
        order = rng.permutation(len(members))
        ranks.loc[members.index] = (order + 1) / len(members)
    return ranks


def source_strata(table: pd.DataFrame) -> pd.Series:
    """Each group's source composition, e.g. ``inpainting+wiki``: the stratum of subsampling."""
    codes, names = pd.factorize(table["source"], sort=True)
    if len(names) > 62:  # one bit per source no longer fits an int64: join the names per group instead
        pairs = table[["group", "source"]].drop_duplicates().sort_values(["group", "source"])
        return pairs.groupby("group")["source"].agg("+".join).rename("stratum")
    # Each source is one bit; a group's distinct bits add up to its composition (vectorised, unlike a join).
    bits = pd.DataFrame({"group": table["group"].to_numpy(), "bit": np.left_shift(1, codes.astype(np.int64))})
    masks = bits.drop_duplicates().groupby("group")["bit"].sum()
    name_of = {int(m): "+".join(names[i] for i in range(len(names)) if m >> i & 1) for m in masks.unique()}
    return masks.map(name_of).rename("stratum")


def stratified_group_folds(strata: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """The test fold of every row, exactly as scikit-learn's ``StratifiedGroupKFold(shuffle=True)`` assigns them.

    scikit-learn scores each group against each fold with a separate ``np.std`` call, which at 30k groups takes
    seconds per split (about 35 s for a DFF-sized fold table). Here the ``n_splits`` candidate folds are scored in
    one call; the arithmetic and its order are the same, so the table is identical for the same inputs
    (``tests/core/test_folds.py`` compares the two).

    Args:
        strata: One class label per row (here the source code).
        groups: One group per row.
        n_splits: Number of folds.
        seed: ``random_state`` of the shuffle.

    Returns:
        One fold number in ``[0, n_splits)`` per row.
    """
    _, y_inv, y_cnt = np.unique(np.asarray(strata), return_inverse=True, return_counts=True)
    _, groups_inv, groups_cnt = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    if n_splits > len(groups_cnt):
        raise ValueError(f"Cannot have number of splits n_splits={n_splits} greater than the number of groups: "
                         f"{len(groups_cnt)}.")
    y_counts_per_group = np.zeros((len(groups_cnt), len(y_cnt)))
    np.add.at(y_counts_per_group, (groups_inv.ravel(), y_inv.ravel()), 1)
    permutation = np.arange(len(groups_cnt))
    np.random.RandomState(seed).shuffle(permutation)  # the shuffle scikit-learn draws from random_state
    y_counts_per_group = y_counts_per_group[permutation]
    order = np.argsort(-np.std(y_counts_per_group, axis=1), kind="stable")
    y_counts_per_fold = np.zeros((n_splits, len(y_cnt)))
    candidates = np.arange(n_splits)
    fold_of_group = np.empty(len(groups_cnt), dtype=np.int64)
    for group in order:
        counts = y_counts_per_group[group]
        # Row i of `proposed` is the fold table with this group added to fold i.
        proposed = np.repeat(y_counts_per_fold[np.newaxis], n_splits, axis=0)
        proposed[candidates, candidates] += counts
        scores = np.mean(np.std(proposed / y_cnt, axis=1), axis=1).tolist()
        sizes = y_counts_per_fold.sum(axis=1).tolist()
        best, best_score, best_size = 0, np.inf, np.inf
        for fold, (score, size) in enumerate(zip(scores, sizes)):
            # scikit-learn's rule: lower spread wins; on a tie (np.isclose) the emptier fold wins.
            tie = abs(score - best_score) <= 1e-8 + 1e-5 * abs(best_score)
            if score < best_score or (tie and size < best_size):
                best, best_score, best_size = fold, score, size
        y_counts_per_fold[best] += counts
        fold_of_group[group] = best
    inverse = np.empty_like(permutation)
    inverse[permutation] = np.arange(permutation.size)
    return fold_of_group[inverse[groups_inv.ravel()]]


def required_groups(cv_folds: int, val_ratio: float) -> int:
    """The fewest groups that give every outer fold a test part and every inner split a validation part."""
    return cv_folds * max(2, round(1 / val_ratio))


def build_fold_table(images: pd.DataFrame, cv_folds: int, val_ratio: float, seed: int) -> pd.DataFrame:
    """Assigns every image to an outer test fold and an inner train / val role per fold.

    Args:
        images: Usable images with ``path``, ``source``, ``label`` and ``group`` columns.
        cv_folds: Number of outer folds.
        val_ratio: Share of the training folds' groups held out for validation.
        seed: Seed of every random choice.

    Returns:
        ``path, source, label, group, fold, subsample_rank`` and ``split_<k>`` columns.

    Raises:
        ValueError: Too few groups for the requested folds.
    """
    table = images[["path", "source", "label", "group"]].reset_index(drop=True).copy()
    n_groups = table["group"].nunique()
    inner_splits = max(2, round(1 / val_ratio))
    if abs(1 / inner_splits - val_ratio) > 0.01:
        # Validation is one part of a grouped k-way split, so only shares 1/k can be met.
        logger.warning("val_ratio %.3g is realised as 1/%d = %.3g of each fold's training groups (validation is one "
                       "part of a %d-way grouped split); choose 1/k to get it exactly", val_ratio, inner_splits,
                       1 / inner_splits, inner_splits)
    if n_groups < required_groups(cv_folds, val_ratio):
        raise ValueError(
            f"{n_groups} groups are too few for cv_folds={cv_folds} with val_ratio={val_ratio}; "
            f"need at least {required_groups(cv_folds, val_ratio)}"
        )
    strata = pd.Categorical(table["source"]).codes
    group_of_row = table["group"].to_numpy()
    table["fold"] = stratified_group_folds(strata, group_of_row, cv_folds, seed)
    for fold in range(cv_folds):
        roles = np.where(table["fold"] == fold, "test", "train").astype(object)
        train_rows = np.flatnonzero(roles == "train")
        # The validation part is the first of the inner folds.
        inner = stratified_group_folds(strata[train_rows], group_of_row[train_rows], inner_splits, seed + 1 + fold)
        roles[train_rows[inner == 0]] = "val"
        table[split_column(fold)] = roles
    groups = source_strata(table).to_frame()
    table["subsample_rank"] = table["group"].map(_subsample_ranks(groups, seed))
    check_no_leakage(table)
    logger.info(
        "Fold table: %d images in %d groups, %d folds (test %s)",
        len(table), n_groups, cv_folds, table["fold"].value_counts().sort_index().tolist(),
    )
    return table


def fold_count(table: pd.DataFrame) -> int:
    return sum(1 for c in table.columns if c.startswith("split_"))


def check_no_leakage(table: pd.DataFrame) -> None:
    """Raises ``LeakageError`` if any group sits on two sides (train / val / test) of any fold."""
    for fold in range(fold_count(table)):
        sides = table.groupby("group")[split_column(fold)].nunique()
        leaking = sides[sides > 1]
        if len(leaking):
            raise LeakageError(
                f"fold {fold}: {len(leaking)} groups cross train / val / test, e.g. {list(leaking.index[:5])}"
            )


@dataclass(frozen=True)
class FoldRows:
    """Row positions (into the fold table) of one fold's train, val and test images."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def select_fold_rows(
    table: pd.DataFrame,
    fold: int,
    subsample: float,
    train_sources: Sequence[str] | None = None,
    eval_sources: Sequence[str] | None = None,
    subsample_test: bool = True,
) -> FoldRows:
    """The images one experiment uses in one fold.

    Args:
        table: The fold table.
        fold: The outer (test) fold.
        subsample: Share of whole groups kept in each of the fold's train, val and (with ``subsample_test``)
            test parts (see ``subsample_groups``).
        train_sources: Sources allowed in train and val (None = all).
        eval_sources: Sources evaluated on the test fold (None = all).
        subsample_test: Whether ``subsample`` thins the test part too; False tests on the whole test fold.

    Returns:
        The row positions per role.

    Raises:
        ValueError: A role is left without images (nothing to train on, stop early on or test).
    """
    role = table[split_column(fold)].to_numpy()
    kept = table["group"].isin(subsample_groups(table, fold, subsample)).to_numpy()
    source = table["source"].to_numpy()
    in_train = np.isin(source, list(train_sources)) if train_sources is not None else np.ones(len(table), bool)
    in_eval = np.isin(source, list(eval_sources)) if eval_sources is not None else np.ones(len(table), bool)
    rows = FoldRows(
        train=np.flatnonzero(kept & in_train & (role == "train")),
        val=np.flatnonzero(kept & in_train & (role == "val")),
        test=np.flatnonzero((kept | (not subsample_test)) & in_eval & (role == "test")),
    )
    empty = [name for name in ("train", "val", "test") if len(getattr(rows, name)) == 0]
    if empty:
        raise ValueError(
            f"fold {fold} has no {' / '.join(empty)} images at subsample {subsample:g} with train_sources "
            f"{list(train_sources) if train_sources is not None else 'all'} and eval_sources "
            f"{list(eval_sources) if eval_sources is not None else 'all'}; add images or sources, or check the "
            f"source names against data.sources"
        )
    return rows


def subsample_groups(table: pd.DataFrame, fold: int, subsample: float) -> pd.Index:
    """The groups a subsample keeps in one fold: a stratified share of each of its train, val and test parts.

    Within a part, the ``j``-th group (by ``subsample_rank``) of a stratum of ``n`` groups comes at
    ``(j - 0.5) / n`` in one queue (Sainte-Laguë's order, so strata take turns in proportion to their
    size) and the part keeps the queue's first ``round(subsample × groups)``; a larger subsample keeps a
    longer prefix of the same queue, so subsets stay nested. The prefix is lengthened, if needed, until
    it holds every source the part has, hence every label (real / fake, or an attribution model's
    classes): a one-class validation part has no AUC to stop early on. Only sources decide, never
    labels, so every model sees the same groups. A single rank cut over the whole table, used before,
    left a demo fold at 20% with no validation image.

    Args:
        table: The fold table.
        fold: The outer (test) fold.
        subsample: Share of groups kept, in (0, 1].

    Returns:
        The kept groups.
    """
    role = split_column(fold)
    if subsample >= 1.0:
        return pd.Index(table["group"].unique())
    groups = table.drop_duplicates("group").set_index("group")[[role, "subsample_rank"]]
    groups["stratum"] = source_strata(table)
    cells = groups.groupby([role, "stratum"])["subsample_rank"]
    groups["queue"] = (cells.rank(method="first") - 0.5) / cells.transform("size")
    # Strata of one size tie on queue and rank: the stratum, then the group's name, settle the order.
    groups = groups.sort_values([role, "queue", "subsample_rank", "stratum", "group"], kind="stable")
    groups["position"] = groups.groupby(role).cumcount()
    # The shortest prefix of each part's queue that holds every source of the part.
    sources = table[["group", "source"]].drop_duplicates().join(groups[[role, "position"]], on="group")
    every_source = sources.groupby([role, "source"])["position"].min().groupby(level=0).max() + 1
    share = np.round(subsample * groups.groupby(role).size()).clip(lower=1)
    length = np.maximum(share, every_source.reindex(share.index))
    return groups.index[(groups["position"] < groups[role].map(length)).to_numpy()]
