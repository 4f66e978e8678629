"""A quick check that tlkit still learns, on real data: CI runs it after the tests.

- Oxford Flowers-12 with efficientnet_lite0 (real ImageNet weights, offline) and the
  default image recipe: test accuracy at least 0.95.
- TREC with Kim's CNN-rand recipe: test accuracy at least 0.89.

    python benchmarks/learning_check.py --data ../shared/data

Exits 1 (and says which) when a floor is missed; prints each result and its wall time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

FLOORS = {"flowers12": 0.95, "trec": 0.89}
RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "kim2014-cnn-rand.yaml"


def flowers(root: Path, out: Path) -> float:
    from tlkit.recipes import ImageRecipe
    from tlkit.train.image import finetune

    data = root / "images" / "oxford_flowers12"
    run = finetune(ImageRecipe(backbone="efficientnet_lite0", data=str(data)), out=out,
                   name="flowers12")
    return run.metrics["test"]["accuracy"]


def trec(root: Path, out: Path) -> float:
    from tlkit.recipes import load_recipe
    from tlkit.train.text import train_textcnn

    folder = root / "text" / "trec"
    recipe = load_recipe(RECIPE, [f"data={folder / 'train.csv'}", f"test={folder / 'test.csv'}",
                                  "tokenizer=kim-cased"])
    return train_textcnn(recipe, out=out, name="trec").metrics["test"]["accuracy"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="../shared/data")
    parser.add_argument("--only", nargs="*", default=list(FLOORS), choices=list(FLOORS))
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="tlkit-learning-check-"))
    missed = []
    for name in args.only:
        start = time.perf_counter()
        accuracy = {"flowers12": flowers, "trec": trec}[name](args.data, out)
        seconds = time.perf_counter() - start
        ok = accuracy >= FLOORS[name]
        print(f"learning check {name}: test accuracy {accuracy:.4f} (floor {FLOORS[name]}), "
              f"{seconds:.0f} s: {'ok' if ok else 'BELOW THE FLOOR'}", flush=True)
        if not ok:
            missed.append(name)
    if missed:
        print(f"learning check failed: {', '.join(missed)}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
