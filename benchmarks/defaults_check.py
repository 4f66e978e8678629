"""Does the default image recipe reach its linear probe? Run val/test beside probe val/test.

Each candidate recipe (the proposed default, or another from CANDIDATES) runs through
``tlkit.finetune`` on each ``--data`` set; the run's own probe (a logistic regression on the
same frozen features, C chosen on val) is the floor it should reach. With ``--tune`` the test
rows are dropped before the run starts (after the readability check that splits the data),
so no test image reaches a model and only validation numbers exist: candidates are compared
on train and val alone, and test is measured once, without ``--tune``, for the chosen
default.

    python benchmarks/defaults_check.py --data /work/shared/data/images/oxford_flowers12
    python benchmarks/defaults_check.py --tune --candidate head-lr3e-3 head-ft-2 \
        --data /work/shared/data/images/oxford_flowers12 --cache-dir /tmp/tlkit-feature-cache
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from tlkit.data.images import check_images, read_recipe_table
from tlkit.recipes import (
    ImageRecipe,
    Stage,
    apply_overrides,
    feature_extraction,
    lp_ft,
    two_stage,
)
from tlkit.train.image import finetune

TUNING_RESULTS = "benchmarks/results/defaults_tuning.csv"
CHECK_RESULTS = "benchmarks/results/defaults_check.csv"


def _head_then_finetune(train_from: int, finetune_lr: float, head_lr: float = 3e-3,
                        head_epochs: int = 100, finetune_epochs: int = 5) -> list[Stage]:
    """A head stage run to convergence (early stopping ends it), then one fine-tuning stage."""
    return [Stage(name="head", epochs=head_epochs, lr=head_lr),
            Stage(name="fine-tune", epochs=finetune_epochs, lr=finetune_lr,
                  train_from=train_from)]


# name -> recipe fields. Patience is per stage; epochs are upper bounds that early stopping
# cuts short. "default" is the recipe proposed for tlkit.recipes.ImageRecipe.
CANDIDATES: dict[str, Callable[[], dict[str, Any]]] = {
    "issue-default": lambda: {"stages": two_stage(), "early_stopping": 5,
                              "monitor": "val_loss"},
    "head-lr1e-3": lambda: {"stages": feature_extraction(epochs=200, lr=1e-3),
                            "early_stopping": 10, "monitor": "val_loss"},
    "head-lr3e-3": lambda: {"stages": feature_extraction(epochs=200, lr=3e-3),
                            "early_stopping": 10, "monitor": "val_loss"},
    "head-lr1e-2": lambda: {"stages": feature_extraction(epochs=200, lr=1e-2),
                            "early_stopping": 10, "monitor": "val_loss"},
    "head-lr3e-3-acc": lambda: {"stages": feature_extraction(epochs=200, lr=3e-3),
                                "early_stopping": 10, "monitor": "val_accuracy"},
    "head-ft-2": lambda: {"stages": _head_then_finetune(-2, 1e-4), "early_stopping": 10,
                          "monitor": "val_loss"},
    "head-ft-2-lr1e-5": lambda: {"stages": _head_then_finetune(-2, 1e-5),
                                 "early_stopping": 10, "monitor": "val_loss"},
    "head-ft-1": lambda: {"stages": _head_then_finetune(-1, 1e-4), "early_stopping": 10,
                          "monitor": "val_loss"},
    # LP-FT: the probe starts the head, the head converges on cached features, then the
    # whole backbone trains with warmup and cosine decay (BatchNorm frozen, augmentation on).
    "lpft-all-1e-4": lambda: {"stages": lp_ft(), "early_stopping": 10, "monitor": "val_loss",
                              "head_init": "probe"},
    "lpft-all-3e-4-decay0.5": lambda: {"stages": lp_ft(finetune_lr=3e-4, lr_decay=0.5),
                                       "early_stopping": 10, "monitor": "val_loss"},
    "lpft-all-3e-5": lambda: {"stages": lp_ft(finetune_lr=3e-5), "early_stopping": 10,
                              "monitor": "val_loss"},
    "lpft-all-1e-4-randinit": lambda: {"stages": lp_ft(), "early_stopping": 10,
                                       "monitor": "val_loss", "head_init": "random"},
    # The default with an exponential moving average of the fine-tuning stage's weights.
    "lpft-ema": lambda: {"stages": [*lp_ft()[:1], Stage(**{
        **dataclasses.asdict(lp_ft()[1]), "ema": True})], "early_stopping": 10,
        "monitor": "val_loss", "head_init": "random"},
    # The default before fine-tuning was kept at its last epoch: at its best one instead.
    "lpft-keep-best": lambda: {"stages": [*lp_ft()[:1], Stage(**{
        **dataclasses.asdict(lp_ft()[1]), "keep": "best"})], "early_stopping": 10,
        "monitor": "val_loss", "head_init": "random"},
    "head-lpinit": lambda: {"stages": feature_extraction(), "early_stopping": 10,
                            "monitor": "val_loss", "head_init": "probe"},
    "head-randinit": lambda: {"stages": feature_extraction(), "early_stopping": 10,
                              "monitor": "val_loss", "head_init": "random"},
}
# The head to convergence from random weights (chosen on flowers12's train and val splits),
# then LP-FT's fine-tuning stage (chosen on digits' and flowers12-64's): docs/defaults.md.
CANDIDATES["default"] = CANDIDATES["lpft-all-1e-4-randinit"]


def candidate_recipe(name: str, data: str, overrides: list[str] | None = None,
                     cache_dir: str | None = None) -> ImageRecipe:
    """The recipe of candidate ``name`` on ``data`` (EfficientNet-Lite0, ImageNet weights).

    Example:
        >>> candidate_recipe("head-lr1e-3", "imgs/").stages[0].lr
        0.001
    """
    recipe = ImageRecipe(backbone="efficientnet_lite0", weights="imagenet", data=data,
                         cache_dir=cache_dir, **CANDIDATES[name]())
    return apply_overrides(recipe, overrides) if overrides else recipe


def stage_offers(stages: list[dict[str, Any]]) -> str:
    """``metrics.json: stages`` in one cell: each stage's offer (value @ epoch), * if kept.

    Example:
        >>> stage_offers([{"stage": "head", "epoch": 41, "value": 0.0948, "kept": True},
        ...               {"stage": "fine-tune", "epoch": 62, "value": 0.111, "kept": False}])
        'head 0.0948@42*; fine-tune 0.1110@63'
    """
    return "; ".join(f"{s['stage']} {s['value']:.4f}@{s['epoch'] + 1}{'*' * s['kept']}"
                     for s in stages)


def split_without_test(recipe: ImageRecipe) -> pd.DataFrame:
    """The run's own train/val split with the test rows removed (tuning never reads test)."""
    table = check_images(recipe, read_recipe_table(recipe)).table
    return table[table["split"] != "test"].reset_index(drop=True)


def check_candidate(name: str, recipe: ImageRecipe, out: Path, tune: bool) -> dict[str, Any]:
    """Run one candidate; its val (and, unless ``tune``, test) accuracy beside its probe's."""
    data = split_without_test(recipe) if tune else None
    start = time.perf_counter()
    run = finetune(recipe, out=out, data=data)
    kept = next(stage for stage in run.metrics["stages"] if stage["kept"])
    probe = run.metrics["probe"]
    row = {"data": Path(recipe.data).name, "candidate": name,
           "stages": " + ".join(_describe_stage(s) for s in recipe.stages),
           "monitor": recipe.monitor, "patience": recipe.early_stopping,
           "n_train": _count(run, "train"), "n_val": _count(run, "val"),
           "run_val": run.metrics["val"]["accuracy"], "run_val_loss": kept["value"],
           "probe_val": probe["val"], "head_init": run.metrics.get("head_init"),
           "probe_C": probe["C"], "kept_stage": kept["stage"], "kept_epoch": kept["epoch"],
           "stage_offers": stage_offers(run.metrics["stages"]),
           "epochs_run": len(run.history),
           "epochs_by_stage": " ".join(str(n) for n in
                                       run.history.groupby("stage", sort=False).size()),
           "train_seconds": run.metrics["train_seconds"],
           "wall_seconds": round(time.perf_counter() - start, 1)}
    if not tune:
        row.update(n_test=_count(run, "test"), run_test=run.metrics["test"]["accuracy"],
                   probe_test=probe["test"])
    return row


def _count(run: Any, split: str) -> int:
    table = pd.read_csv(run.path / "split.csv")
    return int((table["split"] == split).sum())


def _describe_stage(stage: Stage) -> str:
    where = "head" if stage.train_from is None else f"from {stage.train_from}"
    return f"{stage.name}({where}, <={stage.epochs} ep, lr {stage.lr:g})"


def save_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Merge ``rows`` into ``path``, replacing earlier rows of the same data and candidate."""
    table = pd.DataFrame(rows)
    if path.is_file():
        old = pd.read_csv(path)
        same = old.set_index(["data", "candidate"]).index.isin(
            table.set_index(["data", "candidate"]).index)
        table = pd.concat([old[~same], table], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.round(4).to_csv(path, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True,
                        help="image folders (class subfolders, or train/ and test/ holding "
                        "them); read in place, never copied")
    parser.add_argument("--candidate", nargs="+", default=["default"], choices=sorted(CANDIDATES))
    parser.add_argument("--tune", action="store_true",
                        help="drop the test split: validation numbers only")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="recipe override key=value (repeatable), e.g. stages.0.lr=1e-2")
    parser.add_argument("--cache-dir", default=None,
                        help="feature cache shared across runs (default: each run's own)")
    parser.add_argument("--out", default=None, help="run folders (default: a temp folder)")
    parser.add_argument("--results", default=None,
                        help=f"CSV to merge rows into (default: {TUNING_RESULTS} with --tune, "
                        f"else {CHECK_RESULTS})")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="tlkit-defaults-"))
    results = Path(args.results or (TUNING_RESULTS if args.tune else CHECK_RESULTS))
    rows = []
    for data in args.data:
        for name in args.candidate:
            recipe = candidate_recipe(name, data, args.overrides, args.cache_dir)
            if args.overrides:
                name = f"{name} {' '.join(args.overrides)}"
            rows.append(check_candidate(name, recipe, out, args.tune))
            shown = pd.DataFrame(rows).drop(columns=["stages"])
            print(shown.round(4).to_string(index=False), flush=True)
            save_rows(rows[-1:], results)  # after every run: an interrupted check keeps it


if __name__ == "__main__":
    main()
