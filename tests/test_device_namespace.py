"""The backend rule: device code never imports numpy and every ``xp.<name>`` exists in CuPy.

The device modules are parsed, not imported: the checker walks their syntax
trees for numpy imports and for attribute chains rooted at the name ``xp``
(``xp.matmul``, ``xp.random.default_rng``), then resolves each chain in CuPy's
namespace. CuPy imports without a GPU, so this runs on any machine with CuPy
installed.
"""

import ast
import importlib
from pathlib import Path

import numpy as np
import pytest

from scratchseg import backend

PACKAGE = Path(__file__).resolve().parent.parent / "scratchseg"
DEVICE_GLOBS = ("functional/*.py", "ops.py", "grad_mode.py", "nn/module.py", "nn/layers.py",
                "nn/unet.py", "nn/optim.py")


def device_modules():
    """Every device-code file that exists now."""
    return sorted({path for pattern in DEVICE_GLOBS for path in PACKAGE.glob(pattern)})


def numpy_imports(tree):
    """Line numbers and text of every ``import numpy...`` / ``from numpy... import``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "numpy" or alias.name.startswith("numpy."):
                    found.append((node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "numpy" or node.module.startswith("numpy."):
                found.append((node.lineno, f"from {node.module} import ..."))
    return found


def xp_chains(tree, root="xp"):
    """Every attribute chain rooted at the bare name ``root``: {('random', 'default_rng'), ...}.

    Each ``Attribute`` node gives its own chain, so ``xp.random.default_rng``
    yields ('random',) and ('random', 'default_rng').
    """
    chains = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        parts, value = [node.attr], node.value
        while isinstance(value, ast.Attribute):
            parts.append(value.attr)
            value = value.value
        if isinstance(value, ast.Name) and value.id == root:
            chains.setdefault(tuple(reversed(parts)), node.lineno)
    return chains


def missing_names(tree, namespace):
    """The ``xp`` chains that do not resolve in ``namespace``, as 'xp.a.b' strings."""
    missing = []
    for chain, line in sorted(xp_chains(tree).items()):
        target = namespace
        for name in chain:
            if not hasattr(target, name):
                missing.append((line, "xp." + ".".join(chain)))
                break
            target = getattr(target, name)
    return missing


def _parse(path):
    return ast.parse(path.read_text(), filename=str(path))


# ---------------------------------------------------------------- the checker itself


SNIPPET = """
import math
import numpy as np
from numpy.random import default_rng
from scratchseg.backend import get_array_module

def f(x):
    xp = get_array_module(x)
    y = xp.matmul(x, x) + xp.random.default_rng(0).random(3)
    return xp.nonexistent_function(y), xp.linalg.no_such_thing, x.dtype.type, math.pi
"""


def test_checker_reports_numpy_imports():
    found = numpy_imports(ast.parse(SNIPPET))
    assert [text for _, text in found] == ["import numpy", "from numpy.random import ..."]
    assert numpy_imports(ast.parse("import numbers\nfrom .numpy_like import f\n")) == []


def test_checker_reports_names_missing_from_the_namespace():
    tree = ast.parse(SNIPPET)
    chains = xp_chains(tree)
    assert {("matmul",), ("random",), ("random", "default_rng"), ("nonexistent_function",),
            ("linalg",), ("linalg", "no_such_thing")} == set(chains)
    # NumPy stands in for CuPy here so that the checker is tested on every machine
    assert [name for _, name in missing_names(tree, np)] == ["xp.linalg.no_such_thing",
                                                             "xp.nonexistent_function"]


def test_the_device_modules_are_found():
    names = {p.relative_to(PACKAGE).as_posix() for p in device_modules()}
    assert {"functional/conv.py", "functional/loss.py", "ops.py", "nn/layers.py"} <= names
    used = set().union(*(xp_chains(_parse(p)) for p in device_modules()))
    assert len(used) >= 10, "no xp.<name> found: the namespace check would be vacuous"


# ---------------------------------------------------------------- the rule


@pytest.mark.parametrize("path", device_modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_device_code_does_not_import_numpy(path):
    found = numpy_imports(_parse(path))
    assert not found, f"{path.name} imports numpy (device code must use xp): {found}"


@pytest.mark.parametrize("path", device_modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_every_xp_name_exists_in_cupy(path):
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as error:
        pytest.skip(f"CuPy is not importable here ({error}); cannot check its namespace")
    missing = missing_names(_parse(path), cupy)
    assert not missing, f"{path.name} uses names that CuPy lacks: {missing}"


def test_the_backend_module_for_numpy():
    x = np.zeros((2, 2))
    assert backend.get_array_module(x) is np
    assert backend.to_device(x, "numpy") is x
    assert type(backend.to_numpy(x.tolist())) is np.ndarray
