"""Run a Kim (2014) text CNN recipe: one train/dev/test run, or k-fold cross-validation.

Both write the same run folder as the image job (recipe, classes, model, history, metrics),
plus ``vocabulary.json``; cross-validation adds ``folds.csv`` with one row per fold and
keeps each fold's history in ``folds/<k>/``.

Example:
    >>> from tlkit.recipes import TextCNNRecipe
    >>> run = train_textcnn(TextCNNRecipe(data="trec/train.csv", test="trec/test.csv",
    ...                                   tokenizer="kim-cased"), out="runs")  # doctest: +SKIP
    >>> run.metrics["test"]["accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlkit.data.text import (
    TextData,
    TextSplit,
    kfold_splits,
    prepare_text_data,
    read_text_table,
    text_dataset,
)
from tlkit.errors import UserError
from tlkit.evaluation.metrics import classification_metrics
from tlkit.recipes import Stage, TextCNNRecipe, dump_recipe
from tlkit.runs import (
    CLASSES_FILE,
    MODEL_FILE,
    RECIPE_FILE,
    new_run_folder,
    published_path,
    run_name,
    write_json,
)
from tlkit.train.fit import fit_stages, save_inference_model
from tlkit.train.run import Run

VOCABULARY_FILE = "vocabulary.json"


def read_recipe_tables(recipe: TextCNNRecipe) -> dict[str, pd.DataFrame]:
    """The recipe's train (``data``), dev and test tables, read with its columns and encoding."""
    if recipe.data is None:
        raise UserError("no data given; pass --data a CSV/TSV file, a folder of <class>.txt "
                        "files, or Kim's class files")
    tables = {"train": read_text_table(recipe.data, recipe.text_column, recipe.label_column,
                                       recipe.encoding)}
    for split in ("dev", "test"):
        source = getattr(recipe, split)
        if source is not None:
            tables[split] = read_text_table(source, recipe.text_column, recipe.label_column,
                                            recipe.encoding)
    return tables


def train_textcnn(recipe: TextCNNRecipe, out: str | Path = "runs", name: str | None = None
                  ) -> Run:
    """Train the recipe's text CNN and write a run folder; with ``recipe.cv``, cross-validate.

    Example:
        >>> run = train_textcnn(TextCNNRecipe(data="reviews.csv"), out="runs")  # doctest: +SKIP
    """
    if recipe.variant != "rand" and not recipe.vectors:
        raise UserError(f"variant '{recipe.variant}' needs pretrained word vectors: pass "
                        "--vectors FILE (word2vec .bin/.txt, GloVe .txt, fastText .vec)")
    tables = read_recipe_tables(recipe)
    if recipe.cv:
        return _cross_validate(recipe, tables, out, name)
    data = _prepare(recipe, tables["train"], tables.get("dev"), tables.get("test"))
    with new_run_folder(out, name or run_name(f"textcnn-{recipe.variant}")) as folder:
        result = _train_once(recipe, data, folder)
        _write_run_files(recipe, data, folder, result["model"], result["coverage"])
        metrics = {**result["metrics"], "train_seconds": result["seconds"],
                   "skipped_empty_texts": data.skipped, "vector_coverage": result["coverage"]}
        write_json(folder / "metrics.json", metrics)
    path = published_path(folder)
    return Run(path, result["model"], result["history"], metrics, data.class_names)


def _prepare(recipe: TextCNNRecipe, train: pd.DataFrame, dev: pd.DataFrame | None,
             test: pd.DataFrame | None) -> TextData:
    return prepare_text_data(train, test, dev, tokenizer=recipe.tokenizer,
                             max_length=recipe.max_length, min_count=recipe.min_count,
                             dev_fraction=recipe.dev_fraction, seed=recipe.seed)


def _train_once(recipe: TextCNNRecipe, data: TextData, folder: Path) -> dict[str, Any]:
    """Build, train and evaluate one model on ``data``; the id model trains, strings export."""
    import keras

    from tlkit.models.textcnn import build_textcnn, compile_textcnn, kim_optimizer

    keras.utils.set_random_seed(recipe.seed)
    embeddings, coverage = _embeddings(recipe, data)
    model = build_textcnn(
        len(data.vocabulary), len(data.class_names), recipe.variant, embeddings=embeddings,
        embedding_dim=recipe.embedding_dim, filter_widths=recipe.filter_widths,
        feature_maps=recipe.feature_maps, dropout=recipe.dropout, max_norm=recipe.max_norm,
        seed=recipe.seed)
    datasets = {split: text_dataset(data.splits[split], recipe.batch_size,
                                    shuffle=split == "train", seed=recipe.seed)
                for split in ("train", "dev") if split in data.splits}
    datasets = {"val" if split == "dev" else split: ds for split, ds in datasets.items()}
    stage = Stage(name="train", epochs=recipe.epochs, lr=recipe.lr, optimizer="adadelta")
    start = time.perf_counter()
    history = fit_stages(
        model, [stage], datasets, folder,
        prepare=lambda s: compile_textcnn(model, kim_optimizer(learning_rate=s.lr)),
        early_stopping=recipe.early_stopping)
    seconds = round(time.perf_counter() - start, 1)
    metrics = {("val" if split == "dev" else split): _split_metrics(model, data.splits[split],
                                                                      data.class_names, recipe)
               for split in ("dev", "test") if split in data.splits}
    return {"model": model, "history": history, "metrics": metrics, "seconds": seconds,
            "coverage": coverage}


def _embeddings(recipe: TextCNNRecipe, data: TextData) -> tuple[np.ndarray | None,
                                                                 dict[str, Any] | None]:
    if recipe.variant == "rand":
        return None, None
    from tlkit.vectors import load_vectors

    vectors = load_vectors(recipe.vectors, data.vocabulary.tokens, recipe.embedding_dim,
                           recipe.vectors_format, seed=recipe.seed)
    coverage = {"found": vectors.found, "words": vectors.words,
                "coverage": round(vectors.coverage, 4)}
    print(f"word vectors: {vectors.found} of {vectors.words} vocabulary words found "
          f"({vectors.coverage:.1%})", flush=True)
    return vectors.matrix, coverage


def _split_metrics(model: Any, split: TextSplit, class_names: list[str],
                   recipe: TextCNNRecipe) -> dict[str, Any]:
    probabilities = model.predict(text_dataset(split, recipe.batch_size), verbose=0)
    return classification_metrics(split.labels, probabilities, class_names)


def _write_run_files(recipe: TextCNNRecipe, data: TextData, folder: Path, model: Any,
                     coverage: dict[str, Any] | None) -> None:
    from tlkit.models.textcnn import build_string_model

    dump_recipe(recipe, folder / RECIPE_FILE)
    write_json(folder / CLASSES_FILE, data.class_names)
    data.vocabulary.save(folder / VOCABULARY_FILE)
    save_inference_model(build_string_model(model, data.vocabulary), folder / MODEL_FILE)


def _cross_validate(recipe: TextCNNRecipe, tables: dict[str, pd.DataFrame], out: str | Path,
                    name: str | None) -> Run:
    """Stratified k-fold: each fold trains on k-1 parts (dev held out of them), tests on one."""
    table = tables["train"].reset_index(drop=True)
    folds = kfold_splits(table["label"].astype(str).tolist(), recipe.cv, recipe.seed)
    rows = []
    with new_run_folder(out, name or run_name(f"textcnn-{recipe.variant}-cv{recipe.cv}")
                        ) as folder:
        for k, (train_rows, test_rows) in enumerate(folds):
            fold_folder = folder / "folds" / str(k)
            fold_folder.mkdir(parents=True)
            data = _prepare(recipe, table.iloc[train_rows], None, table.iloc[test_rows])
            result = _train_once(recipe, data, fold_folder)
            test = result["metrics"]["test"]
            rows.append({"fold": k, "train": len(data.splits["train"].labels),
                         "dev": len(data.splits["dev"].labels) if "dev" in data.splits else 0,
                         "test": test["n"], "test_accuracy": test["accuracy"],
                         "test_macro_f1": test["macro_f1"], "seconds": result["seconds"]})
            print(f"fold {k + 1}/{recipe.cv}: test accuracy {test['accuracy']:.4f}", flush=True)
        frame = pd.DataFrame(rows)
        frame.to_csv(folder / "folds.csv", index=False)
        # The saved model is the last fold's: every fold's is an equal estimate, and the
        # reported numbers are the mean and standard deviation over all of them.
        _write_run_files(recipe, data, folder, result["model"],
                         result["coverage"])
        metrics = {"cv": {"folds": recipe.cv,
                          "accuracy_mean": float(frame["test_accuracy"].mean()),
                          "accuracy_std": float(frame["test_accuracy"].std(ddof=1)),
                          "macro_f1_mean": float(frame["test_macro_f1"].mean())},
                   "train_seconds": float(frame["seconds"].sum())}
        write_json(folder / "metrics.json", metrics)
    path = published_path(folder)
    return Run(path, result["model"], frame, metrics, data.class_names)

