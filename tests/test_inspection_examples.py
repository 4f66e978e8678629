"""The docstring examples of the inspection package run and give what they show."""

import doctest
import importlib

import pytest

MODULES = ["tlkit.inspection", "tlkit.inspection.layers",
           "tlkit.inspection.memory", "tlkit.inspection.receptive_field",
           "tlkit.inspection.report", "tlkit.inspection.table"]


@pytest.mark.parametrize("name", MODULES)
def test_examples(name: str) -> None:
    module = importlib.import_module(name)
    failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failed == 0
    assert attempted > 0
