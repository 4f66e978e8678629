"""Text explanations: winning n-grams of a Kim CNN, their logit contributions, token saliency."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, run_cli, write_image

from tlkit.explain.run import explain_run
from tlkit.explain.text import (
    explain_sentences,
    filter_ngrams,
    kim_parts,
    token_saliency,
    top_ngrams,
)
from tlkit.models.saved import load_run
from tlkit.recipes import TextCNNRecipe
from tlkit.train.text import train_textcnn

# The label is decided by one word; every other word is shared filler.
DECIDING = {"north": "walrus", "south": "penguin"}
FILLER = ["the", "a", "film", "was", "story", "plot", "really", "quite", "long", "odd", "one",
          "day", "we", "saw", "it"]


def _corpus(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "north" if i % 2 == 0 else "south"
        words = rng.sample(FILLER, 6)
        words.insert(rng.randrange(7), DECIDING[label])
        rows.append({"text": " ".join(words), "label": label})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("text")
    _corpus(160, seed=0).to_csv(folder / "train.csv", index=False)
    recipe = TextCNNRecipe(data=str(folder / "train.csv"), embedding_dim=16, feature_maps=8,
                           epochs=6, batch_size=20, seed=1)
    return train_textcnn(recipe, out=folder / "runs", name="toy").path


@pytest.fixture(scope="module")
def test_texts() -> list[str]:
    return _corpus(40, seed=5)["text"].tolist()


def test_the_deciding_words_ngrams_top_each_class(text_run: Path, test_texts) -> None:
    table = top_ngrams(text_run, test_texts, top=3)
    assert set(table["class"]) == set(DECIDING)
    for label, word in DECIDING.items():
        ngrams = table.loc[table["class"] == label, "ngram"].tolist()
        assert len(ngrams) == 3 and all(word in ngram.split() for ngram in ngrams), ngrams
    assert table.columns.tolist() == ["class", "rank", "ngram", "contribution", "texts", "mean"]


def test_contributions_and_bias_give_back_the_models_probabilities(text_run: Path,
                                                                    test_texts) -> None:
    run = load_run(text_run)
    texts = test_texts[:4]
    bias = kim_parts(run).bias
    logits = np.stack([
        filter_ngrams(run, texts, class_index=c).groupby("sentence")["contribution"].sum()
        .reindex(range(len(texts)), fill_value=0.0).to_numpy() + bias[c]
        for c in range(len(run.class_names))], axis=1)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = run.model.predict(np.array(texts, dtype=object), verbose=0)
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)


def test_winning_windows_hold_the_tokens_at_their_position(text_run: Path) -> None:
    table = filter_ngrams(text_run, ["the walrus was odd"])
    assert (table["activation"] > 0).all()
    assert set(table["class"]) == {"north"}
    for row in table.itertuples():
        window = ["the", "walrus", "was", "odd"][max(row.start, 0):row.start + row.width]
        assert row.ngram == " ".join(window)


def test_sentence_explanation_puts_the_word_first(text_run: Path) -> None:
    table = explain_sentences(text_run, ["we saw the penguin one day", "a long odd walrus film"],
                              top=2)
    assert table["class"].tolist() == ["south", "south", "north", "north"]
    assert table["rank"].tolist() == [1, 2, 1, 2]
    assert "penguin" in table["ngram"].iloc[0] and "walrus" in table["ngram"].iloc[2]
    other = explain_sentences(text_run, ["we saw the penguin one day"], class_index=0)
    assert set(other["class"]) == {"north"}


def test_token_saliency_peaks_on_the_deciding_word(text_run: Path) -> None:
    table = token_saliency(text_run, ["the plot was quite long walrus", "penguin it was"])
    for _, tokens in table.groupby("sentence"):
        assert tokens["saliency"].sum() == pytest.approx(1.0)
        assert tokens.loc[tokens["saliency"].idxmax(), "token"] in DECIDING.values()


def test_explain_run_over_a_csv_writes_the_table(text_run: Path, tmp_path: Path,
                                                 test_texts) -> None:
    data = tmp_path / "test.csv"
    pd.DataFrame({"text": test_texts, "label": "north"}).to_csv(data, index=False)
    table = explain_run(text_run, [], data=data, top=2, out=tmp_path / "expl")
    assert len(table) == 4
    assert pd.read_csv(tmp_path / "expl" / "top_ngrams.csv")["ngram"].tolist() == \
        table["ngram"].tolist()
    saliency = explain_run(text_run, ["a walrus"], method="saliency", class_name="south")
    assert saliency["token"].tolist() == ["a", "walrus"] and set(saliency["class"]) == {"south"}


def test_cli_prints_the_ngram_tables(text_run: Path, tmp_path: Path) -> None:
    code, out, _ = run_cli(["explain", str(text_run), "one day a penguin", "--top", "2"])
    assert code == 0, out
    assert out.startswith("'one day a penguin' -> south (")
    assert "contribution" in out and "penguin" in out.splitlines()[2]
    lines = tmp_path / "lines.txt"
    lines.write_text("a walrus film\nthe penguin plot\n")
    code, out, _ = run_cli(["explain", str(text_run), "--data", str(lines), "--top", "1"])
    assert code == 0, out
    assert out.splitlines()[0].split() == ["class", "rank", "ngram", "contribution", "texts",
                                           "mean"]


@pytest.mark.parametrize(("inputs", "options", "words"), [
    (["a walrus"], {"method": "gradcam"}, ["method 'gradcam' does not fit", "ngrams, saliency"]),
    (["IMAGE"], {}, ["is an image file", "text run"]),
    (["missing/photo.png"], {}, ["'missing/photo.png' is an image file", "sentences"]),
    ([], {}, ["no inputs to explain"]),
    (["a walrus"], {"class_name": "east"}, ["unknown --class 'east'", "north, south"]),
    ([], {"data": "DATA", "method": "saliency"}, ["--data ranks n-grams"]),
    (["a walrus"], {"data": "DATA"}, ["not both"]),
])
def test_bad_input_to_a_text_run_is_one_clear_line(text_run: Path, tmp_path: Path, inputs,
                                                   options, words) -> None:
    image = str(write_image(tmp_path / "photo.jpg", (0, 0, 0)))
    data = tmp_path / "d.txt"
    data.write_text("a walrus\n")
    inputs = [image if item == "IMAGE" else item for item in inputs]
    options = {k: str(data) if v == "DATA" else v for k, v in options.items()}
    assert_user_error(lambda: explain_run(text_run, inputs, **options), *words)


def test_mistakes_are_answered_without_loading_tensorflow(text_run: Path, tmp_path: Path) -> None:
    cases = [[str(text_run), "x", "--method", "smoothgrad"], [str(text_run), "x", "--class", "Q"],
             [str(text_run)], [str(text_run), "cat.jpg"], [str(tmp_path), "x"]]
    script = (
        "import json, sys\n"
        "import tlkit.cli\n"
        f"for args in json.loads({json.dumps(cases)!r}):\n"
        "    try:\n"
        "        tlkit.cli.main(['explain', *args])\n"
        "    except SystemExit as exit_:\n"
        "        assert exit_.code == 2, (args, exit_.code)\n"
        "    assert 'tensorflow' not in sys.modules, args\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
    assert done.stderr.count("Error: ") == len(cases), done.stderr


def test_an_image_model_is_not_a_text_cnn() -> None:
    from tlkit.backbones import build_tiny_cnn

    assert_user_error(lambda: kim_parts(build_tiny_cnn(include_top=True)), "not a tlkit text CNN")


def test_top_below_one_is_one_line(text_run: Path) -> None:
    from tlkit.explain.run import explain_run

    assert_user_error(lambda: explain_run(text_run, ["a film"], top=0), "--top 0", "1 or more")
    code, _, err = run_cli(["explain", str(text_run), "a film", "--top", "0"])
    assert code == 2 and "--top" in err
