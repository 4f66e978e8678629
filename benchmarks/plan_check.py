"""Check ``tlkit inspect --plan`` against the real ``tlkit finetune`` process.

For each row (budget, backbone, stage, weights) the planner picks the largest batch that fits
the budget, with the BatchNorm policy ``tlkit finetune`` puts in force for those weights.
Then ``tlkit finetune`` runs as a user starts it: a subprocess of the CLI, one epoch of the
stage's schedule (``feature-extraction`` for head, ``full`` for full), the data pipeline with
augmentation, validation, test evaluation and the run folder, on a CSV of flowers12 images
written to a temporary folder (``--steps`` training batches, one validation and one test
batch). The peak resident memory of its process tree is sampled with psutil every 50 ms and
checked against the kernel's maximum resident set size of the process. A row passes when
``0.8 x budget <= measured <= budget``.

    nice -n 10 python benchmarks/plan_check.py                   # the rows below
    nice -n 10 python benchmarks/plan_check.py --rows 2GB:vgg16:head:none --batches 16 40

With ``--batches`` the given batches are measured instead of the planned one (calibration).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

FLOWERS = Path("/work/shared/data/images/oxford_flowers12")
CLASSES = 12
LOWEST = 0.8  # a planned batch must use at least this fraction of the budget
# budget:backbone:stage:weights[:batchnorm] (default auto, as in `tlkit finetune`); only
# efficientnet_lite0 has ImageNet weights offline here.
ROWS = ("2GB:mobilenetv2:head:none", "2GB:mobilenetv2:full:none",
        "2GB:efficientnet_lite0:head:imagenet", "2GB:efficientnet_lite0:full:imagenet",
        "2GB:resnet50:full:none", "2GB:vgg16:full:none", "2GB:vgg16:head:none",
        "2GB:resnet50:head:none", "4GB:mobilenetv2:full:none",
        "4GB:efficientnet_lite0:head:imagenet")
SCHEDULES = {"head": "feature-extraction", "full": "full"}


def _flowers(split: str) -> Iterator[Path]:
    """Flowers12 images of ``split``, one class after the other, repeated without end."""
    by_class = [sorted(folder.glob("*.jpg"))
                for folder in sorted((FLOWERS / split).iterdir()) if folder.is_dir()]
    return itertools.cycle([image for group in itertools.zip_longest(*by_class)
                            for image in group if image is not None])


def write_subset(path: Path, batch: int, steps: int) -> Path:
    """A CSV of ``steps`` full training batches, one validation and one test batch.

    Small batches get more training batches, so that every class has a training image.
    """
    train, test = _flowers("train"), _flowers("test")
    steps = max(steps, -(-CLASSES // batch))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for split, count, images in (("train", steps * batch, train), ("val", batch, train),
                                     ("test", batch, test)):
            for image in itertools.islice(images, count):
                writer.writerow([image, image.parent.name, split])
    return path


def peak_rss(command: list[str]) -> tuple[int, float]:
    """Peak resident bytes of ``command``'s process tree, and its wall time in seconds."""
    import psutil

    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(child.stdout))
    reader.start()
    process, sampled = psutil.Process(child.pid), 0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        try:
            tree = [process, *process.children(recursive=True)]
            sampled = max(sampled, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass  # the process ended between wait4 and the sample
        time.sleep(0.05)
    reader.join()
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{' '.join(command)} failed:\n{''.join(output[-20:])}")
    # ru_maxrss is in kilobytes on Linux: it catches a peak between two samples.
    return max(sampled, usage.ru_maxrss * 1024), time.perf_counter() - start


def finetune_command(backbone: str, stage: str, weights: str, batchnorm: str, batch: int,
                     data: Path, runs: Path) -> list[str]:
    """The ``tlkit finetune`` command line a user would type for this row."""
    return [sys.executable, "-m", "tlkit", "finetune", "--backbone", backbone,
            "--weights", weights, "--data", str(data), "--schedule", SCHEDULES[stage],
            "--epochs", "1", "--batch-size", str(batch), "--out", str(runs),
            "--set", f"batchnorm={batchnorm}"]


def check(row: str, folder: Path, steps: int, batches: list[int] | None = None) -> list[dict]:
    """Plan one row, then measure ``tlkit finetune`` at the planned batch (or ``batches``)."""
    from tlkit.inspection import inspect_model, parse_memory, plan_batch
    from tlkit.recipes import ImageRecipe

    budget, backbone, stage, weights, asked = (*row.split(":"), "auto")[:5]
    batchnorm = ImageRecipe(weights=weights, batchnorm=asked).batchnorm_policy
    plan = plan_batch(inspect_model(backbone, classes=CLASSES), budget, stage, "adam",
                      batchnorm)
    results = []
    for batch in batches or [plan.batch]:
        data = write_subset(folder / f"{backbone}_{stage}_{batch}.csv", batch, steps)
        measured, seconds = peak_rss(finetune_command(backbone, stage, weights, asked, batch,
                                                      data, folder / "runs"))
        share = measured / parse_memory(budget)
        results.append({"budget": budget, "backbone": backbone, "stage": stage,
                        "weights": weights, "batchnorm": batchnorm, "batch": batch,
                        "planned": batch == plan.batch,
                        "estimate_mb": round(plan.memory.at(batch) / 1e6),
                        "measured_mb": round(measured / 1e6),
                        "measured/budget": round(share, 3), "ok": LOWEST <= share <= 1,
                        "seconds": round(seconds)})
        print(", ".join(f"{key} {value}" for key, value in results[-1].items()), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS),
                        help="BUDGET:BACKBONE:STAGE:WEIGHTS[:BATCHNORM], e.g. 2GB:vgg16:head:none")
    parser.add_argument("--steps", type=int, default=2, help="training batches per run")
    parser.add_argument("--batches", nargs="+", type=int, help="measure these batches instead")
    parser.add_argument("--results", default="benchmarks/results/plan_check.csv")
    args = parser.parse_args()
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="plan_check_") as folder:
        for row in args.rows:
            results += check(row, Path(folder), args.steps, args.batches)
            table = pd.DataFrame(results)
            table.to_csv(args.results, index=False)  # after each row: runs are long
    print(table.to_string(index=False))
    sys.exit(0 if table["ok"].all() else 1)


if __name__ == "__main__":
    main()
