"""The public Python API is what the README says: its Python blocks run, here, on small data."""

from __future__ import annotations

import subprocess
import sys

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
