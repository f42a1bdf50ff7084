"""Power of the demo as a simulation study: the whole demo study under N seeds, and how often it
recovers each planted effect (docs/demo.md records a run).

Each seed generates its own synthetic data (generator seed) and runs the study with its own study seed
(folds, initialisation), in its own folders (data/01_raw/demo_seed<N>, data/demo_seed<N>), through a copy
of conf/ whose demo environment points there. A seed whose demo_check.csv already exists is read, not rerun, and
the line says when that file was written; ``--refresh`` runs such a seed's study again on the current code, which
skips every fold still current and so costs its evaluation and analyses, not its training (delete its folder to
train it again). Seed 0 at the demo's size is `make demo`'s study, read from (or refreshed in) data/demo when that
has run. About one demo run per seed.

After the recovery table it prints the power of each Holm-tested planted effect: its standardized fold gain
(mean / SD, `effect_size_dz`) in each seed, the probability that the Nadeau-Bengio test passes Holm with a gain
of that size (exact under Nadeau & Bengio's model of CV, `stats.nadeau_bengio_power`), and the identities that
would give it 95% power if the gain / SD grows as the square root of the identities.

    python benchmarks/demo_power.py --seeds 0 1 2
    python benchmarks/demo_power.py --seeds 0 --identities 640   # the same study with more identities (power)

``--identities`` changes only the number of generated identities (default: the demo's), so a run shows how the
recovery of each planted effect grows with the sample size; its folders carry the size (demo_seed0_n640).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from deepfake_kedro.stats import nadeau_bengio_power, nadeau_bengio_required_gain

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run_name(seed: int, identities: int | None) -> str:
    """The folder name of one power run: ``demo_seed<seed>``, with ``_n<identities>`` when the size is changed."""
    return f"demo_seed{seed}" + (f"_n{identities}" if identities else "")


def seeded_conf(conf: Path, seed: int, target: Path, identities: int | None = None) -> Path:
    """A copy of ``conf`` whose demo environment generates and studies seed ``seed`` in its own folders."""
    shutil.copytree(conf, target, ignore=shutil.ignore_patterns("local"))
    demo = target / "demo"
    name = run_name(seed, identities)
    (demo / "globals.yml").write_text(yaml.safe_dump({"data_root": f"data/01_raw/{name}", "data_dir": f"data/{name}"}))
    catalog = yaml.safe_load((demo / "catalog.yml").read_text())
    catalog["raw_images"]["generator_args"]["seed"] = seed
    if identities:
        catalog["raw_images"]["generator_args"]["n_identities"] = identities
    (demo / "catalog.yml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    parameters = yaml.safe_load((demo / "parameters.yml").read_text())
    parameters.setdefault("defaults", {})["seed"] = 42 + seed
    (demo / "parameters.yml").write_text(yaml.safe_dump(parameters, sort_keys=False))
    return target


def reporting_dir(seed: int, identities: int | None) -> Path:
    """Where one power run's results lie; seed 0 at the demo's size is `make demo`'s study (data/demo)."""
    own = PROJECT_ROOT / f"data/{run_name(seed, identities)}/08_reporting"
    demo = PROJECT_ROOT / "data/demo/08_reporting"
    if seed == 0 and not identities and not (own / "demo_check.csv").is_file() and (demo / "demo_check.csv").is_file():
        return demo
    return own


def run_seed(seed: int, kedro: str, identities: int | None = None,
             refresh: bool = False) -> tuple[pd.DataFrame, float]:
    """The demo study for one seed (or its finished result); its planted-effects table and minutes taken.

    With ``refresh``, a finished seed's study runs again (finished folds are skipped), so its table follows the
    current code rather than the one that wrote it.
    """
    folder = reporting_dir(seed, identities)
    check = folder / "demo_check.csv"
    if check.is_file() and not refresh:
        written = time.strftime("%Y-%m-%d %H:%M", time.localtime(check.stat().st_mtime))
        print(f"seed {seed}: read {check.relative_to(PROJECT_ROOT)}, written {written} (by the code of that time; "
              f"--refresh reruns its analyses on this code)", flush=True)
        return pd.read_csv(check), float("nan")
    started = time.perf_counter()
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as scratch:
        # make demo's own study (data/demo) is refreshed through the demo environment as it stands.
        own = folder != PROJECT_ROOT / "data/demo/08_reporting"
        conf = ["--conf-source", str(seeded_conf(PROJECT_ROOT / "conf", seed, Path(scratch) / "conf", identities))]
        subprocess.run([kedro, "run", "--env", "demo", *(conf if own else [])], cwd=PROJECT_ROOT, env=env,
                       check=True)
    return pd.read_csv(check), (time.perf_counter() - started) / 60


def holm_tested_effects(planted: list[dict], tests: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(effect, baseline, treatment) of every planted effect whose check needs a gain significant after Holm."""
    effects = []
    for entry in planted:
        if entry["check"] == "significant_gain":
            effects.append((entry["effect"], entry["baseline"], entry["treatment"]))
        elif entry["check"] == "adopted":
            # choose_preprocessing adopts a step whose AUC gain over its baseline passes Holm.
            row = tests[(tests["treatment"] == entry["treatment"]) & (tests["metric"] == "auc")].iloc[0]
            effects.append((entry["effect"], row["baseline"], entry["treatment"]))
    return effects


def power_table(runs: dict[str, Path], planted: list[dict], identities: int, power: float = 0.95,
                alpha: float = 0.05) -> tuple[pd.DataFrame, float]:
    """Each Holm-tested planted effect's standardized gain per run, its power, and the identities for ``power``.

    Args:
        runs: Run label -> its 08_reporting folder (with phase2/paired_tests.csv).
        planted: ``demo.planted_effects``.
        identities: The runs' number of identities.
        power: The power the last column asks for.
        alpha: The family-wise level (Holm).

    Returns:
        The table, and the chance that every effect passes in every run (at most: the product of the powers at
        the most lenient Holm step these effects can reach).
    """
    tests = {label: pd.read_csv(folder / "phase2/paired_tests.csv") for label, folder in runs.items()}
    first = next(iter(tests.values()))
    auc = first[first["metric"] == "auc"]
    family = int(auc["p_nadeau_bengio"].notna().sum())
    effects = holm_tested_effects(planted, first)
    # Holm compares the smallest p with alpha/m; with the other planted effects ahead of it, with alpha/(m - t + 1).
    strict, lenient = alpha / family, alpha / (family - len(effects) + 1)
    rows = []
    for effect, baseline, treatment in effects:
        row: dict = {"effect": effect}
        for label, table in tests.items():
            pair = (table["baseline"] == baseline) & (table["treatment"] == treatment)
            match = table[pair & (table["metric"] == "auc")]
            row[label] = float(match["effect_size_dz"].iloc[0])
        gain = max(float(pd.Series([row[label] for label in tests]).mean()), 1e-6)
        row["mean gain/SD"] = gain
        row[f"power (p < a/{family})"] = nadeau_bengio_power(gain, alpha=strict)
        row[f"power (p < a/{family - len(effects) + 1})"] = nadeau_bengio_power(gain, alpha=lenient)
        needed = identities * (nadeau_bengio_required_gain(power, alpha=strict) / gain) ** 2
        row[f"identities for {power:.0%}"] = round(needed)
        rows.append(row)
    table = pd.DataFrame(rows).set_index("effect")
    every = float((table[f"power (p < a/{family - len(effects) + 1})"] ** len(runs)).prod())
    return table, every


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--identities", type=int, default=None, help="identities to generate (default: the demo's)")
    parser.add_argument("--kedro", default=str(Path(sys.executable).with_name("kedro")))
    parser.add_argument("--refresh", action="store_true",
                        help="run finished seeds' studies again on this code (finished folds are skipped)")
    args = parser.parse_args()
    recovered, minutes = {}, {}
    for seed in args.seeds:
        table, minutes[seed] = run_seed(seed, args.kedro, args.identities, args.refresh)
        recovered[f"seed {seed}"] = table.set_index("effect")["recovered"].astype(bool)
        took = "read, not run" if minutes[seed] != minutes[seed] else f"{minutes[seed]:.1f} min"
        print(f"seed {seed}: {int(recovered[f'seed {seed}'].sum())} of {len(table)} effects recovered ({took})",
              flush=True)
    matrix = pd.DataFrame(recovered)
    shown = matrix.replace({True: "yes", False: "NO"})
    shown["recovery rate"] = matrix.mean(axis=1).map(lambda rate: f"{rate:.0%}")
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(shown.to_string())
    print(f"\nEvery effect recovered in every seed: {'yes' if matrix.to_numpy().all() else 'no'}")
    parameters = yaml.safe_load((PROJECT_ROOT / "conf/demo/parameters.yml").read_text())
    catalog = yaml.safe_load((PROJECT_ROOT / "conf/demo/catalog.yml").read_text())
    identities = args.identities or catalog["raw_images"]["generator_args"]["n_identities"]
    runs = {f"seed {seed}": reporting_dir(seed, args.identities) for seed in args.seeds}
    table, every = power_table(runs, parameters["demo"]["planted_effects"], identities)
    print(f"\nPower of the Holm-tested effects ({identities} identities; gain/SD = mean fold gain / its SD, the "
          f"paired tests' effect_size_dz; power at the mean gain/SD):")
    with pd.option_context("display.max_colwidth", 60, "display.width", 200, "display.float_format", "{:.2f}".format):
        print(table.to_string())
    print(f"Chance that every one passes in all {len(runs)} seeds: at most {every:.2g}")


if __name__ == "__main__":
    main()
