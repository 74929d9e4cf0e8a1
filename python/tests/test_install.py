"""The documented install command works offline and gives an importable, typed package.

Runs `pip install --no-build-isolation .` (into a target folder, reusing the
already built CMake tree through VISMEM_BUILD_DIR so nothing is compiled twice)
with the package index switched off, then imports the installed copy elsewhere.
"""
import os
import subprocess
import sys

from conftest import BUILD_DIR, SOURCE_DIR


def test_pip_install_offline_and_import(tmp_path):
    target = tmp_path / "site"
    env = dict(os.environ, VISMEM_BUILD_DIR=str(BUILD_DIR), PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--target",
                        str(target), str(SOURCE_DIR)], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    pkg = target / "vismem"
    names = {f.name for f in pkg.iterdir()}
    assert {"__init__.py", "_vismem.pyi", "py.typed"} <= names
    assert any(n.startswith("_vismem.") and n.endswith(".so") for n in names), names
    code = ("import numpy as np, vismem; print(vismem.__file__); m = vismem.Memory.create('m.db', dim=3); "
            "m.add(['a', 'b'], ['x', 'y'], np.array([[1, 0, 0], [0, 1, 0]], np.float32)); "
            "print(m.search(np.array([0.1, 1, 0], np.float32), k=1).ids[0, 0])")
    env["PYTHONPATH"] = str(target)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    where, answer = r.stdout.split()
    assert where == str(pkg / "__init__.py") and answer == "b"
