"""The fold table: leak-free grouped, stratified cross-validation computed once for the study.

Every image gets an outer test fold (``StratifiedGroupKFold`` over groups,
stratified by source) and, for each outer fold, a role: ``train``, ``val``
(a group-aware stratified inner split of the training folds, for early
stopping) or ``test``. A per-group ``subsample_rank`` makes every subsample
a nested set of whole groups on the same folds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

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
    if n_groups < required_groups(cv_folds, val_ratio):
        raise ValueError(
            f"{n_groups} groups are too few for cv_folds={cv_folds} with val_ratio={val_ratio}; "
            f"need at least {required_groups(cv_folds, val_ratio)}"
        )
    strata = pd.Categorical(table["source"]).codes
    outer = StratifiedGroupKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    table["fold"] = -1
    for fold, (_, test_rows) in enumerate(outer.split(table, strata, table["group"])):
        table.loc[test_rows, "fold"] = fold
    for fold in range(cv_folds):
        roles = np.where(table["fold"] == fold, "test", "train").astype(object)
        train_rows = np.flatnonzero(roles == "train")
        inner = StratifiedGroupKFold(n_splits=inner_splits, shuffle=True, random_state=seed + 1 + fold)
        _, val_local = next(inner.split(train_rows, strata[train_rows], table["group"].to_numpy()[train_rows]))
        roles[train_rows[val_local]] = "val"
        table[split_column(fold)] = roles
    groups = table.groupby("group")["source"].agg(lambda s: "+".join(sorted(set(s)))).rename("stratum").to_frame()
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
) -> FoldRows:
    """The images one experiment uses in one fold.

    Args:
        table: The fold table.
        fold: The outer (test) fold.
        subsample: Keep groups whose ``subsample_rank`` is at most this (nested, whole groups).
        train_sources: Sources allowed in train and val (None = all).
        eval_sources: Sources evaluated on the test fold (None = all).

    Returns:
        The row positions per role.
    """
    kept = table["subsample_rank"].to_numpy() <= subsample + 1e-12
    role = table[split_column(fold)].to_numpy()
    source = table["source"].to_numpy()
    in_train = np.isin(source, list(train_sources)) if train_sources is not None else np.ones(len(table), bool)
    in_eval = np.isin(source, list(eval_sources)) if eval_sources is not None else np.ones(len(table), bool)
    return FoldRows(
        train=np.flatnonzero(kept & in_train & (role == "train")),
        val=np.flatnonzero(kept & in_train & (role == "val")),
        test=np.flatnonzero(kept & in_eval & (role == "test")),
    )
