"""The Results tables of docs/benchmarks.md from the files benchmarks/gpu_check.sh leaves in its folder.

    python benchmarks/gpu_tables.py /work/.device/<files_at>      # prints Markdown to paste into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from deepfake_kedro.comparison import to_markdown
from deepfake_kedro.models import BACKBONES


def timm_name(backbone: str) -> str:
    """The timm model gpu_limit.py names for one of the project's backbones."""
    spec = BACKBONES.get(backbone)
    return spec.timm_name if spec is not None and spec.timm_name else backbone


def training_table(folder: Path) -> pd.DataFrame:
    """Per backbone: pipeline img/s (eager, compiled), the same step on device tensors, gpu_limit.py's figure."""
    eager = pd.read_csv(folder / "train_throughput.csv").set_index("backbone")
    augmented_path = folder / "train_throughput_augment.csv"
    if augmented_path.exists():  # the same backbone with phase 2's augmentation in the loader's workers
        augmented = pd.read_csv(augmented_path)
        augmented.index = augmented["backbone"]
        eager = pd.concat([eager, augmented.drop(columns="backbone").rename(index=lambda b: f"{b} + augmentation")])
    limit = pd.read_csv(folder / "gpu_limit.csv", header=None,
                        names=["model", "image_size", "batch", "images_per_s", "device"]).set_index("model")
    compiled_path = folder / "train_throughput_compile.csv"
    compiled = pd.read_csv(compiled_path).set_index("backbone") if compiled_path.exists() else pd.DataFrame()
    rows = []
    for backbone, row in eager.iterrows():
        plain = backbone.split(" + ")[0]
        timm_rate = limit["images_per_s"].get(timm_name(plain))
        compiled_rate = compiled["pipeline_images_per_s"].get(backbone) if len(compiled) else None
        compiled_rate = None if pd.isna(compiled_rate) else compiled_rate
        rows.append({
            "model": backbone, "pipeline img/s": row["pipeline_images_per_s"],
            "pipeline img/s (compile)": compiled_rate, "same step on device tensors": row["limit_images_per_s"],
            "gpu_limit.py img/s": timm_rate,
            "pipeline / gpu_limit.py": row["pipeline_images_per_s"] / timm_rate if timm_rate else None,
            "best pipeline / gpu_limit.py": (max(row["pipeline_images_per_s"], compiled_rate or 0) / timm_rate
                                             if timm_rate else None),
        })
    table = pd.DataFrame(rows)
    numbers = table.columns.drop("model")
    table[numbers] = table[numbers].astype(float)  # a missing figure (no compile run) is NaN, shown blank
    return table


def rounded(table: pd.DataFrame) -> pd.DataFrame:
    """Images/s as whole numbers, ratios to three decimals, for reading."""
    shown = table.copy()
    for column in shown.select_dtypes("number").columns:
        shown[column] = shown[column].round(3 if " / " in column else 0)
    return shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    folder = parser.parse_args().folder
    eager = pd.read_csv(folder / "train_throughput.csv")
    print(to_markdown(rounded(training_table(folder)), f"Training images/s on {eager['device'].iloc[0]}: "
                      f"{eager['image_size'].iloc[0]} px, batch {eager['batch'].iloc[0]}, "
                      f"{eager['workers'].iloc[0]} workers", digits=6))
    faces = folder / "face_detection.csv"
    if faces.exists():
        detection = pd.read_csv(faces)
        first = detection.iloc[0]
        print(to_markdown(rounded(detection[["detector", "images_per_s"]]),
                          f"MTCNN on {first['images']} images of {first['image_size']} px, batch {first['batch']}",
                          digits=6))


if __name__ == "__main__":
    main()
