"""Two plain-Keras fine-tuning references, run on tlkit's own split, beside tlkit's default.

Each reference is written the way its source writes it, in plain Keras (no tlkit training
code): only the backbone (EfficientNet-Lite0 with its ImageNet weights, built by
``tlkit.weights``, since these weights exist offline only through tlkit) and the split (the
train/val/test rows tlkit's default run uses, same seed) come from tlkit.

- ``keras-guide``: the Keras guide "Transfer learning & fine-tuning" (fchollet, last
  modified 2023/06/25), section "An end-to-end example": RandomFlip("horizontal") and
  RandomRotation(0.1); the backbone frozen and called with ``training=False`` (BatchNorm in
  inference mode throughout); GlobalAveragePooling2D, Dropout(0.2), a Dense output on
  logits; Adam at its default rate for 20 epochs, then the whole backbone unfrozen and Adam
  at 1e-5 for 10 epochs (the guide's TF 2 edition ran 20 and 10; its Keras 3 edition cuts
  them to 2 and 1 to keep its notebook short). No early stopping, the last epoch's weights
  are tested, as in the guide. Under Keras 3 the guide's ``training=False`` does not hold:
  ``fit`` calls the model with ``training=True``, which overrides it
  (keras-team/keras#20285), so once the backbone is unfrozen its BatchNorm layers normalise
  with each small batch's statistics and update their moving averages. That is what a user
  who follows the guide gets, and this arm keeps it.
- ``keras-guide-bn-frozen``: the guide as it means to work: the same, but with every
  BatchNorm layer of the backbone kept frozen (``trainable=False``, which in Keras 3 also
  runs it in inference mode) when the rest is unfrozen.
- ``fastai``: fastai's ``Learner.fine_tune(epochs=10, base_lr=2e-3, freeze_epochs=1,
  lr_mult=100, pct_start=0.3, div=5.0)`` on ``vision_learner``'s defaults, in Keras:
  fastai's head (concatenated average and max pooling, BatchNorm, Dropout 0.25, Dense 512
  without bias, ReLU, BatchNorm, Dropout 0.5, Dense without bias); ``aug_transforms``
  (flip, rotation up to 10 degrees, zoom up to 1.1, brightness and contrast 0.2; its warp
  left out: Keras has no perspective layer); Adam with decoupled weight decay 0.01 (fastai's
  ``true_wd``) and eps 1e-5; one epoch with the backbone frozen except its BatchNorm layers
  (fastai's ``train_bn``) at one-cycle up to 2e-3 (warmup 99% of the steps), then
  everything at one-cycle up to 1e-3 (warmup 30%, starting at the peak / 5) with
  discriminative rates over fastai's three groups (first half of the backbone's blocks,
  second half, head) spread geometrically from 1e-5 to 1e-3. BatchNorm layers update their
  statistics at PyTorch's rate (momentum 0.1, Keras's 0.9; with Keras's 0.99 the moving
  statistics trail the training ones and validation accuracy stayed near 0.35 on digits).
  Momentum is not cycled (a Keras optimizer's beta_1 is fixed once traced). The last
  epoch's weights are tested.

    python benchmarks/references.py --input-size 160 --results benchmarks/results/references.csv \
        --data /work/shared/data/images/oxford_flowers12 /tmp/tlkit-sets/flowers12-64 \
               /tmp/tlkit-sets/digits
    python benchmarks/defaults_check.py --set input_size=160 --data ... (the same sets)
    python benchmarks/references.py --summary benchmarks/results/defaults_check.csv

``--summary`` writes one row per set into benchmarks/RESULTS.md (its own section, replaced
on each call): test accuracy and training time of tlkit's default (from the check CSV that
``defaults_check.py`` writes), of each reference, and of the run's linear probe.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlkit.backbones import get_backbone
from tlkit.data.images import check_images, read_recipe_table
from tlkit.files import write_text
from tlkit.recipes import ImageRecipe

BATCH = 32  # tlkit's default batch; fastai's default is 64, the guide's 64


def split_table(data: str, seed: int = 42) -> tuple[pd.DataFrame, list[str]]:
    """tlkit's default recipe's split of ``data`` (columns path, label, split) and classes."""
    recipe = ImageRecipe(backbone="efficientnet_lite0", data=data, seed=seed)
    images = check_images(recipe, read_recipe_table(recipe))
    return images.table, images.class_names


def image_dataset(frame: pd.DataFrame, classes: list[str], size: int, shuffle: bool,
                  seed: int) -> Any:
    """Decoded, resized RGB 0-255 images and class ids, batched (Keras's loading recipe)."""
    import tensorflow as tf

    ids = [classes.index(label) for label in frame["label"]]
    data = tf.data.Dataset.from_tensor_slices((frame["path"].tolist(), ids))
    if shuffle:
        data = data.shuffle(len(frame), seed=seed, reshuffle_each_iteration=True)

    def load(path: Any, label: Any) -> tuple[Any, Any]:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return tf.image.resize(image, (size, size)), label

    return data.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH).prefetch(2)


def _backbone(size: int) -> Any:
    import keras

    from tlkit.weights import build_weighted_backbone

    row = get_backbone("efficientnet_lite0")
    backbone = build_weighted_backbone(row.name, size, "imagenet")
    rescale = keras.layers.Rescaling(1 / 128, offset=-127 / 128)  # Lite0's own preprocessing
    return backbone, rescale


def keras_guide(streams: dict[str, Any], classes: int, size: int,
                bn_frozen: bool = False) -> Any:
    """The Keras guide's end-to-end example: frozen head training, then all at 1e-5
    (``bn_frozen``: the backbone's BatchNorm layers stay frozen, as the guide intends)."""
    import keras

    backbone, rescale = _backbone(size)
    augment = keras.Sequential([keras.layers.RandomFlip("horizontal"),
                                keras.layers.RandomRotation(0.1)])
    backbone.trainable = False
    inputs = keras.Input((size, size, 3))
    x = backbone(rescale(augment(inputs)), training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    model = keras.Model(inputs, keras.layers.Dense(classes)(x))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(), loss=loss, metrics=["accuracy"])
    model.fit(streams["train"], epochs=20, validation_data=streams["val"], verbose=2)
    backbone.trainable = True
    for layer in backbone.layers if bn_frozen else []:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss=loss, metrics=["accuracy"])
    model.fit(streams["train"], epochs=10, validation_data=streams["val"], verbose=2)
    return model


def _one_cycle(peak: float, steps: int, warmup: float, div: float) -> Any:
    """fastai's one-cycle rate in Keras: from peak/div up to peak, then cosine down."""
    import keras

    warm = max(1, int(steps * warmup))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak / div, decay_steps=max(1, steps - warm), alpha=1e-5 * div,
        warmup_target=peak, warmup_steps=warm)


def _group_adamw(groups: dict[str, float], schedule: Any) -> Any:
    """AdamW whose rate is scaled per variable (fastai's parameter groups)."""
    import keras

    from tlkit.keras_internals import optimizer_variable_index

    class GroupAdamW(keras.optimizers.AdamW):
        def build(self, variables: list[Any]) -> None:
            super().build(variables)
            self.scales = [groups.get(v.path, 1.0) for v in variables]

        def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> Any:
            # update_step sees the backend's variable: find it by its index (Keras's own map)
            scale = self.scales[optimizer_variable_index(self, variable)]
            return super().update_step(gradient, variable, learning_rate * scale)

    return GroupAdamW(learning_rate=schedule, weight_decay=0.01, epsilon=1e-5)


def fastai_fine_tune(streams: dict[str, Any], classes: int, size: int, epochs: int = 10
                     ) -> Any:
    """fastai's ``fine_tune``: one frozen epoch (BatchNorm training), then all, one-cycle."""
    import keras

    backbone, rescale = _backbone(size)
    augment = keras.Sequential([
        keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(10 / 360),
        keras.layers.RandomZoom((-0.1, 0.0)), keras.layers.RandomBrightness(0.2),
        keras.layers.RandomContrast(0.2)])
    inputs = keras.Input((size, size, 3))
    features = backbone(rescale(augment(inputs)))
    x = keras.layers.Concatenate()([keras.layers.GlobalMaxPooling2D()(features),
                                    keras.layers.GlobalAveragePooling2D()(features)])
    x = keras.layers.Dropout(0.25)(keras.layers.BatchNormalization()(x))
    x = keras.layers.Dense(512, use_bias=False, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(keras.layers.BatchNormalization()(x))
    model = keras.Model(inputs, keras.layers.Dense(classes, use_bias=False)(x))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    steps = int(streams["train"].cardinality())
    for layer in [*backbone.layers, *model.layers]:  # PyTorch's BatchNorm momentum 0.1
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    for layer in backbone.layers:  # freeze(): the body, except its BatchNorm layers
        layer.trainable = isinstance(layer, keras.layers.BatchNormalization)
    model.compile(optimizer=_group_adamw({}, _one_cycle(2e-3, steps, 0.99, 25.0)), loss=loss,
                  metrics=["accuracy"])
    model.fit(streams["train"], epochs=1, validation_data=streams["val"], verbose=2)
    for layer in backbone.layers:  # unfreeze()
        layer.trainable = True
    model.compile(optimizer=_group_adamw(_fastai_groups(backbone, 1e-3, 100.0),
                                         _one_cycle(1e-3, steps * epochs, 0.3, 5.0)),
                  loss=loss, metrics=["accuracy"])
    model.fit(streams["train"], epochs=epochs, validation_data=streams["val"], verbose=2)
    return model


def _fastai_groups(backbone: Any, peak: float, lr_mult: float) -> dict[str, float]:
    """Rate factors of ``slice(peak / lr_mult, peak)`` over fastai's three groups: the first
    half of the backbone's layers, the second half (the head keeps factor 1)."""
    factors = np.geomspace(1 / lr_mult, 1.0, 3)
    layers = backbone.layers
    groups = {}
    for index, layer in enumerate(layers):
        factor = factors[0] if index < len(layers) // 2 else factors[1]
        for variable in layer.trainable_weights:
            groups[variable.path] = float(factor)
    return groups


ARMS: dict[str, Callable[..., Any]] = {
    "keras-guide": keras_guide,
    "keras-guide-bn-frozen": lambda *args: keras_guide(*args, bn_frozen=True),
    "fastai": fastai_fine_tune,
}


def run_arm(arm: str, data: str, size: int, seed: int) -> dict[str, Any]:
    """Train one reference on ``data`` and score its last epoch on test."""
    import keras

    keras.utils.set_random_seed(seed)
    table, classes = split_table(data, seed)
    streams = {split: image_dataset(table[table["split"] == split], classes, size,
                                    shuffle=split == "train", seed=seed)
               for split in ("train", "val", "test")}
    start = time.perf_counter()
    model = ARMS[arm](streams, len(classes), size)
    seconds = time.perf_counter() - start
    scores = {split: model.evaluate(streams[split], verbose=0, return_dict=True)["accuracy"]
              for split in ("val", "test")}
    return {"data": Path(data).name, "arm": arm, "input_size": size, "seed": seed,
            "n_train": int((table["split"] == "train").sum()),
            "val_accuracy": round(scores["val"], 4), "test_accuracy": round(scores["test"], 4),
            "train_seconds": round(seconds, 1)}


SECTION = ("## Fine-tuning: tlkit's default against plain-Keras references "
           "(`benchmarks/references.py`)")


def summary_table(check: pd.DataFrame, references: pd.DataFrame) -> str:
    """One markdown row per set: tlkit's default, each reference and the probe (test
    accuracy, training seconds).

    Example:
        >>> check = pd.DataFrame({"data": ["d"], "candidate": ["default input_size=160"],
        ...     "run_test": [0.9], "probe_test": [0.8], "train_seconds": [10.0]})
        >>> refs = pd.DataFrame({"data": ["d"], "arm": ["fastai"], "input_size": [160],
        ...                      "test_accuracy": [0.85], "train_seconds": [20.0]})
        >>> print(summary_table(check, refs).splitlines()[-1])
        | d | 0.900 (10 s) | 0.850 (20 s) | 0.800 |
    """
    if "seed" in references:  # the check runs at the recipe's seed; other seeds: their own table
        references = references[references["seed"].fillna(ImageRecipe().seed) == ImageRecipe().seed]
    arms = list(dict.fromkeys(references["arm"]))
    lines = ["| set | tlkit default | " + " | ".join(arms) + " | linear probe |",
             "|---" * (len(arms) + 3) + "|"]
    defaults = check[check["candidate"].str.startswith("default")].drop_duplicates(
        "data", keep="last")
    for row in defaults.itertuples():
        cells = [f"{row.run_test:.3f} ({row.train_seconds:.0f} s)"]
        for arm in arms:
            hit = references[(references["data"] == row.data) & (references["arm"] == arm)]
            cells.append("" if hit.empty else f"{hit.iloc[-1].test_accuracy:.3f} "
                         f"({hit.iloc[-1].train_seconds:.0f} s)")
        lines.append(f"| {row.data} | " + " | ".join(cells) + f" | {row.probe_test:.3f} |")
    return "\n".join(lines)


def seeds_table(check: pd.DataFrame, references: pd.DataFrame, arm: str) -> str:
    """Test accuracy over seeds (each seed its own split, shared by every arm): one markdown
    row per set with the mean, the standard deviation and each seed's value, for tlkit's
    default, the reference ``arm`` and the probe; only seeds every one of them ran.

    Example:
        >>> check = pd.DataFrame({"data": ["d", "d"], "candidate": ["default", "default seed=1"],
        ...                       "run_test": [0.9, 0.8], "probe_test": [0.7, 0.7]})
        >>> refs = pd.DataFrame({"data": ["d", "d"], "arm": ["g", "g"], "seed": [None, 1],
        ...                      "test_accuracy": [0.85, 0.85]})
        >>> seeds_table(check, refs, "g").splitlines()[-1].split(" | ")[1:3]
        ['42, 1', '0.850 ± 0.071 (0.900, 0.800)']
    """
    seed = ImageRecipe().seed
    ours = check[check["candidate"].str.startswith("default")].assign(
        seed=lambda t: t["candidate"].str.extract(r"seed=(\d+)", expand=False)
        .fillna(seed).astype(int))
    theirs = references[references["arm"] == arm].assign(
        seed=lambda t: (t["seed"] if "seed" in t else pd.Series(seed, index=t.index))
        .fillna(seed).astype(int))
    lines = [f"| set | seeds | tlkit default | {arm} | linear probe |", "|---" * 5 + "|"]
    for data, mine in ours.groupby("data", sort=False):
        both = mine.merge(theirs[theirs["data"] == data], on="seed", suffixes=("", "_ref"))
        if both.empty:
            continue
        cells = [_spread(both[column]) for column in ("run_test", "test_accuracy", "probe_test")]
        lines.append(f"| {data} | {', '.join(map(str, both['seed']))} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines)


def _spread(values: pd.Series) -> str:
    each = ", ".join(f"{value:.3f}" for value in values)
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f} ({each})"


def write_summary(table: str, note: str, path: Path) -> None:
    """Put ``table`` under this script's section of ``path``, replacing an earlier one."""
    parts = re.split(r"(?m)^(?=## )", path.read_text())
    kept = [part for part in parts if not part.startswith(SECTION)]
    section = f"{SECTION}\n\n{note}\n\n{table}\n\n"
    write_text(path, "".join(kept).rstrip("\n") + "\n\n" + section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=[], help="image folders, read in place")
    parser.add_argument("--summary", help="a defaults_check.py CSV: write the RESULTS.md rows")
    parser.add_argument("--note", default="", help="the paragraph above the summary table")
    parser.add_argument("--seeds", nargs=2, metavar=("CHECK_CSV", "REFERENCES_CSV"),
                        help="with --summary: other seeds' rows; adds a table over seeds")
    parser.add_argument("--seeds-note", default="", help="the paragraph above that table")
    parser.add_argument("--arm", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--results", default="benchmarks/results/references.csv")
    args = parser.parse_args()
    results = Path(args.results)
    if args.summary:
        check, references = pd.read_csv(args.summary), pd.read_csv(results)
        table = summary_table(check, references)
        if args.seeds:
            table += f"\n\n{args.seeds_note}\n\n" + seeds_table(
                pd.concat([check, pd.read_csv(args.seeds[0])]),
                pd.concat([references, pd.read_csv(args.seeds[1])]), "keras-guide-bn-frozen")
        write_summary(table, args.note, Path(__file__).parent / "RESULTS.md")
        print(table)
        return
    for data in args.data:
        for arm in args.arm:
            row = run_arm(arm, data, args.input_size, args.seed)
            print(row, flush=True)
            old = pd.read_csv(results) if results.is_file() else pd.DataFrame()
            if len(old):
                seeds = old["seed"].fillna(42) if "seed" in old else 42  # older rows: 42
                old = old[~((old["data"] == row["data"]) & (old["arm"] == row["arm"])
                            & (old["input_size"] == row["input_size"]) & (seeds == args.seed))]
            results.parent.mkdir(parents=True, exist_ok=True)
            pd.concat([old, pd.DataFrame([row])], ignore_index=True).to_csv(results, index=False)


if __name__ == "__main__":
    main()
