"""Kim CNN-rand (tlkit's recipe) against a plain Keras Kim CNN: 5 seeds on SST-2, CR and Subj.

Both arms get the same rows. SST-2 uses its own train/dev/test files (the same for every
seed); CR and Subj (one ``all.csv`` each) get, per seed, one stratified 90/10 train/test
split, and 10% of the train part (stratified, same seed) as dev. Not the paper's 10-fold
cross-validation: one split per seed, so the spread over seeds includes the split's.

- ``tlkit``: ``recipes/kim2014-cnn-rand.yaml`` through ``tlkit.train.text.train_textcnn``
  (Kim's hyperparameters, Adadelta, 25 epochs, the best dev-accuracy epoch kept), with the
  split's train/dev/test files as ``data``/``dev``/``test``.
- ``keras``: Kim's architecture (Embedding 300-d, Conv1D widths 3/4/5 x 100 ReLU,
  GlobalMaxPooling1D, Concatenate, Dropout 0.5, Dense softmax) trained the way the Keras
  example "Text classification from scratch" (keras.io/examples/nlp/
  text_classification_from_scratch, Omernick and Chollet) trains its Conv1D model:
  ``TextVectorization`` with its default standardisation (lower case, punctuation
  stripped), ``max_tokens=20000`` and one fixed ``output_sequence_length`` (here the
  longest training text, so nothing is cut), ``Embedding`` with Keras's default
  initialiser, ``optimizer="adam"`` (rate 1e-3), batch 32, 3 epochs with the dev set as
  ``validation_data``, and the model of the last epoch scored on test. Kim's architecture
  replaces the example's two strided Conv1D layers and hidden Dense; nothing else changes.

Each run's test accuracy and training seconds (``fit`` only) go to
``benchmarks/results/kim_reference.csv`` (rows of the same set, arm, seed and ``--label``
are replaced); the script prints mean +- std (sample std, ddof 1) per set, arm and label.

    nice -n 5 python benchmarks/kim_reference.py --data /work/shared/data/text
    nice -n 5 python benchmarks/kim_reference.py --data /work/shared/data/text \\
        --only cr --arms tlkit --seeds 0 1 --set lr=0.5 --label lr0.5
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.model_selection import train_test_split

RECIPE = Path(__file__).parent.parent / "recipes" / "kim2014-cnn-rand.yaml"
RESULTS = Path(__file__).parent / "results" / "kim_reference.csv"
SETS = ("sst2", "cr", "subj")
ARMS = ("tlkit", "keras")
KEY = ["set", "arm", "label", "seed", "scored"]
KERAS_LABEL = "plain Keras (keras.io example)"


def splits(name: str, root: Path, seed: int) -> dict[str, pd.DataFrame]:
    """The train, dev and test tables of one set for one seed (the same for both arms).

    Example:
        >>> tables = splits("cr", Path("/work/shared/data/text"), 0)  # doctest: +SKIP
        >>> sorted(tables)  # doctest: +SKIP
        ['dev', 'test', 'train']
    """
    folder = root / name
    if (folder / "train.csv").is_file():
        return {split: pd.read_csv(folder / f"{split}.csv") for split in ("train", "dev", "test")}
    table = pd.read_csv(folder / "all.csv")
    rest, test = train_test_split(table, test_size=0.1, stratify=table["label"],
                                  random_state=seed)
    train, dev = train_test_split(rest, test_size=0.1, stratify=rest["label"],
                                  random_state=seed)
    return {"train": train, "dev": dev, "test": test}


def dev_protocol(tables: dict[str, pd.DataFrame], seed: int) -> dict[str, pd.DataFrame]:
    """Tables for choosing a change without the test split: the dev split is scored as
    test, and 10% of train (stratified, ``seed``) is the dev set that picks the epoch.

    Example:
        >>> table = pd.DataFrame({"text": list("abcdefghijklmnopqrst"), "label": [0, 1] * 10})
        >>> parts = dev_protocol({"train": table, "dev": table[:4], "test": table[:2]}, 0)
        >>> {split: len(part) for split, part in parts.items()}
        {'train': 18, 'dev': 2, 'test': 4}
    """
    train, dev = train_test_split(tables["train"], test_size=0.1,
                                  stratify=tables["train"]["label"], random_state=seed)
    return {"train": train, "dev": dev, "test": tables["dev"]}


def run_tlkit(tables: dict[str, pd.DataFrame], seed: int, work: Path,
              overrides: list[str]) -> dict[str, Any]:
    """tlkit's CNN-rand recipe on the tables: test accuracy, dev accuracy, fit seconds."""
    from tlkit.recipes import load_recipe
    from tlkit.train.text import train_textcnn

    files = {}
    for split, table in tables.items():
        files[split] = work / f"{split}.csv"
        table.to_csv(files[split], index=False)
    recipe = load_recipe(RECIPE, [f"data={files['train']}", f"dev={files['dev']}",
                                  f"test={files['test']}", f"seed={seed}", *overrides])
    run = train_textcnn(recipe, out=work / "runs", name=f"seed{seed}")
    return {"test_accuracy": run.metrics["test"]["accuracy"],
            "dev_accuracy": run.metrics.get("val", {}).get("accuracy"),
            "train_seconds": run.metrics["train_seconds"]}


def reference_model(vectorizer: Any, num_classes: int) -> Any:
    """Kim's CNN-rand layers, compiled as the Keras example compiles its model."""
    import keras

    ids = keras.Input(shape=(None,), dtype="int64")
    embedded = keras.layers.Embedding(vectorizer.vocabulary_size(), 300)(ids)
    branches = [keras.layers.GlobalMaxPooling1D()(
        keras.layers.Conv1D(100, width, activation="relu")(embedded)) for width in (3, 4, 5)]
    features = keras.layers.Dropout(0.5)(keras.layers.Concatenate()(branches))
    outputs = keras.layers.Dense(num_classes, activation="softmax")(features)
    model = keras.Model(ids, outputs)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam",
                  metrics=["accuracy"])
    return model


def run_keras(tables: dict[str, pd.DataFrame], seed: int) -> dict[str, Any]:
    """The plain Keras Kim CNN on the tables: test accuracy, dev accuracy, fit seconds."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    texts = {split: table["text"].astype(str).to_numpy() for split, table in tables.items()}
    classes = sorted(tables["train"]["label"].unique().tolist())
    labels = {split: table["label"].map(classes.index).to_numpy("int64")
              for split, table in tables.items()}
    longest = max(len(text.split()) for text in texts["train"])
    vectorizer = keras.layers.TextVectorization(max_tokens=20000, output_mode="int",
                                                output_sequence_length=longest)
    vectorizer.adapt(texts["train"])
    ids = {split: np.asarray(vectorizer(values)) for split, values in texts.items()}
    model = reference_model(vectorizer, len(classes))
    start = time.perf_counter()
    history = model.fit(ids["train"], labels["train"], batch_size=32, epochs=3,
                        validation_data=(ids["dev"], labels["dev"]), verbose=2)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(ids["test"], labels["test"], batch_size=256, verbose=0)
    return {"test_accuracy": accuracy, "dev_accuracy": history.history["val_accuracy"][-1],
            "train_seconds": seconds}


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean +- std (in points), runs and mean fit seconds per set, arm and label.

    Example:
        >>> rows = pd.DataFrame({"set": ["cr"] * 2, "arm": ["keras"] * 2, "label": ["a"] * 2,
        ...                      "seed": [0, 1], "test_accuracy": [0.8, 0.82],
        ...                      "train_seconds": [10.0, 12.0]})
        >>> print(summary(rows)[["mean", "std", "runs", "train_s"]].to_string(index=False))
         mean  std  runs  train_s
         81.0 1.41     2     11.0
    """
    grouped = rows.groupby(["set", "arm", "label"], sort=False)
    table = grouped.agg(mean=("test_accuracy", "mean"), std=("test_accuracy", "std"),
                        runs=("seed", "count"), train_s=("train_seconds", "mean")).reset_index()
    table[["mean", "std"]] = (100 * table[["mean", "std"]]).round(2)
    table["train_s"] = table["train_s"].round(1)
    return table


def markdown(table: pd.DataFrame) -> str:
    """The summary as the markdown table RESULTS.md and docs/textcnn_accuracy.md show.

    Example:
        >>> table = pd.DataFrame({"set": ["cr"], "arm": ["keras"], "label": ["keras example"],
        ...                       "mean": [81.0], "std": [1.41], "runs": [2], "train_s": [11.0]})
        >>> print(markdown(table))
        | set | arm | runs | test accuracy, mean ± std | mean train s |
        | --- | --- | --- | --- | --- |
        | cr | keras example | 2 | 81.00 ± 1.41 | 11.0 |
    """
    lines = ["| set | arm | runs | test accuracy, mean ± std | mean train s |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.set} | {r.label} | {r.runs} | {r.mean:.2f} ± {r.std:.2f} | {r.train_s:.1f} |"
              for r in table.itertuples()]
    return "\n".join(lines)


def _merge(rows: list[dict[str, Any]], path: Path) -> pd.DataFrame:
    """Replace rows of the same set, arm, label and seed in ``path``; keep the others."""
    new = pd.DataFrame(rows)
    if path.is_file():
        old = pd.read_csv(path)
        if "scored" not in old:  # rows written before --score-on existed
            old["scored"] = "test"
        keys = set(map(tuple, new[KEY].astype(str).to_numpy()))
        kept = old[[tuple(r) not in keys for r in old[KEY].astype(str).to_numpy()]]
        new = pd.concat([kept, new], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    new.to_csv(path, index=False)
    return new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="folder holding sst2/ cr/ subj/")
    parser.add_argument("--only", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides of tlkit's recipe")
    parser.add_argument("--label", default="tlkit kim2014-cnn-rand",
                        help="names the tlkit variant in the CSV")
    parser.add_argument("--score-on", choices=("test", "dev"), default="test",
                        help="dev: score the dev split, pick epochs on 10%% of train (ablations)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tlkit-kim-ref-") as work:
        for seed in args.seeds:  # seed-major: a cut-short run still covers every set
            for name in args.only:
                tables = splits(name, args.data, seed)
                if args.score_on == "dev":
                    tables = dev_protocol(tables, seed)
                for arm in args.arms:
                    folder = Path(work) / f"{name}-{arm}-{seed}"
                    folder.mkdir()
                    result = (run_tlkit(tables, seed, folder, args.set) if arm == "tlkit"
                              else run_keras(tables, seed))
                    tlkit = arm == "tlkit"
                    rows.append({"set": name, "arm": arm, "seed": seed,
                                 "scored": args.score_on,
                                 "label": args.label if tlkit else KERAS_LABEL, **result,
                                 "overrides": " ".join(args.set) if tlkit else "",
                                 "measured": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
                                 "load": round(os.getloadavg()[0], 1)})
                    table = _merge(rows, args.results)
                    print(summary(table).to_string(index=False), flush=True)
    print(markdown(summary(table[table["scored"] == args.score_on])))


if __name__ == "__main__":
    main()
