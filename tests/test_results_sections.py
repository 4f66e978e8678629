"""benchmarks/run_all.py writes RESULTS.md anew but keeps the sections other benchmarks appended."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))

import run_all  # noqa: E402


def test_rewriting_results_keeps_appended_sections(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    info = {"command": "python benchmarks/run_all.py", "date": "today", "minutes": 1.0,
            "mode": "quick", "load_start": "1", "load_end": "1",
            "machine": {"cores": 2}, "settings": {"epochs": 1}}
    run_all.write_results(pd.DataFrame({"benchmark": ["old row"]}), info, path)
    kim = "## Kim CNN-rand vs a plain Keras Kim CNN, 5 seeds\n\n| set | arm |\n"
    path.write_text(path.read_text() + kim)
    run_all.write_results(pd.DataFrame({"benchmark": ["new row"]}), info, path)
    text = path.read_text()
    assert "new row" in text and "old row" not in text
    assert text.endswith(kim) and text.count("## Settings") == 1
