"""Multi-label data: label sets, 0/1 columns, iterative stratification, recipe fields, flags."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, make_image_folder, run_cli

from tlkit.data.images import (
    ImageData,
    read_image_table,
    read_recipe_table,
    split_checked,
    split_table,
)
from tlkit.data.labels import (
    LabelFormat,
    balanced_label_weights,
    check_split,
    held_out_size,
    holdout,
    iterative_folds,
    iterative_kfold,
    join_label_sets,
    label_matrix,
    multi_label_classes,
    parse_label_sets,
    sets_from_columns,
)
from tlkit.data.tables import stratified_holdout
from tlkit.data.text import kfold_splits, prepare_text_data, read_text_table
from tlkit.recipes import ImageRecipe, TextCNNRecipe, dump_recipe, load_recipe_text

ROOT = Path(__file__).resolve().parents[1]
MULTI = LabelFormat(multi=True)

# ------------------------------------------------------------------------ parsing and matrix


def test_label_sets_are_split_stripped_deduplicated_and_in_class_order() -> None:
    sets = parse_label_sets(["sunset|beach", " beach | sunset |beach", "", "img10|img2", "a||"])
    assert sets == [("beach", "sunset"), ("beach", "sunset"), (), ("img2", "img10"), ("a",)]
    assert parse_label_sets(["a;b", "a|b"], sep=";") == [("a", "b"), ("a|b",)]
    assert parse_label_sets(join_label_sets(sets, ";"), ";") == sets


def test_classes_are_the_labels_that_occur_in_natural_order_and_the_matrix_marks_them() -> None:
    sets = parse_label_sets(["10|2", "", "2", "b|a"])
    names = multi_label_classes(sets)
    assert names == ["2", "10", "a", "b"]
    matrix = label_matrix(sets, names)
    assert matrix.dtype == np.uint8 and matrix.shape == (4, 4)
    assert matrix.tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1]]


def test_a_label_the_model_does_not_know_is_one_line() -> None:
    assert_user_error(lambda: label_matrix([("a", "z"), ("z",)], ["a", "b"]),
                      "label(s) the model does not know: 'z' (2 example(s))", "a, b")


def test_zero_one_columns_give_label_sets_named_by_column() -> None:
    frame = pd.DataFrame({"sunset": ["1", "0", " 1 ", "0"], "beach": ["1", "0", "0", "1"]})
    assert sets_from_columns(frame, ["sunset", "beach"], "'t.csv'") == [
        ("beach", "sunset"), (), ("sunset",), ("beach",)]


@pytest.mark.parametrize("value", ["2", "yes", "", "0.5"])
def test_a_label_column_value_other_than_0_or_1_names_column_and_row(value: str) -> None:
    frame = pd.DataFrame({"a": ["1", "0", "1"], "b": ["0", "1", value]})
    assert_user_error(lambda: sets_from_columns(frame, ["a", "b"], "'t.csv'"),
                      f"'{value}' in label column 'b', data row 3", "1", "0")


def test_a_missing_label_column_says_which_flag_names_it() -> None:
    frame = pd.DataFrame({"a": ["1"], "path": ["x"]})
    assert_user_error(lambda: sets_from_columns(frame, ["a", "b"], "'t.csv'"),
                      "no column 'b'", "--label-columns")


# ----------------------------------------------------------------------------- image tables


def _image_csv(tmp_path: Path, labels: list[str], extra: dict[str, list[str]] | None = None,
               column: str = "label") -> Path:
    """A CSV of empty files named 0.png, 1.png, ... (the readers only check they exist)."""
    for i in range(len(labels)):
        (tmp_path / f"{i}.png").touch()
    frame = pd.DataFrame({"path": [f"{i}.png" for i in range(len(labels))], column: labels,
                          **(extra or {})})
    path = tmp_path / "images.csv"
    frame.to_csv(path, index=False)
    return path


def test_an_image_csv_holds_label_sets_and_says_how_many_are_empty(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _image_csv(tmp_path, ["sunset|beach", "", "beach", "people|beach", ""])
    table = read_image_table(path, labels=MULTI)
    assert table["label"].tolist() == ["beach|sunset", "", "beach", "beach|people", ""]
    assert "2 of 5 images" in capsys.readouterr().err
    single = read_image_table(_image_csv(tmp_path, ["a", "b"]), labels=LabelFormat())
    assert single["label"].tolist() == ["a", "b"]


def test_an_image_csv_with_0_1_columns_and_another_separator(tmp_path: Path) -> None:
    path = _image_csv(tmp_path, ["x"] * 3, {"sea": ["1", "0", "1"], "sky": ["1", "1", "0"]})
    table = read_image_table(path, labels=LabelFormat(True, ";", ("sky", "sea")))
    assert table["label"].tolist() == ["sea|sky", "sky", "sea"]  # tables join with "|"
    path = _image_csv(tmp_path, ["sky;sea", "sea", ""])
    table = read_image_table(path, labels=LabelFormat(True, ";"))
    assert table["label"].tolist() == ["sea|sky", "sea", ""]
    written = tmp_path / "split.csv"  # what a run writes, read back as LabelFormat.written
    table.to_csv(written, index=False)
    again = read_image_table(written, labels=LabelFormat(True, ";").written)
    assert again["label"].tolist() == table["label"].tolist()


def test_a_label_holding_the_table_separator_is_one_line(tmp_path: Path) -> None:
    path = _image_csv(tmp_path, ["a|b;c", "c"])
    assert_user_error(lambda: read_image_table(path, labels=LabelFormat(True, ";")),
                      "label 'a|b' in", "contains '|'", "rename the label")


def test_label_columns_replace_the_label_column(tmp_path: Path) -> None:
    path = _image_csv(tmp_path, ["1", "0"], {"sky": ["0", "1"]}, column="sea")
    table = read_image_table(path, labels=LabelFormat(True, columns=("sea", "sky")))
    assert table["label"].tolist() == ["sea", "sky"]


@pytest.mark.parametrize(("labels", "words"), [
    (["", "", ""], ["gives no image a label", "--label-sep"]),
    (["a", "", "a"], ["has a single label ('a')", "at least two"]),
])
def test_image_label_sets_that_cannot_train_are_one_line(tmp_path: Path, labels: list[str],
                                                         words: list[str]) -> None:
    path = _image_csv(tmp_path, labels)
    assert_user_error(lambda: read_image_table(path, labels=MULTI), *words)


def test_a_bad_value_in_an_image_label_column_is_one_line(tmp_path: Path) -> None:
    path = _image_csv(tmp_path, ["x"] * 2, {"sea": ["1", "x"], "sky": ["0", "1"]})
    assert_user_error(lambda: read_image_table(path, labels=LabelFormat(True, columns=(
        "sea", "sky"))), "'x' in label column 'sea', data row 2")


def test_an_image_folder_cannot_be_multi_label(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images", per_class=1)
    assert_user_error(lambda: read_image_table(folder, labels=MULTI),
                      "cannot give an image several labels", "CSV", "beach|sunset",
                      "--label-columns")


def _multi_csv(tmp_path: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    names = ["beach", "people", "sunset"]
    rows = [tuple(name for name, p in zip(names, (0.5, 0.3, 0.4), strict=True)
                  if rng.random() < p) for _ in range(n)]
    return _image_csv(tmp_path, join_label_sets(rows))


def test_a_multi_label_recipe_splits_by_label_sets_and_gives_the_matrix(tmp_path: Path) -> None:
    recipe = ImageRecipe(data=str(_multi_csv(tmp_path)), labels="multi", val_fraction=0.2,
                         test_fraction=0.2, backbone="tiny_cnn")
    table, class_names = split_checked(recipe, read_recipe_table(recipe))
    assert table["split"].value_counts().to_dict() == {"train": 21, "val": 8, "test": 8,
                                                          "calibration": 3}
    assert class_names == ["beach", "people", "sunset"]
    data = ImageData(table, class_names, [], LabelFormat.of(recipe))
    targets = data.targets(data.split("val"))
    assert targets.shape == (8, 3) and set(np.unique(targets)) <= {0, 1}
    again, _ = split_checked(recipe, read_recipe_table(recipe))
    assert again["split"].tolist() == table["split"].tolist()  # seeded


def test_split_table_of_label_sets_holds_out_each_label(tmp_path: Path) -> None:
    table = read_image_table(_multi_csv(tmp_path, 60), labels=MULTI).assign(split=None)
    split = split_table(table, 0.25, 0.25, seed=3, sep="|")
    matrix = label_matrix(parse_label_sets(split["label"]), ["beach", "people", "sunset"])
    for name in ("train", "val", "test"):
        share = matrix[(split["split"] == name).to_numpy()].mean(axis=0)
        assert np.abs(share - matrix.mean(axis=0)).max() < 0.1, (name, share)


# ------------------------------------------------------------------------------------- text


def test_a_text_table_holds_label_sets_and_prepares_a_float_matrix(
        capsys: pytest.CaptureFixture[str]) -> None:
    frame = pd.DataFrame({"text": ["sun and sea", "sea", "sun", "rain"] * 5,
                          "label": ["sea|sun", "sea", "sun", ""] * 5})
    table = read_text_table(frame, labels=MULTI)
    assert "5 of 20 texts" in capsys.readouterr().err
    data = prepare_text_data(table, dev_fraction=0.2, labels=MULTI)
    assert data.class_names == ["sea", "sun"] and data.label_format.multi
    train, dev = data.splits["train"], data.splits["dev"]
    assert (len(train.labels), len(dev.labels)) == (16, 4)
    assert train.labels.dtype == np.float32 and train.labels.shape == (16, 2)
    # Each row of the matrix is its text's label set.
    for text, row in zip(train.texts, train.labels, strict=True):
        assert row.tolist() == [float("sea" in text), float("sun" in text)]


def test_a_tsv_file_gives_label_sets_from_a_column_or_from_0_1_columns(tmp_path: Path) -> None:
    path = tmp_path / "comments.tsv"
    path.write_text("text\tlabel\ttoxic\tinsult\n"
                    "you fool\ttoxic;insult\t1\t1\n"
                    "nice one\t\t0\t0\n"
                    "go away\ttoxic\t1\t0\n", encoding="utf-8")
    by_column = read_text_table(path, labels=LabelFormat(True, ";"))
    by_flags = read_text_table(path, labels=LabelFormat(True, columns=("toxic", "insult")))
    assert by_column["label"].tolist() == by_flags["label"].tolist() == [
        "insult|toxic", "", "toxic"]


def test_text_batches_carry_the_label_matrix() -> None:
    from tlkit.data.text import text_dataset
    from tlkit.seeds import EpochClock

    frame = pd.DataFrame({"text": ["sun and sea", "sea", "sun", "rain"] * 3,
                          "label": ["sea|sun", "sea", "sun", ""] * 3})
    data = prepare_text_data(read_text_table(frame, labels=MULTI), dev_fraction=0, labels=MULTI)
    split = data.splits["train"]
    for stream in (text_dataset(split, 5), text_dataset(split, 5, shuffle=True,
                                                        clock=EpochClock(0))):
        labels = np.concatenate([batch_labels.numpy() for _, batch_labels in stream])
        assert labels.shape == (12, 2)
        assert sorted(map(tuple, labels)) == sorted(map(tuple, split.labels))


def test_text_class_files_cannot_be_multi_label(tmp_path: Path) -> None:
    for name in ("pos", "neg"):
        (tmp_path / f"{name}.txt").write_text("a line\n", encoding="utf-8")
    for source in (tmp_path, [tmp_path / "pos.txt", tmp_path / "neg.txt"]):
        assert_user_error(lambda source=source: read_text_table(source, labels=MULTI),
                          "one file per class cannot give a text several labels", "CSV/TSV",
                          "toxic|insult")


def test_text_label_sets_with_no_label_or_unseen_labels_are_one_line() -> None:
    empty = pd.DataFrame({"text": ["a", "b", "c"], "label": ["", "", ""]})
    assert_user_error(lambda: prepare_text_data(empty, dev_fraction=0, labels=MULTI),
                      "gives no text a label")
    train = pd.DataFrame({"text": ["a", "b"], "label": ["x|y", "y"]})
    test = pd.DataFrame({"text": ["c"], "label": ["x|z"]})
    assert_user_error(lambda: prepare_text_data(train, test, dev_fraction=0, labels=MULTI),
                      "never seen in training", "'z'")


def test_a_dev_split_of_label_sets_that_leaves_nothing_to_train_on_is_one_line() -> None:
    assert_user_error(lambda: check_split(["a|b"], 0.5, "|", "texts", "add texts"),
                      "cannot hold out 50% of 1 texts: too few would be left to train on")


def test_kfold_of_label_sets_covers_every_row_once_and_keeps_each_label_in_training() -> None:
    labels = ["a|b", "a", "b", "c|a", "c", "b|c", "a", "", "b", "c"] * 3
    folds = kfold_splits(labels, 3, seed=1, sep="|")
    tested = np.sort(np.concatenate([test for _, test in folds]))
    assert tested.tolist() == list(range(30)) and [len(t) for _, t in folds] == [10, 10, 10]
    for train, test in folds:
        assert not set(train) & set(test)
        assert multi_label_classes(parse_label_sets([labels[i] for i in train])) == ["a", "b", "c"]
    assert_user_error(lambda: kfold_splits(["a|b", "a", "b"], 3, sep="|"),
                      "--cv 3: label 'a' has only 2 example(s)", "--cv 2")
    assert_user_error(lambda: iterative_kfold(["", ""], 2, 0), "no labelled texts")


def test_balanced_label_weights_give_each_side_of_each_label_half_the_examples() -> None:
    matrix = made_label_matrix(0, n=200)
    weights = balanced_label_weights(matrix)
    assert weights.shape == (6, 2) and weights.dtype == np.float32
    positives = matrix.sum(axis=0)
    np.testing.assert_allclose(positives * weights[:, 1], 100, rtol=1e-5)
    np.testing.assert_allclose((200 - positives) * weights[:, 0], 100, rtol=1e-5)
    assert balanced_label_weights(np.ones((3, 2))).tolist() == [[1.0, 0.5], [1.0, 0.5]]


# ---------------------------------------------------------- iterative stratification itself


def made_label_matrix(seed: int, n: int = 600) -> np.ndarray:
    """Six labels from common to rare, the second often with the first (label correlation)."""
    rng = np.random.default_rng(seed)
    matrix = (rng.random((n, 6)) < [0.4, 0.3, 0.2, 0.1, 0.05, 0.03]).astype(int)
    matrix[:, 1] |= matrix[:, 0] & (rng.random(n) < 0.5)
    return matrix


def as_strings(matrix: np.ndarray) -> list[str]:
    return join_label_sets([tuple(f"l{j}" for j in np.flatnonzero(row)) for row in matrix])


# A split's share of each label is within SHARE of the whole set's (scikit-multilearn's
# splits of these sets are within 0.017, a random split's up to 0.05) and within
# THEIRS of scikit-multilearn's split of the same data.
SHARE, THEIRS = 0.02, 0.03


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fraction", [0.15, 0.3])
def test_holdout_matches_scikit_multilearn(seed: int, fraction: float) -> None:
    stratification = pytest.importorskip("skmultilearn.model_selection")
    matrix = made_label_matrix(seed)
    n, whole = len(matrix), matrix.mean(axis=0)
    kept, held = holdout(as_strings(matrix), fraction, seed, sep="|")
    assert len(held) == held_out_size(n, fraction) == np.ceil(fraction * n)
    assert np.sort(np.concatenate([kept, held])).tolist() == list(range(n))
    np.random.seed(seed)  # scikit-multilearn breaks ties with NumPy's global generator
    splitter = stratification.IterativeStratification(
        n_splits=2, order=1, sample_distribution_per_fold=[fraction, 1 - fraction])
    their_kept, their_held = next(splitter.split(np.zeros((n, 1)), matrix))
    for mine, theirs in ((held, their_held), (kept, their_kept)):
        assert np.abs(matrix[mine].mean(axis=0) - whole).max() <= SHARE
        assert np.abs(matrix[theirs].mean(axis=0) - whole).max() <= SHARE
        assert np.abs(matrix[mine].mean(axis=0) - matrix[theirs].mean(axis=0)).max() <= THEIRS


@pytest.mark.parametrize("seed", [0, 1])
def test_kfold_matches_scikit_multilearn(seed: int) -> None:
    stratification = pytest.importorskip("skmultilearn.model_selection")
    matrix = made_label_matrix(seed)
    whole = matrix.mean(axis=0)
    mine = iterative_kfold(as_strings(matrix), 5, seed)
    np.random.seed(seed)
    theirs = list(stratification.IterativeStratification(n_splits=5, order=1).split(
        np.zeros((len(matrix), 1)), matrix))
    for (_, my_test), (_, their_test) in zip(mine, theirs, strict=True):
        assert len(my_test) == len(their_test) == 120
        assert np.abs(matrix[my_test].mean(axis=0) - whole).max() <= SHARE
        assert np.abs(matrix[their_test].mean(axis=0) - whole).max() <= SHARE
        assert np.abs(matrix[my_test].mean(axis=0) -
                      matrix[their_test].mean(axis=0)).max() <= THEIRS


def test_iterative_stratification_is_seeded_and_deterministic() -> None:
    matrix = made_label_matrix(0, n=200)
    first = iterative_folds(matrix, [150, 50], seed=7)
    assert (iterative_folds(matrix, [150, 50], seed=7) == first).all()
    assert (iterative_folds(matrix, [150, 50], seed=8) != first).any()
    assert np.bincount(first).tolist() == [150, 50]
    script = ("import numpy as np\nfrom tlkit.data.labels import iterative_folds\n"
              f"m = np.array({matrix.tolist()})\n"
              "print(iterative_folds(m, [150, 50], seed=7).tolist())")
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           cwd=ROOT, timeout=60, check=True)
    assert json.loads(other.stdout) == first.tolist()  # and across processes


def test_single_labels_split_as_before() -> None:
    labels = ["a"] * 12 + ["b"] * 8 + ["c"] * 5
    for got, expected in zip(holdout(labels, 0.2, 4), stratified_holdout(labels, 0.2, 4),
                             strict=True):
        assert got.tolist() == expected.tolist()
    assert check_split(labels, 0.2) == 5


# ------------------------------------------------------------------- recipe fields and flags


@pytest.mark.parametrize("recipe", [
    ImageRecipe(labels="multi", label_sep=";", label_columns=["sea", "sky"]),
    TextCNNRecipe(labels="multi", label_sep=",", label_columns=None),
], ids=["image", "textcnn"])
def test_label_fields_round_trip_through_yaml(recipe: object) -> None:
    text = dump_recipe(recipe)
    assert "labels: multi" in text
    assert load_recipe_text(text) == recipe
    assert LabelFormat.of(load_recipe_text(text)).multi


FIELD_ERRORS = {
    "labels several": ("labels: several\n", "labels 'several' is not one of single, multi"),
    "label_columns single": ("label_columns: [sea, sky]\n",
                             "label_columns (sea, sky) needs labels: multi"),
    "label_sep blank": ("labels: multi\nlabel_sep: ' '\n", "label_sep ' ' is blank"),
    "label_columns one": ("labels: multi\nlabel_columns: [sea]\n",
                          "label_columns (sea) must name two or more"),
    "label_columns twice": ("labels: multi\nlabel_columns: [sea, sea]\n",
                            "label_columns names 'sea' twice"),
    "label_columns text": ("labels: multi\nlabel_columns: sea\n",
                           "label_columns must be a list"),
}


@pytest.mark.parametrize(("text", "words"), FIELD_ERRORS.values(), ids=FIELD_ERRORS.keys())
@pytest.mark.parametrize("kind", ["image", "textcnn"])
def test_label_field_mistakes_are_one_line(text: str, words: str, kind: str) -> None:
    assert_user_error(lambda: load_recipe_text(f"kind: {kind}\n{text}"), words)


FLAG_ERRORS = [
    (["finetune", "--multi-label", "--data", "{folder}"],
     "cannot give an image several labels"),
    (["finetune", "--label-columns", "sea,sky", "--data", "{folder}"],
     "label_columns (sea, sky) needs labels: multi"),
    (["textcnn", "train", "--multi-label", "--label-columns", "sea", "--data", "t.csv"],
     "label_columns (sea) must name two or more"),
    (["textcnn", "train", "--multi-label", "--label-sep", " ", "--data", "t.csv"],
     "label_sep ' ' is blank"),
]
FLAG_IDS = ["finetune --multi-label --data folder", "finetune --label-columns sea,sky",
            "textcnn train --multi-label --label-columns sea",
            "textcnn train --multi-label --label-sep blank"]


@pytest.mark.parametrize(("args", "words"), FLAG_ERRORS, ids=FLAG_IDS)
def test_label_flag_mistakes_are_one_line_exit_2(args: list[str], words: str,
                                                 tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images", per_class=2)
    args = [arg.format(folder=folder) for arg in args]
    code, stdout, stderr = run_cli([*args, "--out", str(tmp_path / "runs")])
    assert code == 2, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0], stderr
    assert not (tmp_path / "runs").exists()


def test_label_flag_mistakes_are_answered_before_tensorflow(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images", per_class=2)
    cases = [[arg.format(folder=folder) for arg in args] + ["--out", str(tmp_path / "runs")]
             for args, _ in FLAG_ERRORS]
    script = ("import json, sys\nfrom tlkit.cli import main\n"
              f"for args in json.loads({json.dumps(cases)!r}):\n"
              "    try:\n        main(args)\n"
              "    except SystemExit as exit_:\n"
              "        assert exit_.code == 2, (args, exit_.code)\n"
              "    assert 'tensorflow' not in sys.modules, args\nprint('ok')\n")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize(("command", "target"), [
    (["finetune"], "tlkit.train.image.finetune"),
    (["textcnn", "train"], "tlkit.train.text.train_textcnn"),
])
def test_label_flags_reach_the_recipe(command: list[str], target: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def train(recipe: object, **_: object) -> None:
        seen.append(recipe)
        raise SystemExit(0)

    monkeypatch.setattr(target, train)
    code, _, stderr = run_cli([*command, "--data", "t.csv", "--multi-label", "--label-sep", ";",
                               "--label-columns", " sea, sky ", "--out", str(tmp_path)])
    assert code == 0, stderr
    (recipe,) = seen
    assert (recipe.labels, recipe.label_sep, recipe.label_columns) == ("multi", ";",
                                                                       ["sea", "sky"])
    code, _, _ = run_cli([*command, "--data", "t.csv", "--out", str(tmp_path)])
    assert seen[-1].labels == "single" and seen[-1].label_columns is None
