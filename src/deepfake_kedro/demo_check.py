"""The demo as a simulation study: did the study find the effects planted in the synthetic data?

The demo generator (``demo_data``) plants one effect per study question with a known direction
(docs/demo.md lists them). ``check_planted_effects`` reads what the study itself concluded (phase 1's
comparison, phase 2's paired tests and preprocessing choice, phase 4's scaling table) and says, effect by
effect, whether the study recovered it. Nothing is recomputed: every number is the study's own.

Each entry of the parameter block ``demo.planted_effects`` names one ``check``:

- ``auc_at_least``: ``experiment`` (``<phase>.<experiment>``) reaches a mean AUC of at least ``value``.
- ``holdout_flagged`` / ``holdout_small``: the source hold-out ``experiment`` of phase 2 has Δ above the flag
  and a Holm-adjusted p below ``alpha`` / Δ at most the flag.
- ``significant_gain``: phase ``phase``'s paired test ``baseline`` -> ``treatment`` gains AUC with Holm p < alpha.
- ``adopted`` / ``not_adopted``: phase 2's preprocessing step with ``treatment`` was / was not adopted; a step
  whose condition was not met is judged by its own paired test (gain with Holm p < alpha: it would be adopted).
- ``scaling_monotone``: in phase 4 every model's AUC at the largest fraction is at least its AUC at the
  smallest, and each fraction's mean AUC is at least the previous fraction's CI low.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepfake_kedro.comparison import HELDOUT_FLAG_ABOVE

CHECK_COLUMNS = ["effect", "expected", "found", "estimate", "ci_low", "ci_high", "p_holm", "recovered"]
CHECKS = ("auc_at_least", "holdout_flagged", "holdout_small", "significant_gain", "adopted", "not_adopted",
          "scaling_monotone")


class PlantedEffectError(ValueError):
    """A ``demo.planted_effects`` entry that cannot be checked against the study's results."""


def _row(effect: str, expected: str, found: str, estimate: float = np.nan, ci: Sequence[float] = (np.nan, np.nan),
         p_holm: float = np.nan, recovered: bool = False) -> dict[str, Any]:
    return {"effect": effect, "expected": expected, "found": found, "estimate": float(estimate),
            "ci_low": float(ci[0]), "ci_high": float(ci[1]), "p_holm": float(p_holm), "recovered": bool(recovered)}


def _require(entry: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
    missing = [key for key in keys if key not in entry]
    if missing:
        raise PlantedEffectError(f"{where}: key(s) {missing} missing for check {entry.get('check')!r}")


def _auc_at_least(entry: Mapping[str, Any], comparisons: Mapping[str, pd.DataFrame], where: str) -> dict[str, Any]:
    _require(entry, ["experiment", "value"], where)
    phase, _, name = str(entry["experiment"]).partition(".")
    table = comparisons.get(phase)
    rows = table[table["experiment"] == name] if table is not None else pd.DataFrame()
    if rows.empty:
        raise PlantedEffectError(f"{where}: experiment {entry['experiment']!r} is not in {phase}'s comparison table")
    row = rows.iloc[0]
    def per_source(prefix: str) -> str:
        return ", ".join(f"{column.split(':', 1)[1].removesuffix('_mean')} {row[column]:.2f}" for column in row.index
                         if column.startswith(prefix) and column.endswith("_mean") and pd.notna(row[column]))

    auc = float(row["auc_mean"])
    found = f"AUC {auc:.3f}; per-source AUC: {per_source('pairwise_auc:')}"
    if any(column.startswith("detection_rate:") for column in row.index):
        found += f"; detection rate: {per_source('detection_rate:')}"
    return _row(entry["effect"], f"AUC >= {entry['value']}", found, auc, (row["auc_ci_low"], row["auc_ci_high"]),
                recovered=auc >= float(entry["value"]))


def _holdout(entry: Mapping[str, Any], tests: pd.DataFrame, flagged: bool, alpha: float, where: str) -> dict[str, Any]:
    _require(entry, ["experiment"], where)
    rows = tests[(tests["metric"] == "heldout_source_auc") & (tests["baseline"] == entry["experiment"])] \
        if not tests.empty else tests
    if rows.empty:
        raise PlantedEffectError(f"{where}: phase 2's paired tests have no hold-out row for {entry['experiment']!r}")
    row = rows.iloc[0]
    delta, ci = float(row["diff_mean"]), (float(row["diff_ci_low"]), float(row["diff_ci_high"]))
    found = f"Δ {delta:+.3f} on {row['heldout_source']} (in-source {row['in_source_auc']:.3f}, held out " \
            f"{row['heldout_auc']:.3f})"
    if flagged:
        # The study flags Δ > 0.05; found means the flag plus the same Holm test the planted gains must pass.
        expected = f"Δ > {HELDOUT_FLAG_ABOVE}, Holm p < {alpha}"
        recovered = delta > HELDOUT_FLAG_ABOVE and float(row["p_holm"]) < alpha
    else:
        expected, recovered = f"Δ <= {HELDOUT_FLAG_ABOVE}", delta <= HELDOUT_FLAG_ABOVE
    return _row(entry["effect"], expected, found, delta, ci, row["p_holm"], recovered)


def _gain(entry: Mapping[str, Any], tests: Mapping[str, pd.DataFrame], alpha: float, where: str) -> dict[str, Any]:
    _require(entry, ["phase", "baseline", "treatment"], where)
    table = tests.get(entry["phase"], pd.DataFrame())
    rows = table[(table["baseline"] == entry["baseline"]) & (table["treatment"] == entry["treatment"])
                 & (table["metric"] == "auc")] if not table.empty else table
    if rows.empty:
        raise PlantedEffectError(f"{where}: {entry['phase']}'s paired tests have no AUC row for "
                                 f"{entry['baseline']} -> {entry['treatment']}")
    row = rows.iloc[0]
    gain, p_holm = float(row["diff_mean"]), float(row["p_holm"])
    return _row(entry["effect"], f"ΔAUC > 0, Holm p < {alpha}", f"ΔAUC {gain:+.3f}, Holm p {p_holm:.3g}", gain,
                (row["diff_ci_low"], row["diff_ci_high"]), p_holm, gain > 0 and p_holm < alpha)


def _decision(entry: Mapping[str, Any], choice: Mapping[str, Any], adopted: bool, tests: pd.DataFrame, alpha: float,
              where: str) -> dict[str, Any]:
    _require(entry, ["treatment"], where)
    decisions = [d for d in choice.get("decisions", []) if d["treatment"] == entry["treatment"]]
    if not decisions:
        raise PlantedEffectError(f"{where}: phase 2's preprocessing choice has no step with treatment "
                                 f"{entry['treatment']!r}")
    decision = decisions[0]
    expected = "adopted by choose_preprocessing" if adopted else "not adopted"
    metric = choice.get("metric", "auc")
    if decision.get("applies", True):
        found = ("adopted" if decision["adopted"] else "not adopted") + f" on {metric} ({decision['reason']})"
        gain = decision.get(f"{metric}_diff", np.nan)
        ci = decision.get("diff_ci") or (np.nan, np.nan)
        return _row(entry["effect"], expected, found, gain if gain is not None else np.nan, ci,
                    decision.get("p_holm", np.nan), decision["adopted"] == adopted)
    # The step did not apply (its condition was not met): its own paired test says what the rule would decide.
    rows = tests[(tests["baseline"] == decision["baseline"]) & (tests["treatment"] == decision["treatment"])
                 & (tests["metric"] == metric)] if not tests.empty else tests
    if rows.empty:
        return _row(entry["effect"], expected, f"not tested: the step did not apply ({decision['reason']}) and "
                    f"phase 2 has no {metric} test of {decision['baseline']} -> {decision['treatment']}")
    row = rows.iloc[0]
    gain, p_holm = float(row["diff_mean"]), float(row["p_holm"])
    would = gain > 0 and p_holm < alpha
    found = (f"the step did not apply ({decision['reason']}); by its paired test it would "
             f"{'' if would else 'not '}be adopted (Δ{metric} {gain:+.3f}, Holm p {p_holm:.3g})")
    return _row(entry["effect"], expected, found, gain, (row["diff_ci_low"], row["diff_ci_high"]), p_holm,
                would == adopted)


def _scaling(entry: Mapping[str, Any], scaling: pd.DataFrame, where: str) -> dict[str, Any]:
    if scaling.empty:
        raise PlantedEffectError(f"{where}: phase 4's scaling table is empty")
    found, rises, gains = [], True, []
    for model, rows in scaling.sort_values("subsample").groupby("model", sort=False):
        auc, low = rows["auc_mean"].to_numpy(), rows["auc_ci_low"].to_numpy()
        # Monotone within CIs: each fraction's mean is at least the previous fraction's CI low.
        monotone = bool(auc[-1] >= auc[0] and np.all(auc[1:] >= low[:-1]))
        rises &= monotone
        gains.append(auc[-1] - auc[0])
        fractions = " -> ".join(f"{a:.3f}" for a in auc)
        found.append(f"{model}: {fractions}")
    return _row(entry["effect"], "AUC rises with the data fraction (monotone within CIs)", "; ".join(found),
                float(np.mean(gains)), recovered=rises)


def check_planted_effects(
    planted: Sequence[Mapping[str, Any]],
    comparisons: Mapping[str, pd.DataFrame],
    tests: Mapping[str, pd.DataFrame],
    preprocessing_choice: Mapping[str, Any],
    scaling: pd.DataFrame,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Compares each planted effect with what the study found.

    Args:
        planted: ``demo.planted_effects``: ``{effect, check, ...}`` entries (see the module docstring).
        comparisons: Phase name -> that phase's comparison table.
        tests: Phase name -> that phase's paired tests.
        preprocessing_choice: Phase 2's choice (``decisions``).
        scaling: Phase 4's scaling table.
        alpha: Significance level (Holm-adjusted p) for ``significant_gain`` and ``holdout_flagged``.

    Returns:
        One row per effect: ``effect``, ``expected``, ``found``, ``estimate``, ``ci_low``, ``ci_high``,
        ``p_holm``, ``recovered``; empty (with these columns) when nothing was planted.

    Raises:
        PlantedEffectError: An entry names an unknown check, misses a key, or names a result the study lacks.
    """
    rows = []
    for number, entry in enumerate(planted or []):
        where = f"demo.planted_effects[{number}]"
        _require(entry, ["effect", "check"], where)
        check = entry["check"]
        if check == "auc_at_least":
            rows.append(_auc_at_least(entry, comparisons, where))
        elif check in ("holdout_flagged", "holdout_small"):
            rows.append(_holdout(entry, tests.get("phase2", pd.DataFrame()), check == "holdout_flagged", alpha, where))
        elif check == "significant_gain":
            rows.append(_gain(entry, tests, alpha, where))
        elif check in ("adopted", "not_adopted"):
            rows.append(_decision(entry, preprocessing_choice, check == "adopted", tests.get("phase2", pd.DataFrame()),
                                  alpha, where))
        elif check == "scaling_monotone":
            rows.append(_scaling(entry, scaling, where))
        else:
            raise PlantedEffectError(f"{where}: unknown check {check!r}; use one of {list(CHECKS)}")
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)


def format_table(table: pd.DataFrame) -> str:
    """The check table as fixed-width text for a terminal: one line per effect, recovered yes / no."""
    if table.empty:
        return "No planted effects to check (demo.planted_effects is empty)."
    shown = pd.DataFrame({
        "effect": table["effect"], "expected": table["expected"], "found": table["found"],
        "estimate [CI]": [f"{e:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}]" if pd.notna(lo) else "") if pd.notna(e) else ""
                          for e, lo, hi in zip(table["estimate"], table["ci_low"], table["ci_high"])],
        "p Holm": [f"{p:.2g}" if pd.notna(p) else "" for p in table["p_holm"]],
        "recovered": np.where(table["recovered"].astype(bool), "yes", "NO"),
    })
    recovered = int(table["recovered"].astype(bool).sum())
    with pd.option_context("display.max_colwidth", 90, "display.width", 250):
        text = shown.to_string(index=False)
    return f"{text}\n\nPlanted effects recovered: {recovered} of {len(table)}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deepfake_kedro.demo_check <demo_check.csv>``: prints the table; exit 1 if an effect was missed."""
    args = list(sys.argv[1:] if argv is None else argv)
    path = Path(args[0] if args else "data/demo/08_reporting/demo_check.csv")
    if not path.is_file():
        print(f"{path} does not exist: run `kedro run --env demo` first", file=sys.stderr)
        return 2
    table = pd.read_csv(path)
    print(format_table(table))
    return 0 if table["recovered"].astype(bool).all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
