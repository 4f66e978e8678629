"""What moves Kim CNN-rand's accuracy: one change at a time, chosen on train/dev only.

Each variant is tlkit's ``recipes/kim2014-cnn-rand.yaml`` with one change, run on
``kim_reference.py``'s splits under its dev protocol (``--score-on dev``): the dev split is
scored and 10% of train picks the epoch, so the test split is never looked at. Changes that
are recipe fields are overrides; the others (the random embeddings' range, the optimizer,
length bucketing) are set by replacing the default tlkit's code reads, for this process.

    nice -n 5 python benchmarks/kim_ablation.py --data /work/shared/data/text \\
        --only cr subj --seeds 0 1 --variant adam

One variant per run (its change holds for the process); ``--variant`` names them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import kim_reference  # noqa: E402

RESULTS = HERE / "results" / "kim_ablation.csv"


def _rand_scale(scale: float) -> Callable[[], None]:
    def patch() -> None:
        from tlkit.models.textcnn import build_textcnn

        build_textcnn.__kwdefaults__["rand_scale"] = scale
    return patch


def _optimizer(name: str) -> Callable[[], None]:
    def patch() -> None:
        import tlkit.train.text

        tlkit.train.text.OPTIMIZER = name
    return patch


def _no_bucketing() -> None:
    from tlkit.data.text import text_dataset

    # (batch_size, shuffle, seed, sort_window, clock): a window of one batch sorts nothing
    text_dataset.__defaults__ = (50, False, 42, 1, None)


# name: (recipe overrides, patch of a default that is not a recipe field)
VARIANTS: dict[str, tuple[list[str], Callable[[], None] | None]] = {
    "recipe": ([], None),
    "init-0.25": ([], _rand_scale(0.25)),
    "adam": (["lr=0.001"], _optimizer("adam")),
    "adam-3-epochs": (["lr=0.001", "epochs=3"], _optimizer("adam")),
    "no-bucketing": ([], _no_bucketing),
    "no-max-norm": (["max_norm=null"], None),
    "batch-32": (["batch_size=32"], None),
    "tokenizer-lower": (["tokenizer=lower"], None),
    "min-count-2": (["min_count=2"], None),
    "monitor-val-loss": (["monitor=val_loss"], None),
}


def run_variant(name: str, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Every set and seed of one variant, its rows merged into ``args.results`` as they come."""
    overrides, patch = VARIANTS[name]
    if patch is not None:
        patch()
    rows = []
    for seed in args.seeds:
        for data in args.only:
            tables = kim_reference.dev_protocol(kim_reference.splits(data, args.data, seed), seed)
            folder = work / f"{name}-{data}-{seed}"
            folder.mkdir()
            result = kim_reference.run_tlkit(tables, seed, folder, overrides)
            rows.append({"set": data, "arm": "tlkit", "seed": seed, "scored": "dev",
                         "label": name, **result, "overrides": " ".join(overrides),
                         "measured": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
                         "load": round(os.getloadavg()[0], 1)})
            table = kim_reference._merge(rows, args.results)
            print(kim_reference.summary(table).to_string(index=False), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="folder holding sst2/ cr/ subj/")
    parser.add_argument("--only", nargs="+", default=["cr", "subj"], choices=kim_reference.SETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--variant", default="recipe", choices=VARIANTS)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tlkit-kim-ablation-") as work:
        run_variant(args.variant, args, Path(work))


if __name__ == "__main__":
    main()
