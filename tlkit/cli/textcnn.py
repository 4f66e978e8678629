"""``tlkit textcnn train|evaluate|predict``: options -> TextCNNRecipe -> one library call."""

from __future__ import annotations

import click

from tlkit.choices import TOKENIZERS
from tlkit.cli.evaluate import evaluate_options, run_evaluate
from tlkit.cli.options import label_options, recipe_option, run_options, run_recipe, summary_line
from tlkit.cli.predict import predict_options, run_predict
from tlkit.recipes import TEXTCNN_VARIANTS


@click.group()
def textcnn() -> None:
    """Kim (2014) CNN for sentence classification."""


@textcnn.command()
@click.option("--data", multiple=True,
              help="Training CSV/TSV, a folder of train/dev/test tables, a folder of "
                   "<class>.txt files, or Kim's class files (repeat --data for each).")
@click.option("--test", help="Test file (same format as --data).")
@click.option("--dev", help="Dev file; default: a stratified part of --data (dev_fraction).")
@recipe_option("textcnn", "text_column", help="Text column of CSV/TSV files.")
@recipe_option("textcnn", "label_column", help="Label column of CSV/TSV files.")
@label_options("textcnn")
@recipe_option("textcnn", "encoding", help="Encoding of the data files.")
@recipe_option("textcnn", "variant", type=click.Choice(TEXTCNN_VARIANTS),
               help="rand, or pretrained vectors: static, non-static, multichannel.")
@recipe_option("textcnn", "vectors", type=click.Path(dir_okay=False),
               help="word2vec .bin/.txt, GloVe .txt or fastText .vec, optionally .gz.")
@recipe_option("textcnn", "embedding_dim", type=int, help="Word vector size.")
@recipe_option("textcnn", "tokenizer", type=click.Choice(list(TOKENIZERS)),
               help="How sentences become tokens.")
@recipe_option("textcnn", "cv", type=int,
               help="K-fold cross-validation on --data instead of a test file.")
@run_options("textcnn")
def train(recipe_path: str | None, data: tuple[str, ...], overrides: tuple[str, ...], out: str,
          name: str | None, resume: str | None, **flags: object) -> None:
    """Train a Kim CNN (or cross-validate it with --cv).

    Writes a run folder whose model takes raw strings.

    Example: tlkit textcnn train --data trec/train.csv --test trec/test.csv --epochs 10
    """
    if data:
        flags["data"] = data[0] if len(data) == 1 else list(data)
    recipe, out, name = run_recipe("textcnn", recipe_path, flags, overrides, out, name, resume)
    from tlkit.train.text import train_textcnn

    click.echo(summary_line(train_textcnn(recipe, out=out, name=name, resume=bool(resume))))


@textcnn.command("evaluate")
@evaluate_options
def evaluate_command(**options: object) -> None:
    """Evaluate a text run on labelled data (same as `tlkit evaluate`).

    Example: tlkit textcnn evaluate runs/trec --data trec/test.csv
    """
    run_evaluate(**options, kind="textcnn")  # type: ignore[arg-type]


@textcnn.command("predict")
@predict_options
def predict_command(**options: object) -> None:
    """Predict labels for sentences (same as `tlkit predict`).

    Example: tlkit textcnn predict runs/sst2 "a gripping, funny film" --top-k 2
    """
    run_predict(**options, kind="textcnn")  # type: ignore[arg-type]
