"""The table layer both jobs share: reading, class order, label ids, hold-outs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import assert_user_error, make_image_folder

from tlkit.data.tables import (
    class_order,
    held_out_count,
    label_ids,
    read_table,
    require_columns,
    stratified_holdout,
)


def test_natural_class_order_numbers_as_numbers_then_text() -> None:
    assert class_order(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert class_order(["img10", "img2", "cat"]) == ["cat", "img2", "img10"]
    assert class_order(["neg", "pos"]) == ["neg", "pos"]


def test_read_table_keeps_strings_strips_bom_and_splits_by_suffix(tmp_path: Path) -> None:
    csv_file = tmp_path / "a.csv"
    csv_file.write_bytes("\ufefflabel,text\n007,\"a, b\"\n10,\n".encode())
    frame = read_table(csv_file)
    assert list(frame.columns) == ["label", "text"]
    assert frame["label"].tolist() == ["007", "10"]
    assert frame["text"].tolist() == ["a, b", ""]
    tsv_file = tmp_path / "a.tsv"
    tsv_file.write_text('label\ttext\n1\t"quoted" stays\n', encoding="utf-8")
    assert read_table(tsv_file)["text"].tolist() == ['"quoted" stays']


@pytest.mark.parametrize("content, words", [
    ("", ["is empty"]),
    ("label,text\n", ["header but no data rows"]),
])
def test_read_table_empty_files_say_what_is_missing(tmp_path: Path, content: str,
                                                    words: list[str]) -> None:
    path = tmp_path / "t.csv"
    path.write_text(content, encoding="utf-8")
    assert_user_error(lambda: read_table(path), *words)


def test_read_table_undecodable_bytes_name_line_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"label,text\na,ok\nb,caf\xe9\n")
    assert_user_error(lambda: read_table(path), "line 3", "--encoding")
    assert read_table(path, "latin-1")["text"].tolist() == ["ok", "café"]


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8"])
@pytest.mark.parametrize("encoding", ["utf-8", "latin-1", "utf-16"])
def test_a_byte_order_mark_says_how_the_file_is_read(tmp_path: Path, codec: str,
                                                     encoding: str) -> None:
    """What spreadsheets save as "Unicode text" (UTF-16 with a mark) reads as it is."""
    path = tmp_path / "t.csv"
    path.write_bytes("\ufefftext,label\ncafé crème,pos\n".encode(codec))
    assert path.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff", b"\xef\xbb")
    frame = read_table(path, encoding)
    assert frame.to_dict("list") == {"text": ["café crème"], "label": ["pos"]}


def test_label_ids_name_unknown_labels_with_counts() -> None:
    assert label_ids(["b", "a"], ["a", "b"]).tolist() == [1, 0]
    assert_user_error(lambda: label_ids(["a", "z", "z"], ["a", "b"]), "'z' (2 example(s))")


def test_hold_out_rounds_up_and_keeps_one_per_class() -> None:
    assert held_out_count(101, 0.15, 2) == 16  # ceil(15.15)
    assert held_out_count(20, 0.01, 3) == 3
    kept, held = stratified_holdout(["a"] * 10 + ["b"] * 10, 0.15, seed=1)
    assert len(held) == 3 and len(kept) == 17
    assert sorted(set(kept) | set(held)) == list(range(20))


def test_image_csv_labels_stay_strings_and_classes_order_naturally(tmp_path: Path) -> None:
    """Changelog: image labels are read as strings (007 stays 007), classes in natural order."""
    from tlkit.data.images import load_image_data
    from tlkit.recipes import ImageRecipe

    folder = make_image_folder(tmp_path / "img", per_class=6, classes=("red", "green", "blue"))
    names = {"red": "007", "green": "10", "blue": "2"}
    rows = [(str(p.relative_to(tmp_path)), names[p.parent.name])
            for p in sorted(folder.rglob("*.png"))]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(tmp_path / "data.csv", index=False)
    data = load_image_data(ImageRecipe(data=str(tmp_path / "data.csv")))
    assert data.class_names == ["2", "007", "10"]


def test_image_and_text_hold_outs_agree() -> None:
    """Changelog: image splits round up like text splits (one rule, ``held_out_count``)."""
    from tlkit.data.images import split_table
    from tlkit.data.text import dev_split

    labels = ["a"] * 11 + ["b"] * 11
    frame = pd.DataFrame({"path": [str(i) for i in range(22)], "label": labels, "split": None})
    image_val = (split_table(frame, 0.15, 0.0, seed=3)["split"] == "val").sum()
    _, text_dev = dev_split(labels, 0.15, seed=3)
    assert image_val == len(text_dev) == held_out_count(22, 0.15, 2) == 4


def test_a_missing_column_in_a_file_tlkit_wrote_says_to_train_again() -> None:
    frame = pd.DataFrame({"path": ["a.png"], "label": ["x"]})
    assert_user_error(lambda: require_columns(frame, {"path": None, "split": None}, "'s.csv'"),
                      "'s.csv' has no column 'split' (columns: path, label); tlkit wrote this "
                      "file with it: it was changed by hand, train the run again")
