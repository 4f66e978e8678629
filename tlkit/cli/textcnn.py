"""``tlkit textcnn train|evaluate|predict``: options -> TextCNNRecipe -> one library call."""

from __future__ import annotations

import click

from tlkit.cli.options import recipe_option, run_options, summary_line
from tlkit.data.text import TOKENIZERS
from tlkit.recipes import TEXTCNN_VARIANTS


@click.group()
def textcnn() -> None:
    """Kim (2014) CNN for sentence classification."""


@textcnn.command()
@click.option("--data", multiple=True,
              help="Training CSV/TSV, a folder of <class>.txt files, or Kim's class files "
                   "(repeat --data for each).")
@click.option("--test", help="Test file (same format as --data).")
@click.option("--dev", help="Dev file; default: a stratified part of --data (dev_fraction).")
@recipe_option("textcnn", "text_column", help="Text column of CSV/TSV files.")
@recipe_option("textcnn", "label_column", help="Label column of CSV/TSV files.")
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
          name: str | None, **flags: object) -> None:
    """Train a Kim CNN (or cross-validate it with --cv).

    Writes a run folder whose model takes raw strings.

    Example: tlkit textcnn train --data trec/train.csv --test trec/test.csv --epochs 10
    """
    from tlkit.recipes import resolve_recipe

    if data:
        flags["data"] = data[0] if len(data) == 1 else list(data)
    recipe = resolve_recipe("textcnn", recipe_path, flags, list(overrides))
    from tlkit.train.text import train_textcnn

    click.echo(summary_line(train_textcnn(recipe, out=out, name=name)))


@textcnn.command()
@click.argument("run", type=click.Path())
@click.option("--data", required=True, help="Labelled CSV/TSV, folder or class files.")
@click.option("--text-column")
@click.option("--label-column")
@click.option("--encoding")
def evaluate(run: str, data: str, text_column: str | None, label_column: str | None,
             encoding: str | None) -> None:
    """Evaluate a text run on labelled data; writes RUN/evaluations/<file>.json.

    Example: tlkit textcnn evaluate runs/textcnn-rand-20261122-101500 --data trec/test.csv
    """
    from tlkit.predict import evaluate_text_run, metrics_summary

    click.echo(metrics_summary(evaluate_text_run(run, data, text_column, label_column,
                                                 encoding)))


@textcnn.command()
@click.argument("run", type=click.Path())
@click.argument("texts", nargs=-1)
@click.option("--input", "input_path", type=click.Path(dir_okay=False),
              help="CSV/TSV (column --text-column) or a text file with one sentence per line.")
@click.option("--text-column", default="text", show_default=True)
@click.option("--top-k", default=1, show_default=True, type=int)
@click.option("--output", type=click.Path(dir_okay=False), help="Write CSV here (default: stdout).")
def predict(run: str, texts: tuple[str, ...], input_path: str | None, text_column: str,
            top_k: int, output: str | None) -> None:
    """Predict labels for TEXTS (or --input) with a text run; prints or writes CSV.

    Example: tlkit textcnn predict runs/sst2 "a gripping, funny film" --top-k 2
    """
    from tlkit.errors import UserError
    from tlkit.predict import predict_texts, read_input_texts

    sentences = list(texts) + (read_input_texts(input_path, text_column) if input_path else [])
    if not sentences:
        raise UserError("give sentences to classify, or --input FILE")
    table = predict_texts(run, sentences, top_k)
    if output:
        table.to_csv(output, index=False)
        click.echo(f"wrote {len(table)} predictions to {output}")
    else:
        click.echo(table.to_csv(index=False), nl=False)
