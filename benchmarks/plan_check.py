"""Check ``tlkit inspect --plan`` against reality: peak memory of training at the planned batch.

For each backbone and stage, plan the largest batch that fits in ``--memory``; then, in a fresh
process, build the classifier ``tlkit finetune`` trains (random weights, BatchNorm frozen, Adam),
run two training steps at that batch and measure the peak resident memory above the process's
baseline once TensorFlow has started (the "maximum resident set size" ``/usr/bin/time -v``
reports, minus that baseline). An estimate passes when it is at least the measurement and at
most 30 % above it. Also compares the tensors the plan says are in use at the peak with the
peak TensorFlow's own allocator reports (``tf.config.experimental.get_memory_info``).
Writes a CSV under benchmarks/results and prints the table. With ``--batches``, measures
those batch sizes instead of the planned one, to see how the measurement moves with the batch.

    nice -n 10 python benchmarks/plan_check.py --memory 2GB --backbones vgg16 resnet50
    nice -n 10 python benchmarks/plan_check.py --backbones vgg16 --stages head --batches 40 44
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

TOLERANCE = 0.30


def measure(backbone: str, stage: str, batch: int, size: int) -> dict[str, float]:
    """Peak bytes above baseline of two training steps, measured in this process."""
    import resource

    import keras
    import numpy as np
    import psutil
    import tensorflow as tf

    from tlkit.backbones import build_backbone, get_backbone
    from tlkit.models.image import build_classifier
    from tlkit.recipes import Stage
    from tlkit.train.stages import prepare_stage

    # One tiny training step first, so that TensorFlow's runtime is in the baseline.
    tiny = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    tiny.compile("adam", "sparse_categorical_crossentropy")
    tiny.train_on_batch(np.zeros((2, 4), "float32"), np.zeros(2, "int32"))
    baseline = psutil.Process().memory_info().rss

    row = get_backbone(backbone)
    network = build_backbone(backbone, size)
    model = build_classifier(row, network, num_classes=10)
    prepare_stage(network, row, Stage(train_from=None if stage == "head" else "all"),
                  batchnorm="frozen")
    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, 10, batch)
    start = time.perf_counter()
    for _ in range(2):
        model.train_on_batch(images, labels)
    # ru_maxrss is in kilobytes on Linux: the process's peak resident set size.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    allocator_peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    return {"measured": peak - baseline, "allocator_peak": allocator_peak,
            "seconds": time.perf_counter() - start}


def check(backbone: str, stage: str, memory: str, size: int | None,
          batch: int | None = None) -> dict[str, object]:
    """Plan one stage, measure it (at ``batch``, else the planned one) in a subprocess."""
    from tlkit.inspection import inspect_model, plan_batch

    table = inspect_model(backbone, input_size=size, classes=10)
    plan = plan_batch(table, memory, stage, "adam")
    batch = plan.batch if batch is None else batch
    estimate = plan.memory.at(batch)
    side = table["output_shape"].iloc[0][0]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    child = subprocess.run([sys.executable, __file__, "--child", backbone, stage,
                            str(batch), str(side)],
                           capture_output=True, text=True, check=True, env=env)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    ratio = estimate / result["measured"]
    return {"backbone": backbone, "size": side, "stage": stage, "batch": batch,
            "estimate_mb": round(estimate / 1e6),
            "measured_mb": round(result["measured"] / 1e6),
            "estimate/measured": round(ratio, 3),
            "in_use_mb": round(plan.memory.in_use(batch) / 1e6),
            "allocator_peak_mb": round(result["allocator_peak"] / 1e6),
            "step_s": round(result["seconds"] / 2, 1),
            "ok": 1.0 <= ratio <= 1.0 + TOLERANCE}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", default="2GB", help="budget to plan for (default 2GB)")
    parser.add_argument("--backbones", nargs="+", default=["vgg16", "resnet50"])
    parser.add_argument("--stages", nargs="+", default=["head", "full"])
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--batches", nargs="+", type=int, help="measure these batch sizes")
    parser.add_argument("--results", default="benchmarks/results/plan_check.csv")
    parser.add_argument("--child", nargs=4, metavar=("BACKBONE", "STAGE", "BATCH", "SIZE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        backbone, stage, batch, size = args.child
        print(json.dumps(measure(backbone, stage, int(batch), int(size))))
        return
    rows = [check(backbone, stage, args.memory, args.input_size, batch)
            for backbone in args.backbones for stage in args.stages
            for batch in (args.batches or [None])]
    table = pd.DataFrame(rows)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.results, index=False)
    print(f"budget {args.memory}, Adam, BatchNorm frozen; estimate vs peak RSS above baseline,"
          " tensors in use vs TensorFlow's allocator peak\n")
    print(table.to_string(index=False))
    sys.exit(0 if table["ok"].all() else 1)


if __name__ == "__main__":
    main()
