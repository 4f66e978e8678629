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

import functools
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlkit.data.labels import LabelFormat
from tlkit.data.tables import split_tables
from tlkit.data.text import (
    TextData,
    check_text_tables,
    prepare_text_data,
    read_text_table,
    text_dataset,
)
from tlkit.devices import TrainingSetup
from tlkit.errors import UserError
from tlkit.progress import phase, say
from tlkit.recipes import Stage, TextCNNRecipe
from tlkit.runs import Run, RunWriter, check_destination, partial_path, run_name, unlock_run
from tlkit.seeds import EpochClock
from tlkit.train.fit import StageFit, fit_stages
from tlkit.train.job import Job, cross_validate, run_job

# Kim's Adadelta, a row of the optimizer table (tlkit.optimizers) like the image stages'.
OPTIMIZER = "kim-adadelta"


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
    labels = LabelFormat.of(recipe)
    return {split: read_text_table(source, recipe.text_column, recipe.label_column,
                                   recipe.encoding, labels)
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
        # label and blank-text mistakes before TensorFlow (tokenising loads it); a fold's
        # dev hold-out is checked when the fold is made
        check_text_tables(tables["train"], tables.get("test"), tables.get("dev"),
                          dev_fraction=0 if recipe.cv else recipe.dev_fraction,
                          labels=LabelFormat.of(recipe))
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
    job = TextJob(recipe, tables, out, name)
    return cross_validate(job, recipe.cv, resume) if recipe.cv else run_job(job, resume)


class TextJob(Job):
    """The text kind's part of the lifecycle: texts and a vocabulary, Kim's CNN, one stage.

    The id model trains (on its faster training path); the saved and scored model is the
    string model around it, tokenizer and vocabulary inside.

    Example:
        >>> table = pd.DataFrame({"text": ["good", "bad"] * 3, "label": ["+", "-"] * 3})
        >>> job = TextJob(TextCNNRecipe(), {"train": table}, "runs", "r")
        >>> fold = job.fold(np.array([0, 1, 3, 4]), np.array([2, 5]))
        >>> job.kind, job.labels()[:2], fold.tables["test"]["text"].tolist()
        ('textcnn', ['+', '-'], ['good', 'bad'])
    """

    kind = "textcnn"

    def __init__(self, recipe: TextCNNRecipe, tables: dict[str, pd.DataFrame],
                 out: str | Path, name: str) -> None:
        from tlkit.tasks import task_of

        self.recipe, self.tables, self.out, self.name = recipe, tables, Path(out), name
        self.task = task_of(recipe)

    @property
    def class_names(self) -> list[str]:
        return self.data.class_names

    def build(self, setup: TrainingSetup) -> None:
        from tlkit.models.textcnn import build_textcnn

        if setup.replicas > 1:
            raise UserError("the text CNN trains on one device: its sparse Adadelta update "
                            "(only the embedding rows a batch touches) is not written for "
                            "tf.distribute replicas; set strategy: none")
        recipe, tables = self.recipe, self.tables
        with phase("vocabulary", detail="tokenizing the texts and counting words") as counting:
            self.data = data = prepare_text_data(
                tables["train"], tables.get("test"), tables.get("dev"),
                tokenizer=recipe.tokenizer, max_length=recipe.max_length,
                min_count=recipe.min_count, dev_fraction=recipe.dev_fraction, seed=recipe.seed,
                labels=LabelFormat.of(recipe), calibration_fraction=calibration_fraction(recipe))
            counting.result = f"{len(data.vocabulary)} tokens"
        self.clock = EpochClock(recipe.seed)
        embeddings, self.coverage = _embeddings(recipe, data)
        self.model = build_textcnn(
            len(data.vocabulary), len(data.class_names), recipe.variant, embeddings=embeddings,
            embedding_dim=recipe.embedding_dim, filter_widths=recipe.filter_widths,
            feature_maps=recipe.feature_maps, dropout=recipe.dropout, max_norm=recipe.max_norm,
            seed=recipe.seed, output_activation=self.task.activation)
        datasets = {split: text_dataset(data.splits[split], recipe.batch_size,
                                        shuffle=split == "train", seed=recipe.seed,
                                        clock=self.clock)
                    for split in ("train", "dev") if split in data.splits}
        self.datasets = {"val" if split == "dev" else split: ds for split, ds in datasets.items()}

    def write_inputs(self, writer: RunWriter) -> None:
        writer.write_vocabulary(self.data.vocabulary)

    def stages(self) -> list[Stage]:
        """One stage: the whole network, Kim's optimizer at the recipe's rate."""
        recipe = self.recipe
        return [Stage(name="train", epochs=recipe.epochs, lr=recipe.lr, optimizer=OPTIMIZER)]

    def fit(self, folder: Path, setup: TrainingSetup) -> pd.DataFrame:
        recipe = self.recipe
        return fit_stages(
            self.model, self.stages(), self.datasets, folder,
            prepare=lambda stage: _training_fit(self.model, self.datasets, stage, self.task),
            monitor=recipe.monitor, early_stopping=recipe.early_stopping, clock=self.clock,
            jit_compile=recipe.jit_compile)

    def held_out(self, split: str) -> tuple[Any, list[str], np.ndarray] | None:
        """The string model (as saved and as `tlkit evaluate` scores) on dev (``val``) or
        test."""
        part = self.data.splits.get("dev" if split == "val" else split)
        return None if part is None else (self.strings, part.texts, part.labels)

    def extras(self) -> dict[str, Any]:
        return {"skipped_empty_texts": self.data.skipped, "vector_coverage": self.coverage}

    def save(self, writer: RunWriter) -> Any:
        writer.save_model(self.strings)
        return self.strings

    @functools.cached_property
    def strings(self) -> Any:
        """The string model around the trained id model: tokenizer and vocabulary inside."""
        from tlkit.models.textcnn import build_string_model

        return build_string_model(self.model, self.data.vocabulary)

    def sizes(self) -> dict[str, int]:
        splits = self.data.splits
        return {"train": len(splits["train"].labels),
                "dev": len(splits["dev"].labels) if "dev" in splits else 0}

    def labels(self) -> list[str]:
        return self.tables["train"]["label"].astype(str).tolist()

    def fold(self, train_rows: np.ndarray, test_rows: np.ndarray) -> TextJob:
        """This job trained on ``train_rows`` (dev held out of them), tested on ``test_rows``."""
        table = self.tables["train"].reset_index(drop=True)
        return TextJob(self.recipe, {"train": table.iloc[train_rows],
                                     "test": table.iloc[test_rows]}, self.out, self.name)


def calibration_fraction(recipe: TextCNNRecipe) -> float:
    """The share of training texts held out for conformal sets: none for a cross-validated
    run (its folds keep every training text; it stores no prediction sets).

    Example:
        >>> calibration_fraction(TextCNNRecipe()), calibration_fraction(TextCNNRecipe(cv=10))
        (0.1, 0.0)
    """
    return 0.0 if recipe.cv else recipe.calibration_fraction


def _training_fit(model: Any, datasets: dict[str, Any], stage: Stage, task: Any) -> StageFit:
    """Fit ``model``'s layers on their faster training path, with the stage's optimizer and
    the task's loss."""
    from tlkit.models.textcnn import compile_textcnn, training_model
    from tlkit.train.heads import head_loss, head_metrics
    from tlkit.train.stages import make_optimizer

    fitted = training_model(model)
    compile_textcnn(fitted, make_optimizer(stage), loss=head_loss(task),
                    metrics=head_metrics(task))
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
    say(f"word vectors: {vectors.found} of {vectors.words} vocabulary words found "
        f"({vectors.coverage:.1%})")
    return vectors.matrix, coverage
