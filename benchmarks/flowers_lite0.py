"""Transfer learning proof on real images: EfficientNet-Lite0 on Oxford Flowers-12.

Trains three runs on the same split and prints test accuracy and wall time for each:
ImageNet weights with feature extraction, ImageNet weights with two-stage fine-tuning,
and random weights trained in full (the baseline pretraining must beat).

    python benchmarks/flowers_lite0.py --data ../shared/data/images/oxford_flowers12
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from tlkit.recipes import ImageRecipe, feature_extraction, full_finetuning, two_stage
from tlkit.train.image import finetune

CONFIGS = {
    "imagenet + feature extraction": ("imagenet", feature_extraction(epochs=10, lr=1e-3)),
    "imagenet + two-stage": ("imagenet", two_stage(head_epochs=10, finetune_epochs=6,
                                                   finetune_lr=1e-4, train_from=-2)),
    "random init + full training": ("none", full_finetuning(epochs=16, lr=1e-3)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with train/ and test/")
    parser.add_argument("--out", default=None, help="run folders (default: a temp folder)")
    parser.add_argument("--only", nargs="*", help="config names to run")
    parser.add_argument("--results", default="benchmarks/results/flowers_lite0.csv")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="tlkit-flowers-"))
    rows = []
    for label, (weights, stages) in CONFIGS.items():
        if args.only and label not in args.only:
            continue
        recipe = ImageRecipe(backbone="efficientnet_lite0", data=args.data, weights=weights,
                             batch_size=32, stages=stages, early_stopping=None, seed=42)
        start = time.perf_counter()
        run = finetune(recipe, out=out)
        rows.append({"config": label, "epochs": sum(s.epochs for s in stages),
                     "val_accuracy": round(run.metrics["val"]["accuracy"], 4),
                     "test_accuracy": round(run.metrics["test"]["accuracy"], 4),
                     "test_macro_f1": round(run.metrics["test"]["macro_f1"], 4),
                     "wall_seconds": round(time.perf_counter() - start, 1),
                     "run": str(run.path)})
        print(pd.DataFrame(rows).drop(columns="run").to_string(index=False), flush=True)
        # Written after every run, so an interrupted benchmark keeps what it measured.
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(args.results, index=False)


if __name__ == "__main__":
    main()
