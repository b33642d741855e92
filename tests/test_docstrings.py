"""Docstring hygiene: every public name has a docstring with an example, which either runs as a doctest
(pytest runs them: ``--doctest-modules``) or is marked as needing a device; and no expected output depends on
the NumPy version (NumPy 2 prints scalars as ``np.int8(3)``, NumPy 1 as ``3``)."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
from typing import Any

import pytest

import pyacl_qscatter as qs

NUMPY2_REPR = re.compile(r"\bnp\.(u?int\d+|float\d+|bool|str_|bytes_|complex\d+)\(")


def public_objects() -> list[tuple[str, Any]]:
    """Every public callable of ``pyacl_qscatter.__all__``, and the public methods and properties of its classes."""
    out = []
    for name in qs.__all__:
        obj = getattr(qs, name)
        if not callable(obj):
            continue  # data (PRODUCTS, __version__) has no docstring of its own
        out.append((name, obj))
        if inspect.isclass(obj) and obj.__module__.startswith("pyacl_qscatter"):
            for attr, value in vars(obj).items():
                if attr.startswith("_") or not (callable(value) or isinstance(value, (property, classmethod,
                                                                                         staticmethod))):
                    continue
                out.append((f"{name}.{attr}", getattr(obj, attr) if not isinstance(value, property) else value))
    return out


def examples(obj: Any) -> list[doctest.Example]:
    doc = inspect.getdoc(obj) or ""
    return doctest.DocTestParser().get_examples(doc)


@pytest.mark.parametrize(("name", "obj"), public_objects(), ids=lambda v: v if isinstance(v, str) else "")
def test_public_name_has_an_example(name: str, obj: Any) -> None:
    assert inspect.getdoc(obj), f"{name} has no docstring"
    assert examples(obj), f"{name}: the docstring has no '>>>' example (mark it '# doctest: +SKIP' if it needs " \
                          "a device)"


def test_the_walk_finds_the_api() -> None:
    names = {name for name, _ in public_objects()}
    assert {"quant_scatter_", "DeviceArray.to_numpy", "Stream.synchronize", "InvalidValueError"} <= names


def test_no_expected_output_depends_on_the_numpy_version() -> None:
    finder = doctest.DocTestFinder(exclude_empty=True)
    offenders = []
    for info in pkgutil.walk_packages(qs.__path__, "pyacl_qscatter."):
        if info.name.endswith("._cann"):
            continue
        module = importlib.import_module(info.name)
        for test in finder.find(module):
            offenders += [f"{test.name}: {ex.want.strip()}" for ex in test.examples if NUMPY2_REPR.search(ex.want)]
    assert not offenders, "use int(...) or .tolist() in these examples: " + "; ".join(offenders)
