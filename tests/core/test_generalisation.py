import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from deepfake_kedro.config import ConfigError
from deepfake_kedro.generalisation import (
    cell_test_sizes,
    design,
    fold_aucs,
    holdouts_beside,
    matrix_table,
    transfer_heatmap,
    transfer_matrix,
    transfer_tests,
)

SOURCES = {"wiki": "real", "text2img": "fake", "inpainting": "fake", "insight": "fake"}
FAMILIES = {"text2img": "diffusion", "inpainting": "diffusion", "insight": "face_swap"}
FAKES = ["text2img", "inpainting", "insight"]
EXPERIMENTS = {f"gen_{s}": {"train_sources": ["wiki", s]} for s in reversed(FAKES)}


# Test images per fold: wiki 40 + 5k, then text2img, inpainting, insight.
FAKE_COUNTS = {"text2img": 10, "inpainting": 20, "insight": 60}


def summaries(cube: np.ndarray) -> dict:
    """Metrics summaries whose per-fold pairwise AUCs are ``cube[trained, tested, fold]`` (folds shuffled)."""
    out = {}
    for i, source in enumerate(FAKES):
        folds = [{"fold": k, "n_train": 100, "n_test": 40 + 5 * k + sum(FAKE_COUNTS.values()), "n:wiki": 40 + 5 * k,
                  **{f"n:{t}": n for t, n in FAKE_COUNTS.items()},
                  **{f"pairwise_auc:{t}": cube[i, j, k] for j, t in enumerate(FAKES)}}
                 for k in range(cube.shape[2])]
        out[f"gen_{source}"] = {"config": EXPERIMENTS[f"gen_{source}"], "folds": folds[::-1]}
    return out


def random_cube(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 1.0, size=(3, 3, 5))


def test_design_maps_each_fake_source_to_its_experiment_in_source_order():
    assert design(EXPERIMENTS, SOURCES) == {"text2img": "gen_text2img", "inpainting": "gen_inpainting",
                                            "insight": "gen_insight"}


@pytest.mark.parametrize(("experiments", "message"), [
    ({**EXPERIMENTS, "gen_insight": {"train_sources": ["wiki", "insight", "text2img"]}},
     r"generalisation.experiments.gen_insight.train_sources: .* exactly one fake source"),
    ({**EXPERIMENTS, "gen_insight": {"train_sources": "all"}}, r"gen_insight.train_sources: 'all'"),
    ({**EXPERIMENTS, "gen_insight": {"train_sources": ["wiki", "text2img"]}},
     r"gen_(insight|text2img).train_sources: 'text2img' is also the training source of"),
    ({**EXPERIMENTS, "gen_insight": {"train_sources": ["wiki", "insight"], "eval_sources": ["wiki", "insight"]}},
     r"gen_insight.eval_sources: \['wiki', 'insight'\] leaves out \['text2img', 'inpainting'\]; each experiment is "
     r"tested on every source"),
    ({k: v for k, v in EXPERIMENTS.items() if k != "gen_inpainting"},
     r"no experiment trains on fake source 'inpainting'; add gen_inpainting with train_sources \['wiki', "
     r"'inpainting'\]"),
])
def test_design_errors_name_the_experiment_or_the_missing_source(experiments, message):
    with pytest.raises(ConfigError, match=message):
        design(experiments, SOURCES)


def test_matrix_cells_are_fold_means_with_t_intervals_and_relations():
    cube = random_cube()
    got = fold_aucs(summaries(cube), design(EXPERIMENTS, SOURCES))
    np.testing.assert_allclose(got, cube)  # folds back in order, rows trained-on, columns tested-on
    matrix = transfer_matrix(got, FAKES, FAMILIES).set_index(["trained_on", "tested_on"])
    cell = matrix.loc[("text2img", "insight")]
    values = cube[0, 2]
    low, high = stats.t.interval(0.95, df=4, loc=values.mean(), scale=values.std(ddof=1) / np.sqrt(5))
    assert cell["auc_mean"] == pytest.approx(values.mean())
    # The t-interval, truncated to the [0, 1] an AUC lives in.
    assert (cell["auc_ci_low"], cell["auc_ci_high"]) == pytest.approx((max(low, 0.0), min(high, 1.0)))
    assert cell["auc_fold_3"] == values[3] and cell["relation"] == "cross_family"
    assert matrix.loc[("inpainting", "inpainting"), "relation"] == "diagonal"
    assert matrix.loc[("inpainting", "text2img"), "relation"] == "same_family"


def test_a_cell_s_test_size_is_the_real_images_and_its_tested_source_s_not_the_whole_fold():
    sizes = cell_test_sizes(summaries(random_cube()), design(EXPERIMENTS, SOURCES), SOURCES)
    wiki = 40 + 5 * np.arange(5)
    for i in range(3):
        for j, t in enumerate(FAKES):
            np.testing.assert_array_equal(sizes[i, j], wiki + FAKE_COUNTS[t])
    # Two real sources both count; a fold without the tested source has no size, as it has no AUC.
    two_reals = {"wiki": "real", "ffhq": "real", **{k: v for k, v in SOURCES.items() if k != "wiki"}}
    records = summaries(random_cube())
    for record in records["gen_insight"]["folds"]:
        record["n:ffhq"] = 7
    del records["gen_insight"]["folds"][0]["n:text2img"]  # folds are stored shuffled: this is fold 4
    sizes = cell_test_sizes(records, design(EXPERIMENTS, two_reals), two_reals)
    assert sizes[2, 2].tolist() == (wiki + 7 + 60).tolist() and np.isnan(sizes[2, 0, 4])


def test_tests_pair_group_means_per_fold_with_nadeau_bengio_and_holm():
    cube = random_cube(1)
    n_test = cell_test_sizes(summaries(cube), design(EXPERIMENTS, SOURCES), SOURCES)
    tests = transfer_tests(cube, FAKES, FAMILIES, n_train=[100] * 5, n_test=n_test).set_index("treatment")
    # Every comparison covers each tested source equally often: per fold, wiki + mean(10, 20, 60) images,
    # against the whole fold's wiki + 90.
    compared = np.mean(40 + 5 * np.arange(5) + 30)
    diagonal = np.mean([cube[i, i] for i in range(3)], axis=0)
    off = np.mean([cube[i, j] for i in range(3) for j in range(3) if i != j], axis=0)
    same = (cube[0, 1] + cube[1, 0]) / 2
    cross = np.mean([cube[0, 2], cube[1, 2], cube[2, 0], cube[2, 1]], axis=0)
    p = {}
    for name, treat, base in (("diagonal", diagonal, off), ("same_family", same, cross)):
        d = treat - base
        t = d.mean() / np.sqrt((1 / 5 + compared / 100) * d.var(ddof=1))
        p[name] = 2 * stats.t.sf(abs(t), df=4)
        assert tests.loc[name, "diff_mean"] == pytest.approx(d.mean())
        assert tests.loc[name, "p_nadeau_bengio"] == pytest.approx(p[name])
        assert tests.loc[name, "treatment_mean"] == pytest.approx(treat.mean())
    low, high = sorted(p.values())
    holm = {name: min(1.0, 2 * low) if value == low else min(1.0, max(2 * low, high)) for name, value in p.items()}
    for name in p:
        assert tests.loc[name, "p_holm"] == pytest.approx(holm[name])
    assert tests.loc["diagonal", "baseline"] == "off_diagonal"


def test_a_group_s_interval_is_taken_on_the_folds_compared_as_its_mean_is():
    cube = random_cube(1)
    cube[:, :2, 4] = np.nan  # text2img and inpainting (one family) absent from test fold 4
    n_test = np.where(np.isnan(cube), np.nan, 25.0)
    tests = transfer_tests(cube, FAKES, FAMILIES, [100] * 5, n_test).set_index("treatment")
    same = ((cube[0, 1] + cube[1, 0]) / 2)[:4]
    row = tests.loc["same_family"]
    assert row["n_folds"] == 4 and row["treatment_mean"] == pytest.approx(same.mean())
    half = stats.t.ppf(0.975, df=3) * same.std(ddof=1) / 2
    assert (row["treatment_ci_low"], row["treatment_ci_high"]) == pytest.approx(
        (max(0.0, same.mean() - half), min(1.0, same.mean() + half)))
    # The cross-family mean of fold 4 exists (insight's cells) but is not compared: its interval leaves it out.
    assert (row["baseline_ci_low"] + row["baseline_ci_high"]) / 2 == pytest.approx(row["baseline_mean"])


def test_no_same_family_pair_leaves_that_comparison_out():
    families = {"text2img": "diffusion", "inpainting": "gan", "insight": "face_swap"}
    tests = transfer_tests(random_cube(), FAKES, families, [100] * 5, np.full((3, 3, 5), 25.0))
    assert list(tests["treatment"]) == ["diagonal"]
    assert tests["p_holm"].iloc[0] == pytest.approx(tests["p_nadeau_bengio"].iloc[0])


def holdout_comparison() -> pd.DataFrame:
    rows = [{"experiment": "p2a_t1_original"},
            {"experiment": "p2a_t3_holdout_insight", "heldout_source": "insight", "heldout_auc": 0.71,
             "reference_in_source_auc": 0.93, "delta_vs_reference": 0.22, "delta_vs_reference_ci_low": 0.15,
             "delta_vs_reference_ci_high": 0.29, "delta_vs_reference_flag": True},
            {"experiment": "p2a_t3_holdout_two", "heldout_source": "text2img; inpainting", "heldout_auc": "0.8; 0.7",
             "reference_in_source_auc": "0.9; 0.9", "delta_vs_reference": "0.1; 0.2",
             "delta_vs_reference_ci_low": "0; 0", "delta_vs_reference_ci_high": "0.2; 0.3",
             "delta_vs_reference_flag": "True; True"}]
    return pd.DataFrame(rows)


def test_holdouts_beside_keeps_single_source_holdouts_and_tolerates_a_missing_phase():
    held = holdouts_beside(holdout_comparison(), FAKES)
    assert list(held["experiment"]) == ["p2a_t3_holdout_insight"]
    assert holdouts_beside(None, FAKES).empty
    assert holdouts_beside(pd.DataFrame({"experiment": ["a"]}), FAKES).empty


def test_matrix_table_and_heatmap_show_each_cell_with_its_interval():
    cube = np.stack([np.full((3, 5), 0.6)] * 3)
    cube[0, 0] = [0.91, 0.93, 0.95, 0.92, 0.94]
    matrix = transfer_matrix(cube, FAKES, FAMILIES)
    table = matrix_table(matrix, holdouts_beside(holdout_comparison(), FAKES))
    assert list(table.columns) == ["trained on", "text2img (diffusion)", "inpainting (diffusion)",
                                   "insight (face_swap)"]
    assert table.iloc[0, 1] == "0.93 [0.91, 0.95]" and table.iloc[1, 2] == "0.60 [0.60, 0.60]"
    assert table.iloc[3].tolist() == ["all fakes but this one (hold-out)", "", "", "0.71 (Δ +0.22 [+0.15, +0.29])"]
    figure = transfer_heatmap(matrix, "t")
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert texts[0] == "0.93\n[0.91, 0.95]" and len(texts) == 9
    plt.close(figure)


def test_the_heatmap_groups_sources_by_family_and_shows_below_chance_cells_apart_from_chance():
    fakes = ["text2img", "insight", "inpainting"]  # the diffusion family is not contiguous in data.sources
    cube = np.full((3, 3, 5), 0.7)
    cube[1, 0] = 0.3  # trained on insight, tested on text2img: below chance
    cube[2, 1] = 0.5
    figure = transfer_heatmap(transfer_matrix(cube, fakes, FAMILIES), "t")
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "text2img\n(diffusion)", "inpainting\n(diffusion)", "insight\n(face_swap)"]
    assert [t.get_text() for t in ax.get_yticklabels()] == [t.get_text() for t in ax.get_xticklabels()]
    # One family boundary: one horizontal and one vertical separator, between inpainting and insight.
    horizontal = [line.get_ydata()[0] for line in ax.lines if line.get_ydata()[0] == line.get_ydata()[1]]
    vertical = [line.get_xdata()[0] for line in ax.lines if line.get_xdata()[0] == line.get_xdata()[1]]
    assert horizontal == vertical == [1.5]
    # Rows and columns follow the new order: row insight (2), column text2img (0) holds 0.30.
    image = ax.images[0]
    values = image.get_array()
    assert values[2, 0] == pytest.approx(0.3) and values[1, 2] == pytest.approx(0.5)
    assert not np.allclose(image.to_rgba(0.3), image.to_rgba(0.5))
    assert not np.allclose(image.to_rgba(0.0), image.to_rgba(0.3))
    texts = {t.get_text().split("\n")[0]: t for t in ax.texts}
    assert texts["0.30"].get_position() == (0, 2)
    plt.close(figure)
