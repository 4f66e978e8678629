"""Kim (2014) Table 2, CNN-rand: tlkit's text CNN on SST-2, TREC, Subj, CR and MPQA.

SST-2 trains on its train split, keeps the best dev-accuracy epoch (Kim's rule, the recipe's
``monitor``) and reports test accuracy;
TREC holds 10% of train out as dev and reports test accuracy; Subj, CR and MPQA have no
split and report the mean over stratified 10-fold cross-validation, as the paper does. The
paper's hyperparameters throughout (recipes/kim2014-cnn-rand.yaml); TREC keeps case, as in
Kim's code.

    python benchmarks/kim2014_accuracy.py --data ../shared/data/text
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from tlkit.recipes import load_recipe
from tlkit.train.text import train_textcnn

PAPER_CNN_RAND = {"sst2": 82.7, "trec": 91.2, "subj": 89.6, "cr": 79.8, "mpqa": 83.4}
RECIPE = Path(__file__).parent.parent / "recipes" / "kim2014-cnn-rand.yaml"


def overrides_for(name: str, root: Path) -> list[str]:
    """Recipe overrides that point one dataset's files (and its protocol) at the recipe."""
    folder = root / name
    if name == "sst2":
        return [f"data={folder / 'train.csv'}", f"dev={folder / 'dev.csv'}",
                f"test={folder / 'test.csv'}"]
    if name == "trec":
        return [f"data={folder / 'train.csv'}", f"test={folder / 'test.csv'}",
                "tokenizer=kim-cased"]
    return [f"data={folder / 'all.csv'}", "cv=10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="folder holding sst2/ trec/ ...")
    parser.add_argument("--only", nargs="*", default=list(PAPER_CNN_RAND))
    parser.add_argument("--set", nargs="*", default=[], help="extra recipe overrides")
    parser.add_argument("--results", default="benchmarks/results/kim2014_cnn_rand.csv")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="tlkit-kim-"))
    rows = []
    for name in args.only:
        recipe = load_recipe(RECIPE, overrides_for(name, args.data) + args.set)
        start = time.perf_counter()
        run = train_textcnn(recipe, out=out, name=name)
        if recipe.cv:
            accuracy, std = run.metrics["cv"]["accuracy_mean"], run.metrics["cv"]["accuracy_std"]
        else:
            accuracy, std = run.metrics["test"]["accuracy"], float("nan")
        rows.append({"dataset": name, "protocol": f"{recipe.cv}-fold CV" if recipe.cv else "test",
                     "tlkit": round(100 * accuracy, 1), "std": round(100 * std, 1),
                     "paper": PAPER_CNN_RAND[name],
                     "difference": round(100 * accuracy - PAPER_CNN_RAND[name], 1),
                     "wall_seconds": round(time.perf_counter() - start, 1),
                     "epochs": _epochs(recipe), "monitor": recipe.monitor})
        print(pd.DataFrame(rows).to_string(index=False), flush=True)
        _merge(Path(args.results), pd.DataFrame(rows))


def _epochs(recipe: object) -> str:
    patience = recipe.early_stopping
    return f"<={recipe.epochs}, early stop {patience}" if patience else str(recipe.epochs)


def _merge(path: Path, rows: pd.DataFrame) -> None:
    """Replace this invocation's datasets in the results table, keep the others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        kept = pd.read_csv(path)
        rows = pd.concat([kept[~kept["dataset"].isin(rows["dataset"])], rows])
    order = {name: i for i, name in enumerate(PAPER_CNN_RAND)}
    rows.sort_values("dataset", key=lambda c: c.map(order)).to_csv(path, index=False)


if __name__ == "__main__":
    main()
