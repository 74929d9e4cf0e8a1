"""The examples/ scripts run and print the same numbers as the CLI."""
import json
import os
import subprocess
import sys

import numpy as np

import vismem
from conftest import MODEL, SHARED, SOURCE_DIR, cli_json, paper_style_file

EXAMPLES = SOURCE_DIR / "examples"


def run_example(name, *args, cwd):
    # The examples import the vismem these tests import (build/python or an installed copy).
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(vismem.__file__)))
    p = subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                       env=env)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_evaluate_neighbor_file_example(tmp_path):
    paper_style_file(tmp_path / "nn.json", np.random.default_rng(9), nq=80, K=40)
    (tmp_path / "ex.txt").write_text("train_1\ntrain_2\ntrain_3\n")
    out = run_example("evaluate_neighbor_file.py", tmp_path / "nn.json", "--json", "--k", 25, "--exclude",
                      tmp_path / "ex.txt", cwd=tmp_path)
    assert json.loads(out) == cli_json("eval", "--neighbors", tmp_path / "nn.json", "--json", "--k", 25, "--exclude",
                                       tmp_path / "ex.txt")
    # The text report checks itself (arrays vs evaluate) and names the hardest classes.
    out = run_example("evaluate_neighbor_file.py", tmp_path / "nn.json", cwd=tmp_path)
    assert "80 queries" in out and "(same as above)" in out


def test_accuracy_vs_k_example(tmp_path):
    data = SHARED / "data" / "imagenette2"
    for split, n in (("train", 5), ("val", 3)):
        for c in ("n01440764", "n02102040", "n03888257"):
            (tmp_path / split / c).mkdir(parents=True)
            for f in sorted(os.listdir(data / split / c))[:n]:
                os.symlink(data / split / c / f, tmp_path / split / c / f)
    png = tmp_path / "plot.png"
    run_example("accuracy_vs_k.py", "--train", tmp_path / "train", "--val", tmp_path / "val", "--model", MODEL,
                "--memory", tmp_path / "mem.db", "--out", png, "--k", 10, cwd=tmp_path)
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert (width, height) == (768, 504)
    numbers = json.loads(png.with_suffix(".json").read_text())
    cli = cli_json("eval", tmp_path / "mem.db", tmp_path / "val", "--k", 10, "--json")
    assert numbers["queries"] == cli["queries"] == 9 and numbers["memory"] == 15
    for rule, m in cli["methods"].items():
        assert numbers["methods"][rule] == m
