"""Use a finished text run: predict labels for raw sentences, or evaluate it on labelled data.

The run's ``model.keras`` takes raw strings (tokenizer and vocabulary inside), so both only
read texts and call the model.

Example:
    >>> predict_texts("runs/trec", ["How far is the moon ?"], top_k=2)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlkit.data.tables import label_ids, read_table, require_columns
from tlkit.errors import UserError
from tlkit.runs import MODEL_FILE, Run, load_keras_file, load_run, write_json


def load_text_run(path: str | Path | Run) -> Run:
    """A finished text CNN run, or a UserError if ``path`` is not one.

    Example:
        >>> load_text_run("runs/trec").class_names  # doctest: +SKIP
        ['ABBR', 'DESC', 'ENTY', 'HUM', 'LOC', 'NUM']
    """
    run = path if isinstance(path, Run) else load_run(path, model=False)
    if run.kind != "textcnn":
        raise UserError(f"'{run.path}' is an {run.kind} run, not a text CNN run; use a folder "
                        "from `tlkit textcnn train`")
    if run.model is None:
        run.model = load_keras_file(run.path / MODEL_FILE)
    return run


def _probabilities(run: Run, texts: list[str]) -> np.ndarray:
    if not texts:
        raise UserError("no texts to predict")
    return run.model.predict(np.array(texts, dtype=object), batch_size=256, verbose=0)


def predict_texts(run: Run | str | Path, texts: list[str], top_k: int = 1) -> pd.DataFrame:
    """A table of ``text``, then ``label_1, prob_1, ..., label_k, prob_k`` for each text.

    Example:
        >>> predict_texts("runs/sst2", ["a gripping, funny film"], top_k=2)  # doctest: +SKIP
    """
    run = load_text_run(run)
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
    if file.suffix.lower() in (".csv", ".tsv", ".tab"):
        frame = read_table(file, encoding)
        require_columns(frame, {text_column: "--text-column"}, f"'{file}'")
        return frame[text_column].tolist()
    from tlkit.data.tables import decode_file

    return [line for line in decode_file(file, encoding).splitlines() if line.strip()]


def evaluate_text_run(run: Run | str | Path, data: str | Path,
                      text_column: str | None = None, label_column: str | None = None,
                      encoding: str | None = None) -> dict[str, Any]:
    """Metrics of a text run on labelled data; also written to ``evaluations/<file>.json``.

    Example:
        >>> evaluate_text_run("runs/trec", "trec/test.csv")["accuracy"]  # doctest: +SKIP
    """
    from tlkit.data.text import read_text_table
    from tlkit.evaluation.metrics import classification_metrics

    run = load_text_run(run)
    recipe = run.recipe
    table = read_text_table(data, text_column or recipe.text_column,
                            label_column or recipe.label_column, encoding or recipe.encoding)
    labels = label_ids(table["label"], run.class_names)
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

