"""``tlkit textcnn train|evaluate|predict``: options -> TextCNNRecipe -> one library call."""

from __future__ import annotations

import click


@click.group()
def textcnn() -> None:
    """Kim (2014) CNN for sentence classification."""


@textcnn.command()
@click.option("--recipe", "recipe_path", type=click.Path(dir_okay=False),
              help="Recipe YAML (e.g. recipes/kim2014-cnn-rand.yaml); flags override it.")
@click.option("--data", multiple=True,
              help="Training CSV/TSV, a folder of <class>.txt files, or Kim's class files "
                   "(repeat --data for each).")
@click.option("--test", help="Test file (same format as --data).")
@click.option("--dev", help="Dev file; default: 10% of training, stratified.")
@click.option("--text-column", help="Text column of CSV/TSV files (default: text).")
@click.option("--label-column", help="Label column of CSV/TSV files (default: label).")
@click.option("--encoding", help="Encoding of the data files (default: utf-8).")
@click.option("--variant", type=click.Choice(["rand", "static", "non-static", "multichannel"]))
@click.option("--vectors", type=click.Path(dir_okay=False),
              help="word2vec .bin/.txt, GloVe .txt or fastText .vec, optionally .gz.")
@click.option("--embedding-dim", type=int)
@click.option("--tokenizer", type=click.Choice(["kim", "kim-cased", "lower"]))
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--cv", type=int, help="K-fold cross-validation on --data instead of a test file.")
@click.option("--seed", type=int)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any recipe field: --set feature_maps=200")
@click.option("--out", default="runs", show_default=True)
@click.option("--name", help="Run folder name (default: textcnn-VARIANT-DATE-TIME).")
def train(recipe_path: str | None, data: tuple[str, ...], out: str, name: str | None,
          overrides: tuple[str, ...], **options: object) -> None:
    """Train a text CNN (or cross-validate it with --cv) and write a run folder.

    Example: tlkit textcnn train --data trec/train.csv --test trec/test.csv --epochs 10
    """
    from tlkit.recipes import TextCNNRecipe, build_recipe, load_recipe, recipe_to_dict
    from tlkit.train.text import train_textcnn

    values = recipe_to_dict(load_recipe(recipe_path) if recipe_path else TextCNNRecipe(
        data=list(data) or None))
    values.update({key: value for key, value in options.items() if value is not None})
    if data:
        values["data"] = data[0] if len(data) == 1 else list(data)
    recipe = build_recipe(TextCNNRecipe, values, list(overrides), source="options")
    run = train_textcnn(recipe, out=out, name=name)
    if recipe.cv:
        cv = run.metrics["cv"]
        summary = (f"{cv['folds']}-fold accuracy {cv['accuracy_mean']:.4f} "
                   f"± {cv['accuracy_std']:.4f}")
    else:
        summary = ", ".join(f"{split} accuracy {run.metrics[split]['accuracy']:.4f}"
                            for split in ("val", "test") if split in run.metrics)
    click.echo(f"run folder: {run.path} ({summary})")


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
