"""datasets/questions, the small text set that ships for trying the text CNN offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tlkit.recipes import TextCNNRecipe
from tlkit.train.text import read_recipe_tables

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "datasets" / "questions"


def test_the_script_remakes_the_shipped_files_byte_for_byte(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "datasets" / "make_questions.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    for name in ("train.csv", "test.csv"):
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes()


def test_the_folder_reads_as_split_tables_with_balanced_classes() -> None:
    tables = read_recipe_tables(TextCNNRecipe(data=str(SHIPPED)))
    assert set(tables) == {"train", "test"}
    for table, per_class in ((tables["train"], 44), (tables["test"], 11)):
        assert table["label"].value_counts().to_dict() == {
            "number": per_class, "person": per_class, "place": per_class}
    assert not set(tables["train"]["text"]) & set(tables["test"]["text"])
