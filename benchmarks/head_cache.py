"""Head training on cached backbone features against plain Keras fit through the frozen backbone.

Both methods train the same head (same initial weights, dropout draws, optimizer and seed)
for the same epochs on the same batches in the same order, in one process: tlkit's way builds
the feature cache (timed) and fits the head on it; plain Keras fits the full model with the
backbone frozen, from images decoded once into memory (so it does not pay for JPEG decoding
each epoch). The two are the same computation but for where the backbone's features come
from, so their accuracies must agree. A second tlkit row times the run when the cache
is already on disk, and a linear-probe row shows the floor on the same features. Each row
has wall and CPU seconds: on a shared machine the other jobs' load moves wall time. Then, in
fresh processes, the peak resident memory while caching N images (the first images repeated
up to N) shows that memory does not grow with N.

    python benchmarks/head_cache.py --data /work/shared/data/images/oxford_flowers12
    python benchmarks/head_cache.py --data ... --backbone vgg16 --weights none --limit 500
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlkit.backbones import get_backbone
from tlkit.data.images import make_dataset, read_image_table, split_table
from tlkit.evaluation.probe import linear_probe
from tlkit.train.cache import build_feature_cache, head_dataset, split_classifier

RESULTS = "benchmarks/results/head_cache.csv"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="image folder (class subfolders, or "
                        "train/ and test/ holding them); read in place, never copied")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet", help="imagenet, none or a file")
    parser.add_argument("--size", type=int, default=None, help="input size (row default)")
    parser.add_argument("--limit", type=int, default=None, help="use this many train images")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--memory", default="500,1000,2000",
                        help="image counts for the peak-memory runs ('' to skip)")
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def load_split(data: str, limit: int | None, seed: int) -> dict[str, tuple[list[str], np.ndarray]]:
    """Train and val (20% of train, stratified) paths and label ids; the test split is unused."""
    table = read_image_table(data)
    table = table[table["split"].isna() | (table["split"] == "train")].assign(split=None)
    if limit:
        table = table.sample(n=min(limit, len(table)), random_state=seed)
    table = split_table(table.reset_index(drop=True), 0.2, 0.0, seed)
    classes = {name: i for i, name in enumerate(sorted(table["label"].unique()))}
    return {split: (rows["path"].tolist(), rows["label"].map(classes).to_numpy("int32"))
            for split, rows in table.groupby("split")}


def build_model(args: argparse.Namespace, n_classes: int) -> Any:
    import keras

    from tlkit.models.image import build_classifier
    from tlkit.weights import build_weighted_backbone

    row = get_backbone(args.backbone)
    keras.utils.set_random_seed(args.seed)
    backbone = build_weighted_backbone(row.name, args.size or row.default_size, args.weights)
    backbone.trainable = False
    return build_classifier(row, backbone, n_classes, dropout=0.2)


def compile_and_fit(model: Any, train: Any, val: Any, args: argparse.Namespace) -> float:
    """Compile with a fresh Adam, fit; the last epoch's validation accuracy."""
    import keras

    keras.utils.set_random_seed(args.seed)
    model.compile(optimizer=keras.optimizers.Adam(args.lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(train, validation_data=val, epochs=args.epochs, shuffle=False, verbose=0)
    return float(history.history["val_accuracy"][-1])


def timed(call: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """``call()``'s result, its wall seconds and this process's CPU seconds (all threads).

    On a machine shared with other jobs, CPU seconds move less with their load than wall time.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, {"seconds": time.perf_counter() - wall,
                    "cpu_seconds": time.process_time() - cpu}


def tlkit_head(model: Any, split: dict, cache_dir: Path, args: argparse.Namespace
               ) -> tuple[float, dict]:
    """Val accuracy of head training on cached features (cache built if absent), the caches."""
    feature_model, head = split_classifier(model)
    key = {"backbone": args.backbone, "weights": args.weights}
    caches = {name: build_feature_cache(feature_model, paths, args.batch_size, cache_dir, key)
              for name, (paths, _) in split.items()}
    train = head_dataset(caches["train"], split["train"][1], args.batch_size, shuffle=True,
                         seed=args.seed)
    val = head_dataset(caches["val"], split["val"][1], args.batch_size)
    return compile_and_fit(head, train, val, args), caches


def plain_keras_head(model: Any, split: dict, args: argparse.Namespace) -> float:
    """Val accuracy of ``fit`` on the full model with the backbone frozen, fed the batches
    the cached head saw (``same_batches``), from images decoded once into memory."""
    size = model.input_shape[1]
    train = same_batches(decoded_images(split["train"][0], size), split["train"][1],
                         args.batch_size, shuffle=True, seed=args.seed)
    val = same_batches(decoded_images(split["val"][0], size), split["val"][1], args.batch_size)
    return compile_and_fit(model, train, val, args)


def head_state(model: Any) -> list[np.ndarray]:
    """The head's weights and its dropout's random-number state: where a head fit starts."""
    return [variable.numpy() for variable in model.get_layer("head").variables]


def restore_head_state(model: Any, state: list[np.ndarray]) -> None:
    """Put back ``head_state``, so a second fit starts from the same weights and draws the
    same dropout masks (the head's layers are shared by the classifier and the cached head)."""
    for variable, value in zip(model.get_layer("head").variables, state, strict=True):
        variable.assign(value)


def decoded_images(paths: list[str], size: int) -> np.ndarray:
    """The images as the model reads them (RGB 0-255, resized), decoded once into memory."""
    from tlkit.data.images import decode_image

    return np.stack([decode_image(path, size).numpy() for path in paths])


def same_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, **order: Any) -> Any:
    """(images, labels) batches in the order ``head_dataset(cache, labels, batch_size,
    **order)`` gives cached features: the same rows in each batch, epoch after epoch.

    ``head_dataset`` itself decides the order, run over a stand-in cache whose row i holds
    the number i, so plain ``fit`` and the cached head see the same batches by construction.
    """
    import tensorflow as tf

    from tlkit.train.cache import FeatureCache

    count = len(images)
    numbers = FeatureCache(Path("row-numbers"), np.arange(count, dtype="float32")[:, None],
                           {"views": 1, "n_images": count}, reused=True)
    rows_in_order = head_dataset(numbers, labels, batch_size, **order)

    def batches() -> Any:
        for rows, batch_labels in rows_in_order:
            yield images[rows.numpy()[:, 0].astype(int)], batch_labels

    spec = (tf.TensorSpec((None, *images.shape[1:]), tf.float32),
            tf.TensorSpec((None,), tf.int32))
    dataset = tf.data.Dataset.from_generator(batches, output_signature=spec)
    return dataset.apply(tf.data.experimental.assert_cardinality(len(rows_in_order))).prefetch(2)


def full_model_accuracy(model: Any, paths: list[str], labels: np.ndarray, batch: int) -> float:
    """Accuracy of the whole classifier on image files: what a saved model would score."""
    probabilities = model.predict(make_dataset(paths, labels, model.input_shape[1], batch),
                                  verbose=0)
    return float(np.mean(probabilities.argmax(axis=1) == labels))


def speed_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    split = load_split(args.data, args.limit, args.seed)
    model = build_model(args, int(split["train"][1].max()) + 1)
    start_state = head_state(model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tlkit-head-cache-") as folder:
        cache_dir = Path(folder)
        (accuracy, caches), times = timed(lambda: tlkit_head(model, split, cache_dir, args))
        full = full_model_accuracy(model, *split["val"], args.batch_size)
        rows.append({"method": "tlkit: cache + head fit", **times, "val_accuracy": accuracy,
                     "full_model_val_accuracy": full})
        restore_head_state(model, start_state)
        (accuracy, _), times = timed(lambda: tlkit_head(model, split, cache_dir, args))
        rows.append({"method": "tlkit: cache on disk + head fit", **times,
                     "val_accuracy": accuracy})
        probe, times = timed(lambda: linear_probe(caches["train"].features, split["train"][1],
                                                  caches["val"].features, split["val"][1]))
        rows.append({"method": f"linear probe (C={probe['C']:g})", **times,
                     "val_accuracy": probe["val_accuracy"]})
    restore_head_state(model, start_state)
    accuracy, times = timed(lambda: plain_keras_head(model, split, args))
    rows.append({"method": "plain Keras: fit through frozen backbone", **times,
                 "val_accuracy": accuracy})
    plain = rows[-1]
    for row in rows:
        row.update(n_train=len(split["train"][0]), n_val=len(split["val"][0]),
                   epochs=args.epochs, speedup=plain["seconds"] / row["seconds"],
                   cpu_speedup=plain["cpu_seconds"] / row["cpu_seconds"])
    return rows


def memory_child(args: argparse.Namespace) -> None:
    """Cache features of ``--memory-child`` images; print RSS before and the peak during."""
    split = load_split(args.data, None, args.seed)
    paths = split["train"][0] + split["val"][0]
    paths = (paths * (args.memory_child // len(paths) + 1))[:args.memory_child]
    feature_model, _ = split_classifier(build_model(args, 2))
    before = _status_kb("VmRSS")
    # Resets VmHWM (Linux >= 4.0), so the peak below is the caching's, not the model build's.
    Path("/proc/self/clear_refs").write_text("5")
    with tempfile.TemporaryDirectory(prefix="tlkit-cache-memory-") as cache_dir:
        start = time.perf_counter()
        cache = build_feature_cache(feature_model, paths, args.batch_size, cache_dir,
                                    {"backbone": args.backbone, "memory_run": len(paths)})
        seconds = time.perf_counter() - start
        file_mb = cache.path.stat().st_size / 2**20
    print(json.dumps({"n_images": len(paths), "seconds": seconds, "cache_file_mb": file_mb,
                      "rss_before_mb": before / 1024, "peak_rss_mb": _status_kb("VmHWM") / 1024}))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for n in (int(n) for n in args.memory.split(",") if n.strip()):
        command = [sys.executable, __file__, "--data", args.data, "--backbone", args.backbone,
                   "--weights", args.weights, "--batch-size", str(args.batch_size),
                   "--memory-child", str(n)] + (["--size", str(args.size)] if args.size else [])
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        result = json.loads(output.strip().splitlines()[-1])
        rows.append({"method": f"cache {n} images (peak memory)", **result})
        print(f"  caching {n} images: peak RSS {result['peak_rss_mb']:.0f} MB "
              f"(before: {result['rss_before_mb']:.0f} MB), {result['seconds']:.0f} s", flush=True)
    return rows


def markdown(table: pd.DataFrame) -> str:
    """A GitHub markdown table (pandas' own needs the optional tabulate package)."""
    cells = table.astype(object).where(table.notna(), "")
    lines = [list(table.columns), ["---"] * len(table.columns), *cells.astype(str).values]
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines)


def main() -> None:
    args = parse_args()
    if args.memory_child:
        memory_child(args)
        return
    row = get_backbone(args.backbone)
    setting = {"backbone": args.backbone, "weights": args.weights,
               "size": args.size or row.default_size, "batch_size": args.batch_size}
    rows = [{**setting, **r} for r in speed_rows(args) + memory_rows(args)]
    table = pd.DataFrame(rows).convert_dtypes()
    print(markdown(table.drop(columns=list(setting)).round(3)))
    path = Path(args.results)
    if path.is_file():  # one file for all settings: replace this setting's rows only
        old = pd.read_csv(path)
        same = (old[list(setting)].astype(str) == pd.Series(setting).astype(str)).all(axis=1)
        table = pd.concat([old[~same], table], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.convert_dtypes().round(4).to_csv(path, index=False)


if __name__ == "__main__":
    main()
