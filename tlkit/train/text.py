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
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlkit.data.tables import split_tables
from tlkit.data.text import (
    TextData,
    kfold_splits,
    prepare_text_data,
    read_text_table,
    text_dataset,
)
from tlkit.errors import UserError
from tlkit.evaluate import report_after_training
from tlkit.recipes import Stage, TextCNNRecipe
from tlkit.runs import (
    PREDICTIONS_FILE,
    Run,
    RunWriter,
    check_destination,
    new_run_folder,
    partial_path,
    releasing,
    run_name,
    unlock_run,
)
from tlkit.seeds import EpochClock
from tlkit.train.fit import StageFit, fit_stages

VOCABULARY_FILE = "vocabulary.json"


def read_recipe_tables(recipe: TextCNNRecipe) -> dict[str, pd.DataFrame]:
    """The recipe's train (``data``), dev and test tables, read with its columns and encoding.

    ``data`` may be a folder of split tables (``train.csv``, ``dev.csv`` or ``val.csv``,
    ``test.csv``; what ``tlkit datasets fetch`` writes): its train table is the training
    data and its other tables the dev and test splits.

    Example:
        >>> import tempfile
        >>> folder, table = Path(tempfile.mkdtemp()), pd.DataFrame({"text": ["ok"], "label": ["+"]})
        >>> for split in ("train", "test"):
        ...     table.to_csv(folder / f"{split}.csv", index=False)
        >>> {k: len(v) for k, v in read_recipe_tables(TextCNNRecipe(data=folder)).items()}
        {'train': 1, 'test': 1}
    """
    if recipe.data is None:
        raise UserError("no data given; pass --data (or data=) a CSV/TSV file, a folder "
                        "of <class>.txt files, or Kim's class files")
    sources = {"train": recipe.data, "dev": recipe.dev, "test": recipe.test}
    if isinstance(recipe.data, (str, Path)) and Path(recipe.data).is_dir():
        sources.update(_split_folder_sources(recipe))
    return {split: read_text_table(source, recipe.text_column, recipe.label_column,
                                   recipe.encoding)
            for split, source in sources.items() if source is not None}


def _split_folder_sources(recipe: TextCNNRecipe) -> dict[str, Any]:
    """The train, dev and test files of a ``data`` folder of split tables (none: {})."""
    folder = Path(recipe.data)
    tables = split_tables(folder)
    if not tables:
        return {}
    if "train" not in tables:
        raise UserError(f"folder '{folder}' holds {', '.join(p.name for p in tables.values())} "
                        "but no train table; add train.csv or pass --data the training file")
    found = {"dev": tables.get("val"), "test": tables.get("test")}
    for split, path in found.items():
        if path is not None and getattr(recipe, split) is not None:
            raise UserError(f"folder '{folder}' already holds {path.name} and --{split} was "
                            f"given too; leave out --{split}, or pass --data "
                            f"{tables['train']} to use your --{split}")
    return {"train": tables["train"],
            **{split: path for split, path in found.items() if path is not None}}


def check_text_run(recipe: TextCNNRecipe, out: str | Path = "runs", name: str | None = None,
                   resume: bool = False) -> tuple[dict[str, pd.DataFrame], str]:
    """Every check that needs no model: variant and vectors, tables, destination.

    Example:
        >>> check_text_run(TextCNNRecipe(variant="static"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: variant 'static' needs pretrained word vectors: ...
    """
    if recipe.variant != "rand" and not recipe.vectors:
        raise UserError(f"variant '{recipe.variant}' needs pretrained word vectors: pass "
                        "--vectors FILE (word2vec .bin/.txt, GloVe .txt, fastText .vec)")
    if recipe.variant == "rand" and recipe.vectors:
        raise UserError("variant 'rand' learns its own word vectors and would ignore --vectors; "
                        "pass --variant static, non-static or multichannel to use them")
    if recipe.vectors and not Path(recipe.vectors).is_file():
        raise UserError(f"vectors file '{recipe.vectors}' does not exist; check the path")
    suffix = f"-cv{recipe.cv}" if recipe.cv else ""
    name = name or run_name(f"textcnn-{recipe.variant}{suffix}")
    final = check_destination(out, name, resume)
    with ExitStack() as on_error:
        on_error.callback(unlock_run, partial_path(final))  # a resume's check locked it
        tables = read_recipe_tables(recipe)
        unused = [split for split in ("dev", "test") if split in tables]
        if recipe.cv and unused:
            raise UserError(f"--cv {recipe.cv} tests each fold on its own held-out part, so "
                            f"the {' and '.join(unused)} data would go unused; drop --cv, or "
                            "pass --data the one table to cross-validate")
        on_error.pop_all()
    return tables, name


def train_textcnn(recipe: TextCNNRecipe, out: str | Path = "runs", name: str | None = None,
                  resume: bool = False) -> Run:
    """Train the recipe's text CNN and write a run folder; with ``recipe.cv``, cross-validate.

    The returned run's ``model`` is the saved one: it takes raw strings. With ``resume``,
    the unfinished run ``out/name`` continues: finished folds and epochs are read back from
    its folder (the data is read and split again, which the seed makes identical).

    Example:
        >>> run = train_textcnn(TextCNNRecipe(data="reviews.csv"), out="runs")  # doctest: +SKIP
    """
    tables, name = check_text_run(recipe, out, name, resume)
    with releasing(Path(out) / name):  # a resume's checks locked it
        if recipe.cv:
            return _cross_validate(recipe, tables["train"], out, name, resume)
        return _train_split(recipe, tables, out, name, resume)


def _train_split(recipe: TextCNNRecipe, tables: dict[str, pd.DataFrame], out: str | Path,
                 name: str, resume: bool) -> Run:
    """One run on train, dev and test: the model kept at its best dev epoch."""
    data = _prepare(recipe, tables["train"], tables.get("dev"), tables.get("test"))
    with new_run_folder(out, name, "textcnn", resume) as writer:
        writer.write_recipe(recipe)  # first: a killed run resumes from it
        result = _train_once(recipe, data, writer.path)
        model = _write_run_files(recipe, data, writer, result["model"])
        metrics = {**result["metrics"], "train_seconds": result["seconds"],
                   "skipped_empty_texts": data.skipped, "vector_coverage": result["coverage"],
                   "devices": result["devices"]}
        writer.write_json("metrics.json", metrics)
        writer.write_table(PREDICTIONS_FILE, result["predictions"])
    report_after_training(writer.final)
    return Run(path=writer.final, kind="textcnn", recipe=recipe, class_names=data.class_names,
               metrics=metrics, model=model, history=result["history"])


def _prepare(recipe: TextCNNRecipe, train: pd.DataFrame, dev: pd.DataFrame | None,
             test: pd.DataFrame | None) -> TextData:
    return prepare_text_data(train, test, dev, tokenizer=recipe.tokenizer,
                             max_length=recipe.max_length, min_count=recipe.min_count,
                             dev_fraction=recipe.dev_fraction, seed=recipe.seed)


def _train_once(recipe: TextCNNRecipe, data: TextData, folder: Path) -> dict[str, Any]:
    """Build, train and evaluate one model on ``data``; the id model trains, strings export."""
    from tlkit.devices import training_setup

    with training_setup(recipe) as setup:
        if setup.replicas > 1:
            raise UserError("the text CNN trains on one device: its sparse Adadelta update "
                            "(only the embedding rows a batch touches) is not written for "
                            "tf.distribute replicas; set strategy: none")
        return _fit_and_score(recipe, data, folder, setup)


def _fit_and_score(recipe: TextCNNRecipe, data: TextData, folder: Path, setup: Any
                   ) -> dict[str, Any]:
    from tlkit.models.textcnn import build_textcnn

    clock = EpochClock(recipe.seed)
    embeddings, coverage = _embeddings(recipe, data)
    model = build_textcnn(
        len(data.vocabulary), len(data.class_names), recipe.variant, embeddings=embeddings,
        embedding_dim=recipe.embedding_dim, filter_widths=recipe.filter_widths,
        feature_maps=recipe.feature_maps, dropout=recipe.dropout, max_norm=recipe.max_norm,
        seed=recipe.seed)
    datasets = {split: text_dataset(data.splits[split], recipe.batch_size,
                                    shuffle=split == "train", seed=recipe.seed, clock=clock)
                for split in ("train", "dev") if split in data.splits}
    datasets = {"val" if split == "dev" else split: ds for split, ds in datasets.items()}
    stage = Stage(name="train", epochs=recipe.epochs, lr=recipe.lr, optimizer="adadelta")
    start = time.perf_counter()
    history = fit_stages(
        model, [stage], datasets, folder,
        prepare=lambda s: _training_fit(model, datasets, s.lr),
        monitor=recipe.monitor, early_stopping=recipe.early_stopping, clock=clock,
        jit_compile=recipe.jit_compile)
    seconds = round(time.perf_counter() - start, 1)
    from tlkit.models.textcnn import build_string_model
    from tlkit.tasks import task_of

    # Scored as the saved string model and `tlkit evaluate` score: through the task.
    strings, metrics, tables = build_string_model(model, data.vocabulary), {}, []
    for split in ("dev", "test"):
        if split in data.splits:
            name = "val" if split == "dev" else split
            part = data.splits[split]
            scored = task_of(recipe).score(strings, part.texts, part.labels, data.class_names,
                                           name)
            metrics[name] = scored.metrics
            tables.append(scored.predictions)
    return {"model": model, "history": history, "metrics": metrics, "seconds": seconds,
            "coverage": coverage, "predictions": pd.concat(tables, ignore_index=True),
            "devices": setup.record()}


def _training_fit(model: Any, datasets: dict[str, Any], lr: float) -> StageFit:
    """Fit ``model``'s layers on their faster training path, compiled with Kim's optimizer."""
    from tlkit.models.textcnn import compile_textcnn, kim_optimizer, training_model

    fitted = training_model(model)
    compile_textcnn(fitted, kim_optimizer(learning_rate=lr))
    return StageFit(fitted, datasets["train"], datasets.get("val"))


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


def _write_run_files(recipe: TextCNNRecipe, data: TextData, writer: RunWriter, model: Any
                     ) -> Any:
    """Recipe, classes, vocabulary and the string-in model; returns that model."""
    from tlkit.models.textcnn import build_string_model

    writer.write_classes(data.class_names)
    data.vocabulary.save(writer.path / VOCABULARY_FILE)
    string_model = build_string_model(model, data.vocabulary)
    writer.save_model(string_model)
    return string_model


def _cross_validate(recipe: TextCNNRecipe, table: pd.DataFrame, out: str | Path, name: str,
                    resume: bool) -> Run:
    """Stratified k-fold: each fold trains on k-1 parts (dev held out of them), tests on one.

    A fold whose folder says it is finished is only rebuilt from its best weights and
    scored again, so a resumed run continues at the fold that was cut short.
    """
    table = table.reset_index(drop=True)
    folds = kfold_splits(table["label"].astype(str).tolist(), recipe.cv, recipe.seed)
    rows, predictions = [], []
    with new_run_folder(out, name, "textcnn", resume) as writer:
        writer.write_recipe(recipe)  # first: a killed run resumes from it
        for k, (train_rows, test_rows) in enumerate(folds):
            fold_folder = writer.path / "folds" / str(k)
            fold_folder.mkdir(parents=True, exist_ok=True)
            data = _prepare(recipe, table.iloc[train_rows], None, table.iloc[test_rows])
            result = _train_once(recipe, data, fold_folder)
            test = result["metrics"]["test"]
            held_out = result["predictions"]
            predictions.append(held_out[held_out["split"] == "test"])
            rows.append({"fold": k, "train": len(data.splits["train"].labels),
                         "dev": len(data.splits["dev"].labels) if "dev" in data.splits else 0,
                         "test": test["n"], "test_accuracy": test["accuracy"],
                         "test_macro_f1": test["macro_f1"], "seconds": result["seconds"]})
            print(f"fold {k + 1}/{recipe.cv}: test accuracy {test['accuracy']:.4f}", flush=True)
        frame = pd.DataFrame(rows)
        writer.write_table("folds.csv", frame)
        # The saved model and history are the last fold's: every fold's is an equal
        # estimate, and the reported numbers are the mean and standard deviation of all.
        result["history"].to_csv(writer.path / "history.csv", index=False)
        model = _write_run_files(recipe, data, writer, result["model"])
        metrics = {"cv": {"folds": recipe.cv,
                          "accuracy_mean": float(frame["test_accuracy"].mean()),
                          "accuracy_std": float(frame["test_accuracy"].std(ddof=1)),
                          "macro_f1_mean": float(frame["test_macro_f1"].mean())},
                   "train_seconds": float(frame["seconds"].sum())}
        writer.write_json("metrics.json", metrics)
        # Every example once, predicted by the fold model that did not train on it.
        writer.write_table(PREDICTIONS_FILE, pd.concat(predictions, ignore_index=True))
    report_after_training(writer.final)
    return Run(path=writer.final, kind="textcnn", recipe=recipe, class_names=data.class_names,
               metrics=metrics, model=model, history=result["history"], folds=frame)
