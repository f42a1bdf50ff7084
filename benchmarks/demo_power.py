"""Power of the demo as a simulation study: the whole demo study under N seeds, and how often it
recovers each planted effect (docs/demo.md records a run).

Each seed generates its own synthetic data (generator seed) and runs the study with its own study seed
(folds, initialisation), in its own folders (data/01_raw/demo_seed<N>, data/demo_seed<N>), through a copy
of conf/ whose demo environment points there. A seed whose demo_check.csv already exists is read, not rerun
(delete its folder to rerun it). About one demo run per seed.

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


def run_seed(seed: int, kedro: str, identities: int | None = None) -> tuple[pd.DataFrame, float]:
    """The demo study for one seed (or its finished result); its planted-effects table and minutes taken."""
    check = PROJECT_ROOT / f"data/{run_name(seed, identities)}/08_reporting/demo_check.csv"
    if check.is_file():
        return pd.read_csv(check), float("nan")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        conf = seeded_conf(PROJECT_ROOT / "conf", seed, Path(scratch) / "conf", identities)
        env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1"}
        subprocess.run([kedro, "run", "--env", "demo", "--conf-source", str(conf)], cwd=PROJECT_ROOT, env=env,
                       check=True)
    return pd.read_csv(check), (time.perf_counter() - started) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--identities", type=int, default=None, help="identities to generate (default: the demo's)")
    parser.add_argument("--kedro", default=str(Path(sys.executable).with_name("kedro")))
    args = parser.parse_args()
    recovered, minutes = {}, {}
    for seed in args.seeds:
        table, minutes[seed] = run_seed(seed, args.kedro, args.identities)
        recovered[f"seed {seed}"] = table.set_index("effect")["recovered"].astype(bool)
        print(f"seed {seed}: {int(recovered[f'seed {seed}'].sum())} of {len(table)} effects recovered "
              f"({minutes[seed]:.1f} min)", flush=True)
    matrix = pd.DataFrame(recovered)
    shown = matrix.replace({True: "yes", False: "NO"})
    shown["recovery rate"] = matrix.mean(axis=1).map(lambda rate: f"{rate:.0%}")
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(shown.to_string())
    print(f"\nEvery effect recovered in every seed: {'yes' if matrix.to_numpy().all() else 'no'}")


if __name__ == "__main__":
    main()
