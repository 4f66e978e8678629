"""Every tlkit benchmark in one command, written to benchmarks/RESULTS.md (and results/run_all.csv).

Each row sets tlkit beside the plain-Keras way of doing the same work, in the same process,
with the two alternated where a row has repeats, so that load from other processes on the
machine falls on both alike; times are medians of repeats. Rows:

- head stage: 10 epochs of a new head on VGG16 (224, ~500 JPEGs of flowers12): tlkit's
  feature cache against ``fit`` through the frozen backbone (``benchmarks/head_cache.py``);
- full fine-tuning of MobileNetV2 at 160 from JPEG files: tlkit's data pipeline and stage
  against ``keras.utils.image_dataset_from_directory`` + ``fit``, epochs alternated;
- prediction with VGG16 on a folder of JPEGs (``tlkit.predict``): images/s and the fraction
  of this machine's float32 matmul rate, measured in the same run;
- Kim CNN-rand training against the plain-Keras reference (``benchmarks/textcnn_speed.py``),
  also as a fraction of the matmul rate;
- ``tlkit --help`` and three fast errors: wall time of the subprocess;
- peak memory while caching the features of 1,000 / 2,500 / 5,000 images.

No VGG16 or MobileNetV2 ImageNet weights exist offline here, so those rows use random
weights (``weights none``): speed does not depend on the weights' values.

    python benchmarks/run_all.py            # the full run (about 30 minutes on an idle machine)
    python benchmarks/run_all.py --quick    # small sizes, a few minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling benchmarks, reused as modules

import head_cache  # noqa: E402
import textcnn_speed  # noqa: E402

FLOWERS = "/work/shared/data/images/oxford_flowers12"
TREC = "/work/shared/data/text/trec"
# Kim CNN-rand: 100 filters each of widths 3, 4, 5 over 300-d embeddings. Per real token, one
# output position per width: forward MACs = 300 * 100 * (3 + 4 + 5); backward computes the
# gradients of the inputs (the embeddings train) and of the weights, twice the forward.
KIM_FLOPS_PER_TOKEN = 3 * 2 * 300 * 100 * (3 + 4 + 5)


@dataclass
class Settings:
    """The sizes of one mode; every number the results depend on is here and in RESULTS.md."""

    head_images: int = 500
    head_size: int = 224
    head_epochs: int = 10
    # Plain Keras runs the backbone every epoch: past this many seconds (and at least
    # plain_head_min_epochs), its remaining epochs are extrapolated from the measured ones.
    plain_head_budget: float = 600.0
    plain_head_min_epochs: int = 1
    finetune_images: int = 300
    finetune_size: int = 160
    finetune_epochs: int = 3
    predict_images: int = 64
    predict_size: int = 224
    predict_repeats: int = 5
    matmul_n: int = 4096
    matmul_repeats: int = 5
    textcnn_epochs: int = 6
    cli_repeats: int = 5
    memory_counts: tuple[int, ...] = (1000, 2500, 5000)
    memory_backbone: str = "mobilenetv2"
    memory_size: int = 96


QUICK = Settings(head_images=100, head_size=64, plain_head_budget=60.0,
                 plain_head_min_epochs=2, finetune_images=96,
                 finetune_size=96, finetune_epochs=2, predict_images=32, predict_size=64,
                 matmul_n=1024, textcnn_epochs=2, cli_repeats=3, memory_counts=(200, 500, 1000),
                 memory_backbone="tiny_cnn", memory_size=32)


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, load, and the versions the numbers depend on."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    memory_kb = next(int(line.split()[1]) for line in
                     Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE).stdout.strip()
    versions = {name: version(name) for name in
                ("tensorflow", "keras", "numpy", "scikit-learn", "pandas", "tlkit")}
    return {"cpu": cpu, "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
            "memory_gib": round(memory_kb / 2**20, 1), "python": platform.python_version(),
            "platform": platform.platform(), "tlkit_commit": commit, **versions}


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def matmul_rate(n: int, repeats: int) -> list[float]:
    """GFLOP/s of ``repeats`` float32 ``n x n`` matmuls (2 n^3 FLOPs each), after a warm-up."""
    import tensorflow as tf

    a, b = tf.random.normal((n, n), seed=1), tf.random.normal((n, n), seed=2)
    tf.linalg.matmul(a, b).numpy()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        rates.append(2 * n**3 / (time.perf_counter() - start) / 1e9)
    return rates


def linked_folder(paths: list[str], labels: list[str], count: int, folder: Path) -> Path:
    """``count`` symlinks named ``<label>/<i>.jpg`` cycling through ``paths``: a class folder."""
    for i in range(count):
        source, label = paths[i % len(paths)], labels[i % len(paths)]
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / f"{i:05d}{Path(source).suffix}").symlink_to(source)
    return folder


def flowers_sample(count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``count`` flowers12 training JPEGs, the same number from each class (seeded)."""
    from tlkit.data.images import read_image_table

    table = read_image_table(FLOWERS)
    table = table[table["split"] == "train"]
    per_class = -(-count // table["label"].nunique())
    shuffled = table.sample(frac=1, random_state=seed)
    picked = shuffled.groupby("label").head(per_class).head(count)
    return picked["path"].tolist(), picked["label"].tolist()


def row(benchmark: str, setting: str, tlkit: str, reference: str, ratio: str, goal: str,
        met: bool | None, accuracy: str = "", note: str = "") -> dict[str, Any]:
    """One line of the results table."""
    return {"benchmark": benchmark, "setting": setting, "tlkit": tlkit,
            "reference": reference, "ratio": ratio, "goal": goal,
            "goal met": "" if met is None else ("yes" if met else "no"),
            "accuracy (tlkit / reference)": accuracy, "note": note}


class EpochTimer:
    """A Keras callback factory's state: wall and CPU seconds, val accuracy of each epoch."""

    def __init__(self, budget: float = float("inf"), min_epochs: int = 1) -> None:
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []  # every thread of this process: load-insensitive
        self.val_accuracy: list[float] = []
        self.val_loss: list[float] = []
        self.budget, self.min_epochs = budget, min_epochs

    def callback(self) -> Any:
        import keras

        timer = self

        class Timing(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self.start, self.cpu_start = time.perf_counter(), time.process_time()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                timer.seconds.append(time.perf_counter() - self.start)
                timer.cpu_seconds.append(time.process_time() - self.cpu_start)
                timer.val_accuracy.append(float((logs or {}).get("val_accuracy", np.nan)))
                timer.val_loss.append(float((logs or {}).get("val_loss", np.nan)))
                if len(timer.seconds) >= timer.min_epochs and sum(timer.seconds) > timer.budget:
                    self.model.stop_training = True

        return Timing()


def fit_timed(model: Any, train: Any, val: Any, epochs: int, lr: float, seed: int,
              budget: float = float("inf"), min_epochs: int = 1) -> EpochTimer:
    """Compile ``model`` with a fresh Adam and fit; each epoch's seconds and val accuracy."""
    import keras

    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    timer = EpochTimer(budget, min_epochs)
    model.fit(train, validation_data=val, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[timer.callback()])
    return timer


def head_stage(s: Settings) -> list[dict[str, Any]]:
    """tlkit's cache + head fit against plain ``fit`` through the frozen VGG16, the same
    computation but for where the features come from (``head_cache.same_batches``); plain
    epochs past ``plain_head_budget`` seconds are extrapolated (``extrapolated``).
    """
    from tlkit.evaluation.probe import linear_probe
    from tlkit.train.cache import build_feature_cache, head_dataset, split_classifier

    args = argparse.Namespace(backbone="vgg16", weights="none", size=s.head_size, seed=42)
    split = head_cache.load_split(FLOWERS, s.head_images, args.seed)
    (train_paths, train_y), (val_paths, val_y) = split["train"], split["val"]
    model = head_cache.build_model(args, int(train_y.max()) + 1)
    start_state = head_cache.head_state(model)
    with tempfile.TemporaryDirectory(prefix="tlkit-run-all-") as cache_dir:
        start, cpu_start = time.perf_counter(), time.process_time()
        feature_model, head = split_classifier(model)
        caches = [build_feature_cache(feature_model, paths, 32, cache_dir, {"backbone": "vgg16"})
                  for paths in (train_paths, val_paths)]
        cache_seconds, cache_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        tl = fit_timed(head, head_dataset(caches[0], train_y, 32, shuffle=True, seed=args.seed),
                       head_dataset(caches[1], val_y, 32), s.head_epochs, 1e-3, args.seed)
        probe = linear_probe(caches[0].features, train_y, caches[1].features, val_y)
    head_cache.restore_head_state(model, start_state)
    plain, decode_seconds, decode_cpu = plain_head_fit(model, split, s, args.seed)
    tlkit_seconds = cache_seconds + sum(tl.seconds)
    measured, later = len(plain.seconds), plain.seconds[1:] or plain.seconds
    plain_seconds = decode_seconds + extrapolated(plain.seconds, s.head_epochs)
    # The two halves run one after the other, so load from other jobs falls on them
    # unequally; CPU seconds of this process do not depend on it. The goal needs both.
    plain_cpu = decode_cpu + extrapolated(plain.cpu_seconds, s.head_epochs)
    tlkit_cpu = cache_cpu + sum(tl.cpu_seconds)
    cpu_ratio = plain_cpu / tlkit_cpu
    gap = accuracy_gap(tl.val_accuracy[measured - 1], plain.val_accuracy[-1])
    note = (f"{len(train_y)} train / {len(val_y)} val JPEGs; tlkit: cache {cache_seconds:.0f} s "
            f"+ {s.head_epochs} head epochs {sum(tl.seconds):.1f} s; plain Keras: decoding "
            f"into memory {decode_seconds:.0f} s + fit")
    if measured < s.head_epochs:
        note += (f", {measured} of {s.head_epochs} epochs measured "
                 f"({sum(plain.seconds):.0f} s), the rest extrapolated at "
                 f"{statistics.median(later):.0f} s each (its median epoch, after the first "
                 f"when there are several)")
    note += (f". Accuracy: both sides start from the same head weights and dropout state and "
             f"see the same batches in the same order, so they are the same computation but "
             f"for where the frozen features come from (the cache or the backbone each step); "
             f"compared at epoch {measured}, where the val loss is "
             f"{tl.val_loss[measured - 1]:.5f} / {plain.val_loss[-1]:.5f} and the cached head's "
             f"val accuracy "
             f"{tl.val_accuracy[measured - 1]:.3f} (epoch {s.head_epochs}: "
             f"{tl.val_accuracy[-1]:.3f}); with random backbone weights, a linear probe on "
             f"the same cached features reaches {probe['val_accuracy']:.3f}. CPU seconds "
             f"(extrapolated alike): tlkit {tlkit_cpu:.0f}, plain {plain_cpu:.0f}, which do not "
             f"depend on other jobs' load; the goal needs both ratios")
    ratio = plain_seconds / tlkit_seconds
    return [row("head stage, 10 epochs", f"VGG16 {s.head_size}px, weights none",
                f"{tlkit_seconds:.0f} s", f"{plain_seconds:.0f} s (plain fit, frozen backbone)",
                f"{cpu_ratio:.1f}x CPU time ({ratio:.1f}x wall)",
                ">= 8x at equal accuracy (within 1 point)",
                min(cpu_ratio, ratio) >= 8 and gap <= 1,
                f"{tl.val_accuracy[measured - 1]:.3f} / {plain.val_accuracy[-1]:.3f} val "
                f"(epoch {measured})", note)]


def extrapolated(per_epoch: list[float], epochs: int) -> float:
    """The measured epochs' sum, the missing ones at the median epoch after the first."""
    later = per_epoch[1:] or per_epoch
    return sum(per_epoch) + (epochs - len(per_epoch)) * statistics.median(later)


def plain_head_fit(model: Any, split: dict, s: Settings, seed: int
                   ) -> tuple[EpochTimer, float, float]:
    """Plain ``fit`` through the frozen backbone on the cached head's batches; decode wall
    and CPU seconds."""
    start, cpu_start = time.perf_counter(), time.process_time()
    images = {name: head_cache.decoded_images(paths, s.head_size)
              for name, (paths, _) in split.items()}
    decode_seconds, decode_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    train = head_cache.same_batches(images["train"], split["train"][1], 32, shuffle=True,
                                    seed=seed)
    val = head_cache.same_batches(images["val"], split["val"][1], 32)
    return fit_timed(model, train, val, s.head_epochs, 1e-3, seed, s.plain_head_budget,
                     s.plain_head_min_epochs), decode_seconds, decode_cpu


def plain_mobilenet(size: int, n_classes: int, seed: int) -> Any:
    """MobileNetV2 as the Keras guide writes it: rescaling, backbone, pooling, dropout, softmax."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False,
                                       weights=None)(x)
    x = keras.layers.Dropout(0.2)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(x))


def tlkit_mobilenet(folder: Path, size: int, epochs: int) -> tuple[Any, dict[str, Any]]:
    """The model and streams ``tlkit.finetune`` trains for a full schedule (augmentation off)."""
    from tlkit.backbones import get_backbone
    from tlkit.data.images import load_image_data, make_dataset
    from tlkit.models.image import build_classifier
    from tlkit.recipes import ImageRecipe, full_finetuning
    from tlkit.train.stages import compile_for_stage, prepare_stage
    from tlkit.weights import build_weighted_backbone

    recipe = ImageRecipe(backbone="mobilenetv2", weights="none", input_size=size,
                         data=str(folder), augment=None, val_fraction=0.2, test_fraction=0.0,
                         stages=full_finetuning(epochs=epochs))
    images = load_image_data(recipe)
    row_ = get_backbone(recipe.backbone)
    backbone = build_weighted_backbone(row_.name, size, recipe.weights)
    model = build_classifier(row_, backbone, len(images.class_names), recipe.dropout)
    stage = recipe.stages[0]
    compile_for_stage(model, stage, prepare_stage(backbone, row_, stage,
                                                  recipe.batchnorm_policy,
                                                  recipe.batchnorm_momentum))
    streams = {split: make_dataset(frame["path"].tolist(), images.label_ids(frame), size,
                                   recipe.batch_size, training=split == "train", seed=recipe.seed)
               for split in ("train", "val") for frame in [images.split(split)]}
    return model, streams


def full_finetuning_row(s: Settings, work: Path) -> list[dict[str, Any]]:
    """Epochs of tlkit's full fine-tuning and of ``image_dataset_from_directory`` + ``fit``,
    alternated (order swapped each epoch) on the same JPEG folder."""
    import keras

    paths, labels = flowers_sample(s.finetune_images)
    folder = linked_folder(paths, labels, len(paths), work / "finetune")
    size = s.finetune_size
    tl_model, tl = tlkit_mobilenet(folder, size, s.finetune_epochs)
    reading = {"directory": folder, "validation_split": 0.2, "seed": 42,
               "image_size": (size, size), "batch_size": 32, "verbose": False}
    plain_train = keras.utils.image_dataset_from_directory(subset="training", **reading)
    plain_val = keras.utils.image_dataset_from_directory(subset="validation", **reading)
    plain_model = plain_mobilenet(size, len(plain_train.class_names), 42)
    plain_model.compile(optimizer=keras.optimizers.Adam(1e-4),
                        loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    runs = {"tlkit": (tl_model, tl["train"], tl["val"]),
            "plain": (plain_model, plain_train, plain_val)}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    accuracy: dict[str, float] = {}
    for epoch in range(s.finetune_epochs):
        for name in (list(runs) if epoch % 2 == 0 else list(runs)[::-1]):
            model, train, val = runs[name]
            start = time.perf_counter()
            model.fit(train, epochs=1, verbose=0)
            seconds[name].append(time.perf_counter() - start)
            accuracy[name] = float(model.evaluate(val, verbose=0)[1])  # outside the timing
    n_train = round(len(paths) * 0.8)
    median = {name: statistics.median(t[1:] or t) for name, t in seconds.items()}
    ratio = median["plain"] / median["tlkit"]
    return [row("full fine-tuning from JPEGs", f"MobileNetV2 {size}px, weights none, "
                f"{s.finetune_epochs} epochs each",
                f"{n_train / median['tlkit']:.1f} images/s",
                f"{n_train / median['plain']:.1f} images/s (image_dataset_from_directory + fit)",
                f"{ratio:.2f}x", ">= 1.0x", ratio >= 1.0,
                f"{accuracy['tlkit']:.3f} / {accuracy['plain']:.3f} val",
                f"{n_train} training JPEGs; median epoch after the first; tlkit's stream with "
                "augmentation off, like the reference; from random weights neither model has "
                "learned much in these epochs")]


def vgg16_run(work: Path, size: int) -> Path:
    """A finished VGG16 run (random weights, one head epoch on 16 JPEGs) to predict with."""
    from tlkit.recipes import ImageRecipe, feature_extraction
    from tlkit.train.image import finetune

    paths, labels = flowers_sample(96)
    two = [(p, label) for p, label in zip(paths, labels, strict=True)
           if label in sorted(set(labels))[:2]][:16]
    folder = linked_folder([p for p, _ in two], [label for _, label in two], len(two),
                           work / "vgg16-train")
    recipe = ImageRecipe(backbone="vgg16", weights="none", input_size=size, data=str(folder),
                         val_fraction=0.25, test_fraction=0.25, augment=None, probe=False,
                         early_stopping=None, stages=feature_extraction(epochs=1))
    return finetune(recipe, out=work / "runs", name="vgg16").path


def in_turn(calls: dict[str, Callable[[], Any]], repeats: int
            ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each call's wall seconds per repeat and its total CPU seconds, the calls run in turn."""
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, float] = dict.fromkeys(calls, 0.0)
    for _ in range(repeats):
        for name, call in calls.items():
            start, used = time.perf_counter(), time.process_time()
            call()
            seconds[name].append(time.perf_counter() - start)
            cpu[name] += time.process_time() - used
    return seconds, cpu


def prediction_row(s: Settings, work: Path, rates: list[float]) -> list[dict[str, Any]]:
    """``tlkit.predict`` over a folder of JPEGs: images/s, and FLOP/s against the matmul rate.

    Each repeat runs in turn ``predict`` on the folder with the run opened once, the model
    alone on the images decoded in memory (the ceiling), and the matmul rate; each is taken
    at its best repeat (when this process had the cores). One cold call is timed too.
    """
    from tlkit.data.images import decode_image
    from tlkit.inspection import inspect_model
    from tlkit.predict import PREDICT_BATCH, open_run, predict

    run_path = vgg16_run(work, s.predict_size)
    paths, labels = flowers_sample(s.predict_images, seed=1)
    folder = linked_folder(paths, labels, len(paths), work / "predict")
    flops = 2 * float(inspect_model(str(run_path))["macs"].sum())
    cold_start = time.perf_counter()
    table = predict(run_path, [str(folder)])
    cold = time.perf_counter() - cold_start
    if len(table) != len(paths) or table["error"].astype(bool).any():
        raise RuntimeError("prediction did not return one clean row per image")
    run = open_run(run_path)
    predict(run, paths[:4])  # traces the opened model once, outside the timing
    decoded = [decode_image(p, s.predict_size) for p in paths]
    batches = [np.stack(decoded[i:i + PREDICT_BATCH]) for i in range(0, len(paths),
                                                                      PREDICT_BATCH)]
    work_done = {"predict": lambda: predict(run, [str(folder)]),
                 "model": lambda: [run.model.predict_on_batch(batch) for batch in batches],
                 "matmul": lambda: rates.extend(matmul_rate(s.matmul_n, s.matmul_repeats))}
    seconds, cpu = in_turn(work_done, s.predict_repeats)
    rate = max(rates)
    gflops = {name: len(paths) * flops / 1e9 / min(seconds[name]) for name in ("predict",
                                                                              "model")}
    # GFLOP per CPU second (all threads): other jobs' load moves it far less than wall time.
    # Each matmul_rate call also runs one warm-up product.
    per_cpu = {name: s.predict_repeats * len(paths) * flops / 1e9 / cpu[name]
               for name in ("predict", "model")}
    per_cpu["matmul"] = (s.predict_repeats * (s.matmul_repeats + 1) * 2 * s.matmul_n**3 / 1e9
                         / cpu["matmul"])
    fraction = gflops["predict"] / rate
    return [row("prediction on a folder of JPEGs", f"VGG16 {s.predict_size}px, "
                f"{len(paths)} images, best of {s.predict_repeats}",
                f"{len(paths) / min(seconds['predict']):.2f} images/s = "
                f"{gflops['predict']:.1f} GFLOP/s",
                f"float32 matmul {rate:.1f} GFLOP/s (n={s.matmul_n}, best of {len(rates)})",
                f"{fraction:.0%} of matmul", ">= 80%", fraction >= 0.8,
                note=f"{flops / 2e9:.2f} GMACs per image (tlkit.inspect_model of the run), "
                "x2 FLOPs; tlkit.predict(run, [folder]) with the run opened once, JPEG "
                "decoding included (each image decoded once, in parallel with the model); the "
                f"model alone on the decoded images in batches of {PREDICT_BATCH}: "
                f"{gflops['model']:.1f} GFLOP/s ({gflops['model'] / rate:.0%} of matmul); "
                f"one cold call from the run folder (loading the model, tracing it): "
                f"{len(paths) / cold:.2f} images/s; per CPU second (load-insensitive): "
                f"predict {per_cpu['predict'] / per_cpu['matmul']:.0%} and model alone "
                f"{per_cpu['model'] / per_cpu['matmul']:.0%} of matmul's GFLOP per CPU "
                f"second; wall medians: predict "
                f"{len(paths) * flops / 1e9 / statistics.median(seconds['predict']):.1f}, "
                f"model alone {len(paths) * flops / 1e9 / statistics.median(seconds['model']):.1f}"
                f", matmul {statistics.median(rates):.1f} GFLOP/s; matmul, predict and model "
                "alone measured in turn each repeat, each taken at its best (when this "
                "process had the cores)")]


def accuracy_gap(ours: float, theirs: float) -> float:
    """Accuracy points between two accuracies, rounded so that 0.910 - 0.900 is 1 point.

    Example:
        >>> accuracy_gap(0.91, 0.9) <= 1
        True
    """
    return round(abs(ours - theirs) * 100, 6)


def textcnn_row(s: Settings, work: Path, rates: list[float]) -> list[dict[str, Any]]:
    """benchmarks/textcnn_speed.py's alternated epochs, and tlkit's FLOP/s per real token."""
    from tlkit.data.text import prepare_text_data, read_text_table

    rates.extend(matmul_rate(s.matmul_n, s.matmul_repeats))
    result = textcnn_speed.main(["--data", TREC, "--epochs", str(s.textcnn_epochs),
                                 "--out", str(work / "textcnn")])
    rates.extend(matmul_rate(s.matmul_n, s.matmul_repeats))
    # The same token ids as the benchmark trains on (its tokenizer and seed).
    read = {name: read_text_table(Path(TREC) / f"{name}.csv") for name in ("train", "test")}
    data = prepare_text_data(read["train"], read["test"], tokenizer=result["tokenizer"],
                             dev_fraction=0.0, seed=result["seed"])
    tokens = float(data.splits["train"].lengths.mean())
    summary, key = result["summary"], "sentences_per_second_median_epoch"
    gflops = {name: summary[name][key] * tokens * KIM_FLOPS_PER_TOKEN / 1e9
              for name in ("tlkit", "plain-keras")}
    rate = max(rates)
    ratio = summary["tlkit"][key] / summary["plain-keras"][key]
    # CPU seconds do not depend on how much of the machine other jobs take; wall time does.
    cpu_ratio = result["ratio"]["cpu_seconds_median_epoch"]
    gap = accuracy_gap(summary["tlkit"]["test_accuracy"], summary["plain-keras"]["test_accuracy"])
    return [row("Kim CNN-rand training", f"TREC, {s.textcnn_epochs} epochs each, alternated",
                f"{summary['tlkit'][key]:.0f} sentences/s = {gflops['tlkit']:.1f} GFLOP/s "
                f"({gflops['tlkit'] / rate:.0%} of matmul)",
                f"{summary['plain-keras'][key]:.0f} sentences/s = "
                f"{gflops['plain-keras']:.1f} GFLOP/s ({gflops['plain-keras'] / rate:.0%})",
                f"{ratio:.2f}x wall ({cpu_ratio:.2f}x CPU time)", ">= 3x at equal accuracy",
                min(ratio, cpu_ratio) >= 3 and gap <= 1,
                f"{summary['tlkit']['test_accuracy']:.3f} / "
                f"{summary['plain-keras']['test_accuracy']:.3f} test",
                f"median epoch after the first (wall and CPU seconds; the goal needs both "
                f"ratios); {tokens:.1f} real tokens per sentence, "
                f"{KIM_FLOPS_PER_TOKEN / 1e6:.2f} MFLOP per token (convolutions, forward and "
                f"backward); matmul {rate:.1f} GFLOP/s (best of {len(rates)}, median "
                f"{statistics.median(rates):.1f})")]


CLI_COMMANDS = {
    "tlkit --help": ["--help"],
    "unknown backbone": ["finetune", "--backbone", "vgg61", "--data", FLOWERS],
    "missing --data path": ["finetune", "--data", "/no/such/folder"],
    "text recipe given to finetune": ["finetune", "--recipe",
                                      str(HERE.parent / "recipes/kim2014-cnn-rand.yaml")],
}


def cli_rows(s: Settings) -> list[dict[str, Any]]:
    """Wall time of the ``tlkit`` console script, help and three user errors (exit 2)."""
    executable = shutil.which("tlkit", path=str(Path(sys.executable).parent)) or "tlkit"
    rows = []
    for label, arguments in CLI_COMMANDS.items():
        seconds, cpu = [], []
        for _ in range(s.cli_repeats):
            start, used = time.perf_counter(), _children_cpu()
            done = subprocess.run([executable, *arguments], capture_output=True, text=True)
            seconds.append(time.perf_counter() - start)
            cpu.append(_children_cpu() - used)
        expected = 0 if arguments == ["--help"] else 2
        if done.returncode != expected:
            raise RuntimeError(f"`tlkit {' '.join(arguments)}` exited {done.returncode}, "
                               f"expected {expected}: {done.stderr[-300:]}")
        first_line = (done.stdout + done.stderr).strip().splitlines()[0][:70]
        median = statistics.median(seconds)
        rows.append(row("CLI wall time", label, f"{median:.2f} s wall, "
                        f"{statistics.median(cpu):.2f} s CPU", "", "",
                        "wall time reported (no number set)", None,
                        note=f"median of {s.cli_repeats} runs of the console script; wall time "
                        f"waits for the CPU under load, CPU time does not; prints: {first_line}"))
    return rows


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def memory_rows(s: Settings, work: Path) -> list[dict[str, Any]]:
    """Peak RSS of a fresh process caching N images (symlinked names), for each N."""
    paths, labels = flowers_sample(720)
    results = []
    for n in s.memory_counts:
        folder = linked_folder(paths, labels, n, work / f"memory-{n}")
        command = [sys.executable, str(HERE / "head_cache.py"), "--data", str(folder),
                   "--backbone", s.memory_backbone, "--weights", "none", "--size",
                   str(s.memory_size), "--memory-child", str(n)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    peaks = [r["peak_rss_mb"] for r in results]
    growth = (peaks[-1] - peaks[0]) / peaks[0]
    return [row("peak memory while caching features",
                f"{s.memory_backbone} {s.memory_size}px, weights none",
                " / ".join(f"{r['n_images']}: {r['peak_rss_mb']:.0f} MB" for r in results),
                "", f"{growth:+.1%} from {s.memory_counts[0]} to {s.memory_counts[-1]}",
                "flat in the number of images (< 5% growth)", abs(growth) < 0.05,
                note="peak RSS of a fresh process during caching (VmHWM reset after the model "
                "is built); cache files " + " / ".join(f"{r['cache_file_mb']:.1f}"
                                                       for r in results) + " MB")]


def markdown(table: pd.DataFrame) -> str:
    """A GitHub markdown table (pipes in cells escaped)."""
    cells = table.astype(object).where(table.notna(), "").astype(str)
    cells = cells.map(lambda text: text.replace("|", "\\|"))
    lines = [list(table.columns), ["---"] * len(table.columns), *cells.values.tolist()]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def write_results(table: pd.DataFrame, info: dict[str, Any], path: Path) -> None:
    """RESULTS.md: how it was made, the machine and versions, then the table."""
    machine_rows = pd.DataFrame({"": list(info["machine"]), "value": [
        str(v) for v in info["machine"].values()]})
    lines = [
        "# tlkit benchmarks", "",
        f"Written by `{info['command']}` on {info['date']} in {info['minutes']:.1f} minutes "
        f"({info['mode']} mode). Load average (1, 5, 15 min) at the start: "
        f"{info['load_start']}; at the end: {info['load_end']}. The machine is shared with "
        "other jobs: times are medians of repeats, and tlkit and its reference are measured "
        "side by side in the same process (alternated where a row has repeats), so ratios "
        "hold better than absolute numbers. The matmul rate is the best of its repeats (the "
        "machine's rate when this process had the cores). A run with `--only` replaces its "
        "own rows and keeps the others; `measured` says when each row was measured.", "",
        "VGG16 and MobileNetV2 run with random weights (`weights none`): no offline ImageNet "
        "weights exist for them here, and speed does not depend on the weights' values.", "",
        markdown(table), "", "## Machine and versions", "", markdown(machine_rows), "",
        "## Settings", "", "```", json.dumps(info["settings"], indent=1), "```", "",
    ]
    path.write_text("\n".join(lines) + appended_sections(path))


def appended_sections(path: Path) -> str:
    """The sections other benchmarks appended to ``path`` (multi-label, Kim's 5 seeds): kept
    when this script writes the file anew.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "RESULTS.md"
        >>> _ = path.write_text("# t\\n\\n## Settings\\n\\nx\\n\\n## Kim\\n\\nrows\\n")
        >>> appended_sections(path)
        '## Kim\\n\\nrows\\n'
    """
    if not path.is_file():
        return ""
    own = ("## Machine and versions\n", "## Settings\n")
    parts = re.split(r"(?m)^(?=## )", path.read_text())
    return "".join(part for part in parts[1:] if not part.startswith(own))


SECTIONS = ("head", "finetune", "predict", "textcnn", "cli", "memory")
BENCHMARK_ORDER = ("head stage, 10 epochs", "full fine-tuning from JPEGs",
                   "prediction on a folder of JPEGs", "Kim CNN-rand training", "CLI wall time",
                   "peak memory while caching features")


def run_sections(s: Settings, only: list[str], work: Path) -> list[dict[str, Any]]:
    """Each requested section in turn, its rows printed as they come."""
    rates: list[float] = []
    calls = {"head": lambda: head_stage(s), "finetune": lambda: full_finetuning_row(s, work),
             "predict": lambda: prediction_row(s, work, rates),
             "textcnn": lambda: textcnn_row(s, work, rates), "cli": lambda: cli_rows(s),
             "memory": lambda: memory_rows(s, work)}
    rows = []
    for name in only:
        start = time.perf_counter()
        new = calls[name]()
        stamp = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load {os.getloadavg()[0]:.1f}"
        rows += [{**r, "measured": stamp} for r in new]
        print(f"[{name}: {time.perf_counter() - start:.0f} s]", flush=True)
        print(pd.DataFrame(new).drop(columns=["note"]).to_string(index=False), flush=True)
    return rows


def merge_rows(rows: list[dict[str, Any]], path: Path) -> pd.DataFrame:
    """``rows`` in place of the earlier rows of the same benchmarks in ``path``, if it exists."""
    table = pd.DataFrame(rows)
    if not path.is_file():
        return table
    old = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "measured" not in old.columns:
        old["measured"] = "an earlier run"
    kept = old[~old["benchmark"].isin(set(table["benchmark"]))]
    merged = pd.concat([kept, table.astype(str)], ignore_index=True)
    order = {name: i for i, name in enumerate(BENCHMARK_ORDER)}
    return merged.sort_values("benchmark", key=lambda c: c.map(order), kind="stable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--results", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--csv", default=str(HERE / "results" / "run_all.csv"))
    args = parser.parse_args()
    settings = QUICK if args.quick else Settings()
    start, load_start = time.perf_counter(), load_average()
    with tempfile.TemporaryDirectory(prefix="tlkit-run-all-") as work:
        rows = run_sections(settings, args.only, Path(work))
    info = {"command": " ".join(["python benchmarks/run_all.py", *sys.argv[1:]]),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "minutes": (time.perf_counter() - start) / 60, "mode": "quick" if args.quick
            else "full", "load_start": load_start, "load_end": load_average(),
            "machine": machine(), "settings": asdict(settings)}
    # A partial run (--only) replaces its rows and keeps the others, each with its date.
    table = merge_rows(rows, Path(args.csv)) if args.only != list(SECTIONS) else pd.DataFrame(rows)
    write_results(table, info, Path(args.results))
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.csv, index=False)
    print(f"wrote {args.results} and {args.csv} in {info['minutes']:.1f} minutes")


if __name__ == "__main__":
    main()
