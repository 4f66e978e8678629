"""The public Python API is what the README says: its Python blocks run, here, on small data."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

# Ways a script reaches the public names; each must give the functions, never the modules
# tlkit.predict and tlkit.evaluate of the same names.
IMPORT_ORDERS = [
    "import tlkit\npredict, evaluate = tlkit.predict, tlkit.evaluate",
    "from tlkit import predict, evaluate",
    "import tlkit.predict, tlkit.evaluate\npredict, evaluate = tlkit.predict, tlkit.evaluate",
    "import tlkit.export, tlkit.cli.evaluate  # import the modules first, as the CLI does\n"
    "from tlkit import predict, evaluate",
    "import tlkit\nfirst = tlkit.predict\nimport tlkit.predict\nfrom tlkit import evaluate\n"
    "predict = tlkit.predict\nassert predict is first",
    "from tlkit import *",
]


@pytest.mark.parametrize("imports", IMPORT_ORDERS)
def test_public_names_are_the_functions_however_imported(imports: str) -> None:
    check = (f"{imports}\nimport tlkit, types\n"
             "for name in tlkit.__all__:\n"
             "    value = getattr(tlkit, name)\n"
             "    assert not isinstance(value, types.ModuleType), (name, value)\n"
             "assert predict.__name__ == 'predict' and evaluate.__name__ == 'evaluate'\n"
             "assert predict is tlkit.predict and evaluate is tlkit.evaluate")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_import_tlkit_loads_no_tensorflow() -> None:
    check = ("import sys, tlkit\n"
             "print(sorted(m for m in ('tensorflow', 'keras', 'numpy', 'pandas') "
             "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]


ROOT = Path(__file__).resolve().parents[1]
# The only changes made to the README's blocks before they run, so that they take seconds:
# a backbone of a few thousand parameters without ImageNet weights, and one epoch.
SUBSTITUTIONS = [
    (r'backbone="efficientnet_lite0"', 'backbone="tiny_cnn", weights="none"'),
    (r"\b(epochs\s*=\s*)\d+", r"\g<1>1"),
]


def python_blocks(markdown: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.S | re.M)


def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    blocks = python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 2, "the README's Python section lost its examples"
    for shipped in ("datasets", "recipes"):  # the blocks run from the repository's root
        (tmp_path / shipped).symlink_to(ROOT / shipped)
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        for pattern, replacement in SUBSTITUTIONS:
            block = re.sub(pattern, replacement, block)
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "no data given; pass --data (or data=)" in printed
    assert len(list((tmp_path / "runs").iterdir())) == 2  # one image run, one text run
