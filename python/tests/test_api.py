"""The public API is documented and the type stubs cover the compiled module."""
import ast
import inspect
from pathlib import Path

import vismem
from vismem import _vismem


def stub_names():
    tree = ast.parse((Path(vismem.__file__).parent / "_vismem.pyi").read_text())
    top, classes = set(), {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            top.add(node.name)
        elif isinstance(node, ast.ClassDef):
            top.add(node.name)
            classes[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
    return top, classes


def public(obj):
    return {n for n in dir(obj) if not n.startswith("__") and not n.startswith("_pybind11")}


def test_stubs_cover_the_compiled_module():
    top, classes = stub_names()
    assert top == public(_vismem)
    for name, methods in classes.items():
        assert methods >= public(getattr(_vismem, name)), name


def test_every_public_name_is_documented():
    for name in vismem.__all__:
        obj = getattr(vismem, name)
        if isinstance(obj, tuple):  # RULES
            assert obj == ("plurality", "distance", "softmax", "rank")
            continue
        assert inspect.getdoc(obj), name
    for cls in (vismem.Memory, vismem.SearchResult, vismem.Encoder):
        for name in public(cls):
            assert inspect.getdoc(getattr(cls, name)), "%s.%s" % (cls.__name__, name)
    # Docstrings carry shapes and dtypes where arrays go in or out.
    for fn in (vismem.Memory.search, vismem.Memory.add, vismem.Encoder.embed, vismem.vote):
        doc = inspect.getdoc(fn)
        assert "float" in doc and "(n" in doc.replace("(N", "(n"), fn
