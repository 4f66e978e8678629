"""Multi-label classification on real data assembled from labelled parts: tlkit against plain
Keras, same splits, same process.

Two sets are built (seeded, deterministic) in ``--out``, never in the repository:

- **flower mosaics** from Oxford Flowers-12 (``images/oxford_flowers12``, 12 species): a 2x2
  grid at 224x224 (each tile a 112x112 resize of a 224x224 source image) holding 1 to 3
  flowers of distinct species, in random tiles; the other tiles are neutral grey (RGB 127,
  which Lite0's scaling maps to 0). Label set = the species shown. Split by *source image*:
  the source's test/ folder feeds test; its train/ folder, less the photos that repeat
  another under a second name (``duplicates``), is cut per species into val (12 images) and
  train (the rest, 30 to 48), so no source photo is in two splits.
- **TREC messages** (``text/trec``, Li & Roth 2002): 1 to 3 questions joined with a space;
  label set = the coarse types present (ABBR, DESC, ENTY, HUM, LOC, NUM). Every source
  question goes into exactly one message: train and dev messages from TREC train (cut 90/10
  by question), test messages from TREC test.

Arms, each timed from its data on disk to its scored model:

- images, tlkit: ``tlkit.finetune`` with the default recipe for the kind (EfficientNet-Lite0,
  ImageNet weights, one head stage trained on cached features, early stopping on val loss)
  and ``labels: multi``; plain Keras: the same backbone frozen (built by tlkit: Keras has no
  Lite0), features computed once with ``predict`` (the Keras guide's fast feature
  extraction), then Dropout(0.2) + Dense(sigmoid), binary cross-entropy, Adam (1e-3), batch 32,
  up to 100 epochs, EarlyStopping(val_loss, patience 10, best weights restored);
- text, tlkit: ``tlkit.train_textcnn`` with the default recipe (Kim's CNN-rand) and
  ``labels: multi``, ``--epochs`` epochs (25, the recipe's; best val binary accuracy kept);
  plain Keras: TextVectorization + Embedding(300) + Conv1D(100 maps, widths 3/4/5) +
  GlobalMaxPooling1D + Dropout(0.5) + Dense(sigmoid), BCE, Adadelta (1.0, rho 0.95) as Kim,
  batch 50, the same epochs, best val-loss epoch restored.

Thresholds: both arms decide with one threshold per class chosen on val to maximise that
class's F1 (tlkit inside the run; the reference here, from scikit-learn's
``precision_recall_curve``). Metrics for the reference come from scikit-learn; tlkit's from
its run's metrics.json (also scikit-learn). Test is scored once, after training.

    python benchmarks/multilabel.py --data /work/shared/data
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
TILE, GRID = 112, 2
GREY = 127
VAL_PER_SPECIES = 12
DUPLICATE = 1.0  # mean grey-level difference of 16x16 thumbnails below which two are one photo
TREC_TYPES = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]


# ---------------------------------------------------------------- assembling the sets


def duplicates(root: Path) -> set[Path]:
    """train/ images that repeat another source image: the source has 59 pairs of the same
    photo under two names (16x16 grey thumbnails differing by < 1 grey level on average;
    the next closest pair differs by 6), some across its train/test split. A train image that
    repeats a test image is dropped, and of repeats within train/ the first name is kept."""
    from PIL import Image

    paths = sorted(root.glob("test/*/*.jpg")) + sorted(root.glob("train/*/*.jpg"))
    thumbs = np.stack([np.asarray(Image.open(p).convert("L").resize((16, 16)), float).ravel()
                       for p in paths])
    dropped: set[Path] = set()
    for i, path in enumerate(paths):
        if path.parts[-3] == "train" and path not in dropped:
            earlier = np.abs(thumbs[:i] - thumbs[i]).mean(axis=1) < DUPLICATE
            if any(p not in dropped for p in np.asarray(paths, dtype=object)[:i][earlier]):
                dropped.add(path)
    return dropped


def species_sources(root: Path, seed: int) -> dict[str, dict[str, list[Path]]]:
    """{split: {species: source images}}: test from test/, train/ (without the photos that
    repeat another, ``duplicates``) cut into train and val."""
    rng = random.Random(seed)
    repeated = duplicates(root)
    sources: dict[str, dict[str, list[Path]]] = {"train": {}, "val": {}, "test": {}}
    for species in sorted(p.name for p in (root / "train").iterdir() if p.is_dir()):
        pool = [p for p in sorted((root / "train" / species).glob("*.jpg")) if p not in repeated]
        rng.shuffle(pool)
        sources["val"][species] = pool[:VAL_PER_SPECIES]
        sources["train"][species] = pool[VAL_PER_SPECIES:]
        sources["test"][species] = sorted((root / "test" / species).glob("*.jpg"))
    return sources


def make_mosaics(root: Path, out: Path, counts: dict[str, int], seed: int) -> Path:
    """Write ``counts[split]`` mosaics per split under ``out`` and their CSV; return the CSV."""
    from PIL import Image

    sources = species_sources(root, seed)
    rng = random.Random(seed + 1)
    rows = []
    for split, count in counts.items():
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        # Each species' sources are dealt in a shuffled cycle, so every source is used evenly.
        decks: dict[str, list[Path]] = {name: [] for name in sources[split]}
        for i in range(count):
            species = sorted(rng.sample(sorted(sources[split]), rng.randint(1, 3)))
            tiles = rng.sample(range(GRID * GRID), len(species))
            mosaic = Image.new("RGB", (GRID * TILE, GRID * TILE), (GREY, GREY, GREY))
            for name, tile in zip(species, tiles, strict=True):
                if not decks[name]:
                    decks[name] = rng.sample(sources[split][name], len(sources[split][name]))
                with Image.open(decks[name].pop()) as image:
                    part = image.convert("RGB").resize((TILE, TILE), Image.BILINEAR)
                mosaic.paste(part, ((tile % GRID) * TILE, (tile // GRID) * TILE))
            path = folder / f"{split}_{i:05d}.jpg"
            mosaic.save(path, quality=95)
            rows.append({"path": str(path.relative_to(out)), "label": "|".join(species),
                         "split": split})
    table = out / "mosaics.csv"
    _write_csv(table, rows, ["path", "label", "split"])
    return table


def make_messages(root: Path, out: Path, seed: int) -> dict[str, Path]:
    """TREC questions joined into messages of 1-3; one CSV per split (train, dev, test)."""
    rng = random.Random(seed)
    names = (root / "labels.txt").read_text(encoding="utf-8").split()
    read = {name: _read_trec(root / f"{name}.csv", names) for name in ("train", "test")}
    train = read["train"]
    rng.shuffle(train)
    cut = len(train) // 10
    parts = {"train": train[cut:], "dev": train[:cut], "test": read["test"]}
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, questions in parts.items():
        questions = list(questions)
        rng.shuffle(questions)
        rows = []
        while questions:
            take = [questions.pop() for _ in range(min(rng.randint(1, 3), len(questions)))]
            types = sorted({label for _, label in take}, key=TREC_TYPES.index)
            rows.append({"text": " ".join(text for text, _ in take), "label": "|".join(types)})
        files[split] = out / f"{split}.csv"
        _write_csv(files[split], rows, ["text", "label"])
    return files


def _read_trec(path: Path, names: list[str]) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [(row["text"], names[int(row["label"])]) for row in csv.DictReader(handle)]


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def indicator(sets: list[str], classes: list[str]) -> np.ndarray:
    """'a|b' strings -> a 0/1 matrix in ``classes`` order."""
    return np.array([[int(c in s.split("|")) for c in classes] for s in sets], dtype="float32")


# ---------------------------------------------------------------- scoring


def val_thresholds(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per class, the threshold with the best F1 on val (0.5 where val has one value only)."""
    from sklearn.metrics import precision_recall_curve

    chosen = []
    for c in range(y.shape[1]):
        if y[:, c].min() == y[:, c].max():
            chosen.append(0.5)
            continue
        precision, recall, limits = precision_recall_curve(y[:, c], p[:, c])
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        chosen.append(float(limits[int(np.argmax(f1[:-1]))]))
    return np.array(chosen)


def sklearn_scores(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """mAP (macro over classes with a positive, micro), micro-F1, subset accuracy."""
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score

    has = y.sum(axis=0) > 0
    predicted = (p >= thresholds).astype(int)
    return {"mAP_macro": float(average_precision_score(y[:, has], p[:, has], average="macro")),
            "mAP_micro": float(average_precision_score(y, p, average="micro")),
            "micro_f1": float(f1_score(y, predicted, average="micro", zero_division=0)),
            "subset_accuracy": float(accuracy_score(y, predicted))}


def tlkit_scores(metrics: dict[str, Any]) -> dict[str, float]:
    """The same four numbers from a tlkit run's metrics.json split."""
    ap = metrics["average_precision"]
    return {"mAP_macro": float(ap["macro"]), "mAP_micro": float(ap["micro"]),
            "micro_f1": float(metrics["micro_f1"]),
            "subset_accuracy": float(metrics["subset_accuracy"])}


def _row(dataset: str, arm: str, seconds: float, val: dict, test: dict, **note: Any) -> dict:
    return {"dataset": dataset, "arm": arm, "train_seconds": round(seconds, 1),
            **{f"val_{k}": round(v, 4) for k, v in val.items()},
            **{f"test_{k}": round(v, 4) for k, v in test.items()}, **note}


# ---------------------------------------------------------------- images


def images_tlkit(table: Path, out: Path, seed: int, probe: bool = True) -> dict[str, Any]:
    """tlkit's default image recipe with ``labels: multi`` (``probe: false`` to time it
    without the one-vs-rest logistic-regression probe the default fits beside the head)."""
    from tlkit import ImageRecipe, finetune

    recipe = ImageRecipe(backbone="efficientnet_lite0", data=str(table), labels="multi",
                         seed=seed, probe=probe)
    start = time.perf_counter()
    run = finetune(recipe, out=out, name="mosaics-tlkit" + ("" if probe else "-no-probe"))
    seconds = time.perf_counter() - start
    epochs = sum(1 for _ in (run.path / "history.csv").open(encoding="utf-8")) - 1
    found = run.metrics.get("probe") or {}
    return _row("flower mosaics", "tlkit" if probe else "tlkit, probe: false", seconds,
                tlkit_scores(run.metrics["val"]), tlkit_scores(run.metrics["test"]),
                run=str(run.path), epochs=epochs, probe_seconds=found.get("fit_seconds"),
                probe_val_mAP=found.get("val"), probe_test_mAP=found.get("test"),
                thresholds=[round(t, 3) for t in run.metrics["val"]["thresholds"]])


def images_keras(table: Path, seed: int) -> dict[str, Any]:
    import keras
    import pandas as pd

    from tlkit.backbones import build_backbone

    frame = pd.read_csv(table)
    classes = sorted({c for s in frame["label"] for c in s.split("|")})
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    backbone = build_backbone("efficientnet_lite0", 224, weights="imagenet")
    extractor = keras.Sequential([backbone, keras.layers.GlobalAveragePooling2D()])
    features, targets = {}, {}
    for split in ("train", "val", "test"):
        rows = frame[frame["split"] == split]
        pixels = np.stack([keras.utils.img_to_array(keras.utils.load_img(table.parent / p))
                           for p in rows["path"]])
        features[split] = extractor.predict((pixels - 127.0) / 128.0, batch_size=32, verbose=0)
        targets[split] = indicator(rows["label"].tolist(), classes)
    head = keras.Sequential([keras.Input((features["train"].shape[1],)),
                             keras.layers.Dropout(0.2),
                             keras.layers.Dense(len(classes), activation="sigmoid")])
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    history = head.fit(features["train"], targets["train"], batch_size=32, epochs=100,
                       validation_data=(features["val"], targets["val"]), verbose=0,
                       callbacks=[keras.callbacks.EarlyStopping(
                           patience=10, restore_best_weights=True)])
    seconds = time.perf_counter() - start
    return _score_reference("flower mosaics", head, features, targets, seconds,
                            epochs=len(history.history["loss"]))


def _score_reference(dataset: str, model: Any, inputs: dict, targets: dict, seconds: float,
                     **note: Any) -> dict[str, Any]:
    probs = {split: model.predict(inputs[split], batch_size=256, verbose=0)
             for split in ("val", "test")}
    limits = val_thresholds(targets["val"], probs["val"])
    return _row(dataset, "plain Keras", seconds, sklearn_scores(targets["val"], probs["val"],
                                                                limits),
                sklearn_scores(targets["test"], probs["test"], limits), **note,
                thresholds=[round(float(t), 3) for t in limits])


# ---------------------------------------------------------------- text


def text_tlkit(files: dict[str, Path], out: Path, epochs: int, seed: int) -> dict[str, Any]:
    from tlkit import TextCNNRecipe, train_textcnn

    recipe = TextCNNRecipe(data=str(files["train"]), dev=str(files["dev"]),
                           test=str(files["test"]), labels="multi", epochs=epochs, seed=seed)
    start = time.perf_counter()
    run = train_textcnn(recipe, out=out, name="trec-messages-tlkit")
    seconds = time.perf_counter() - start
    return _row("TREC messages", "tlkit", seconds, tlkit_scores(run.metrics["val"]),
                tlkit_scores(run.metrics["test"]), run=str(run.path), epochs=epochs,
                thresholds=[round(t, 3) for t in run.metrics["val"]["thresholds"]])


def text_keras(files: dict[str, Path], epochs: int, seed: int) -> dict[str, Any]:
    import keras
    import pandas as pd

    keras.utils.set_random_seed(seed)
    read = {split: pd.read_csv(path, keep_default_na=False) for split, path in files.items()}
    start = time.perf_counter()
    texts = {("val" if s == "dev" else s): np.array(t["text"].tolist()) for s, t in read.items()}
    targets = {("val" if s == "dev" else s): indicator(t["label"].tolist(), TREC_TYPES)
               for s, t in read.items()}
    longest = max(len(t.split()) for t in texts["train"])
    vectorize = keras.layers.TextVectorization(output_sequence_length=longest)
    vectorize.adapt(texts["train"])
    ids = {split: vectorize(t) for split, t in texts.items()}
    inputs = keras.Input((longest,), dtype="int64")
    embedded = keras.layers.Embedding(vectorize.vocabulary_size(), 300)(inputs)
    pooled = [keras.layers.GlobalMaxPooling1D()(
        keras.layers.Conv1D(100, width, activation="relu")(embedded)) for width in (3, 4, 5)]
    features = keras.layers.Dropout(0.5)(keras.layers.Concatenate()(pooled))
    model = keras.Model(inputs, keras.layers.Dense(len(TREC_TYPES), activation="sigmoid")(
        features))
    model.compile(optimizer=keras.optimizers.Adadelta(1.0, rho=0.95, epsilon=1e-6),
                  loss="binary_crossentropy")
    model.fit(ids["train"], targets["train"], batch_size=50, epochs=epochs, verbose=0,
              validation_data=(ids["val"], targets["val"]),
              callbacks=[keras.callbacks.EarlyStopping(patience=epochs,
                                                       restore_best_weights=True)])
    seconds = time.perf_counter() - start
    return _score_reference("TREC messages", model, ids, targets, seconds, epochs=epochs)


# ---------------------------------------------------------------- output

COLUMNS = ["train_seconds", "val_mAP_macro", "val_mAP_micro", "val_micro_f1",
           "val_subset_accuracy", "test_mAP_macro", "test_mAP_micro", "test_micro_f1",
           "test_subset_accuracy"]


def markdown(rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table, one row per dataset and arm."""
    head = ["set", "arm", "train s", "val mAP macro", "val mAP micro", "val micro-F1",
            "val subset acc", "test mAP macro", "test mAP micro", "test micro-F1",
            "test subset acc"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        cells = [row["dataset"], row["arm"], *(f"{row[c]:.3f}" if c != "train_seconds"
                                               else f"{row[c]:.0f}" for c in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(table: Path, files: dict[str, Path]) -> dict[str, Any]:
    """Sizes and label cardinality of the assembled sets."""
    import pandas as pd

    info: dict[str, Any] = {}
    if table:
        frame = pd.read_csv(table)
        info["flower mosaics"] = {
            split: {"n": int((frame["split"] == split).sum()),
                    "labels_per_example": round(float(frame.loc[frame["split"] == split, "label"]
                                                      .str.count(r"\|").add(1).mean()), 3)}
            for split in ("train", "val", "test")}
    if files:
        info["TREC messages"] = {}
        for split, path in files.items():
            frame = pd.read_csv(path, keep_default_na=False)
            info["TREC messages"][split] = {
                "n": len(frame),
                "labels_per_example": round(float(frame["label"].str.count(r"\|").add(1)
                                                  .mean()), 3)}
    return info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path,
                        help="folder holding images/oxford_flowers12 and text/trec")
    parser.add_argument("--out", type=Path, default=None,
                        help="assembled sets and run folders (default: a temp folder)")
    parser.add_argument("--only", nargs="*", default=["images", "text"],
                        choices=["images", "text"])
    parser.add_argument("--mosaics", type=int, nargs=3, default=[1200, 300, 300],
                        metavar=("TRAIN", "VAL", "TEST"), help="mosaics per split")
    parser.add_argument("--epochs", type=int, default=25,
                        help="text: epochs of both arms (25: Kim's, the recipe default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=HERE / "results" / "multilabel.json")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="tlkit-multilabel-"))
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python benchmarks/multilabel.py", *(argv if argv is not None
                                                            else sys.argv[1:])])
    rows: list[dict[str, Any]] = []
    table, files = None, {}
    started = datetime.now(timezone.utc)
    if "images" in args.only:
        table = make_mosaics(args.data / "images" / "oxford_flowers12", out / "mosaics",
                             dict(zip(("train", "val", "test"), args.mosaics, strict=True)),
                             args.seed)
        print(f"mosaics: {table}", flush=True)
        rows.append(images_keras(table, args.seed))
        print(markdown(rows), flush=True)
        for probe in (True, False):
            rows.append(images_tlkit(table, out / "runs", args.seed, probe))
            print(markdown(rows), flush=True)
    if "text" in args.only:
        files = make_messages(args.data / "text" / "trec", out / "trec-messages", args.seed)
        print(f"messages: {files['train'].parent}", flush=True)
        rows.append(text_keras(files, args.epochs, args.seed))
        print(markdown(rows), flush=True)
        rows.append(text_tlkit(files, out / "runs", args.epochs, args.seed))
        print(markdown(rows), flush=True)
    return write(args, rows, command, started, out, describe(table, files))


def write(args: argparse.Namespace, rows: list[dict[str, Any]], command: str,
          started: datetime, out: Path, sets: dict[str, Any]) -> dict[str, Any]:
    """The JSON (with the markdown table in it); print the command that reproduces it."""
    import keras
    import tensorflow as tf

    result = {"command": command, "started": started.isoformat(timespec="seconds"),
              "seconds": round((datetime.now(timezone.utc) - started).total_seconds(), 1),
              "out": str(out), "seed": args.seed, "mosaics": args.mosaics,
              "text_epochs": args.epochs, "sets": sets, "rows": rows,
              "table": markdown(rows),
              "machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "tensorflow": tf.__version__, "keras": keras.__version__}}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"\n{markdown(rows)}\n\nwrote {args.results}\nreproduce: {command}")
    return result


if __name__ == "__main__":
    main()
