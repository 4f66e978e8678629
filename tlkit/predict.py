"""Use a finished text run: predict labels for raw sentences, or evaluate it on labelled data.

The run's ``model.keras`` takes raw strings (tokenizer and vocabulary inside), so both only
read texts and call the model.

Example:
    >>> predict_texts("runs/trec", ["How far is the moon ?"], top_k=2)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlkit.errors import UserError
from tlkit.recipes import TextCNNRecipe, load_recipe
from tlkit.runs import (
    CLASSES_FILE,
    MODEL_FILE,
    RECIPE_FILE,
    check_run_folder,
    load_keras_file,
    read_json,
    write_json,
)


@dataclass
class TextRun:
    """A loaded text run: its recipe, class names and string-in model."""

    path: Path
    recipe: TextCNNRecipe
    class_names: list[str]
    model: Any


def load_text_run(path: str | Path) -> TextRun:
    """Load a text CNN run folder, or a UserError if ``path`` is not one.

    Example:
        >>> load_text_run("runs/trec").class_names  # doctest: +SKIP
    """
    folder = check_run_folder(path)
    recipe = load_recipe(folder / RECIPE_FILE)
    if not isinstance(recipe, TextCNNRecipe):
        raise UserError(f"'{folder}' is an image run, not a text CNN run; use a folder from "
                        "`tlkit textcnn train`")
    model = load_keras_file(folder / MODEL_FILE)
    return TextRun(folder, recipe, read_json(folder / CLASSES_FILE), model)


def _probabilities(run: TextRun, texts: list[str]) -> np.ndarray:
    if not texts:
        raise UserError("no texts to predict")
    return run.model.predict(np.array(texts, dtype=object), batch_size=256, verbose=0)


def predict_texts(run: TextRun | str | Path, texts: list[str], top_k: int = 1) -> pd.DataFrame:
    """A table of ``text``, then ``label_1, prob_1, ..., label_k, prob_k`` for each text.

    Example:
        >>> predict_texts("runs/sst2", ["a gripping, funny film"], top_k=2)  # doctest: +SKIP
    """
    run = run if isinstance(run, TextRun) else load_text_run(run)
    if not 1 <= top_k <= len(run.class_names):
        raise UserError(f"--top-k must be between 1 and {len(run.class_names)}")
    probabilities = _probabilities(run, texts)
    order = np.argsort(-probabilities, axis=1)[:, :top_k]
    table = pd.DataFrame({"text": texts})
    for k in range(top_k):
        table[f"label_{k + 1}"] = [run.class_names[i] for i in order[:, k]]
        table[f"prob_{k + 1}"] = np.round(probabilities[np.arange(len(texts)), order[:, k]], 4)
    return table


def read_input_texts(path: str | Path, text_column: str = "text",
                     encoding: str = "utf-8") -> list[str]:
    """Texts from a CSV/TSV (``text_column``) or a plain file with one text per line."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"input file '{file}' does not exist")
    if file.suffix.lower() in (".csv", ".tsv"):
        frame = pd.read_csv(file, sep="\t" if file.suffix.lower() == ".tsv" else ",",
                            encoding=encoding)
        if text_column not in frame.columns:
            raise UserError(f"'{file}' has no column '{text_column}' (columns: "
                            f"{', '.join(map(str, frame.columns))}); use --text-column")
        return frame[text_column].fillna("").astype(str).tolist()
    try:
        lines = file.read_text(encoding=encoding).splitlines()
    except UnicodeDecodeError as error:
        raise UserError(f"'{file}' is not valid {encoding}; pass --encoding") from error
    return [line for line in lines if line.strip()]


def evaluate_text_run(run: TextRun | str | Path, data: str | Path,
                      text_column: str | None = None, label_column: str | None = None,
                      encoding: str | None = None) -> dict[str, Any]:
    """Metrics of a text run on labelled data; also written to ``evaluations/<file>.json``.

    Example:
        >>> evaluate_text_run("runs/trec", "trec/test.csv")["accuracy"]  # doctest: +SKIP
    """
    from tlkit.data.text import read_text_table
    from tlkit.evaluation.metrics import classification_metrics

    run = run if isinstance(run, TextRun) else load_text_run(run)
    recipe = run.recipe
    table = read_text_table(data, text_column or recipe.text_column,
                            label_column or recipe.label_column, encoding or recipe.encoding)
    unseen = sorted(set(table["label"]) - set(run.class_names))
    if unseen:
        raise UserError(f"'{data}' has label(s) the run never saw: "
                        f"{', '.join(map(repr, unseen[:5]))}; the run knows "
                        f"{', '.join(run.class_names)}")
    index = {name: i for i, name in enumerate(run.class_names)}
    labels = table["label"].map(index).to_numpy()
    metrics = classification_metrics(labels, _probabilities(run, table["text"].tolist()),
                                     run.class_names)
    metrics["data"] = str(data)
    folder = run.path / "evaluations"
    folder.mkdir(exist_ok=True)
    write_json(folder / f"{Path(data).stem}.json", metrics)
    return metrics


def metrics_summary(metrics: dict[str, Any]) -> str:
    """One line: accuracy, macro F1 and count."""
    return (f"accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f} "
            f"on {metrics['n']} texts")

