"""The reference ops read as a textbook: one screen per function, no engine machinery."""

import ast
import re
from pathlib import Path

import pytest

import scratchseg

FUNCTIONAL = Path(scratchseg.__file__).parent / "functional"
SCREEN = 60  # lines, docstring included
ENGINE_WORDS = ("thread", "band", "workspace", "scratch", "row shift", "in_parts", "tuning")


def _public_functions():
    for path in sorted(FUNCTIONAL.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                yield path.name, node


def test_the_reference_ops_exist_where_the_docs_say():
    names = {node.name for _, node in _public_functions()}
    assert {"conv2d_forward", "conv2d_backward", "im2col", "col2im", "max_pool2d_forward",
            "relu_backward", "softmax_cross_entropy_forward"} <= names


@pytest.mark.parametrize("file, function", [(f, n) for f, n in _public_functions()],
                         ids=lambda v: v if isinstance(v, str) else v.name)
def test_every_public_function_fits_one_screen(file, function):
    length = function.end_lineno - function.lineno + 1
    assert length <= SCREEN, f"{file}: {function.name} is {length} lines"


@pytest.mark.parametrize("path", sorted(FUNCTIONAL.glob("*.py")), ids=lambda p: p.name)
def test_nothing_in_functional_knows_about_the_engine(path):
    text = path.read_text()
    tree = ast.parse(text)
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert not {m for m in imported if m and ("fast" in m or "thread" in m)}, imported
    lowered = text.lower()
    assert [word for word in ENGINE_WORDS if re.search(rf"\b{word}s?\b", lowered)] == []
