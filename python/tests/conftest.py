"""Shared fixtures for the vismem Python tests.

Run by ctest (python/CMakeLists.txt sets PYTHONPATH=build/python, VISMEM_CLI,
VISMEM_SHARED, VISMEM_SOURCE_DIR, VISMEM_BUILD_DIR), or by hand:
    PYTHONPATH=build/python /usr/bin/python3 -m pytest python/tests
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

SOURCE_DIR = Path(os.environ.get("VISMEM_SOURCE_DIR", Path(__file__).resolve().parents[2]))
BUILD_DIR = Path(os.environ.get("VISMEM_BUILD_DIR", SOURCE_DIR / "build"))
CLI = Path(os.environ.get("VISMEM_CLI", BUILD_DIR / "vismem"))
SHARED = Path(os.environ.get("VISMEM_SHARED", SOURCE_DIR.parent / "shared"))
MODEL = SHARED / "models" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"


def run_cli(*args, check=True):
    """Runs build/vismem; returns the CompletedProcess (text)."""
    p = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError("vismem %s failed: %s" % (" ".join(map(str, args)), p.stderr))
    return p


def cli_error(*args):
    """The one-line message the CLI prints for a failing command ("error: " removed)."""
    p = run_cli(*args, check=False)
    assert p.returncode == 1, p.stdout
    err = p.stderr.strip()
    assert err.startswith("error: "), err
    return err[len("error: "):]


def cli_json(*args):
    return json.loads(run_cli(*args).stdout)


def unit_rows(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_lines(path, items):
    Path(path).write_text("".join(s + "\n" for s in items))
    return path


def paper_style_file(path, rng, nq=60, K=30, classes=5):
    """A neighbor file as the paper publishes them: integer classes, some ReaL-style label sets."""
    doc = {}
    for i in range(nq):
        truth = int(rng.integers(classes))
        d = np.sort(rng.uniform(0.05, 0.9, K))
        near = rng.random(K) < 0.5
        cls = np.where(near, truth, rng.integers(classes, size=K))
        doc["val_%03d" % i] = {
            "featurizer": "dinov2_vitl14",
            "image_id": "val_%03d" % i,
            "image_class": [truth, (truth + 1) % classes] if i % 10 == 0 else truth,
            "neighbor_image_ids": ["train_%d" % j for j in rng.integers(1000, size=K)],
            "neighbor_classes": [int(c) for c in cls],
            "neighbor_distances": [float(x) for x in d],
        }
    path.write_text(json.dumps(doc))
    return doc


@pytest.fixture
def data():
    """A small labeled data set: 300 items in 7 classes, d = 24, and 40 queries."""
    rng = np.random.default_rng(12)
    n, d = 300, 24
    centers = unit_rows(rng, 7, d)
    labels = ["c%d" % (i % 7) for i in range(n)]
    x = centers[[i % 7 for i in range(n)]] + 1.5 * unit_rows(rng, n, d)
    ids = ["item%03d" % i for i in range(n)]
    qlab = ["c%d" % (i % 7) for i in range(40)]
    q = centers[[i % 7 for i in range(40)]] + 1.5 * unit_rows(rng, 40, d)
    return {"ids": ids, "labels": labels, "x": x.astype(np.float32), "q": q.astype(np.float32), "q_labels": qlab, "d": d}


@pytest.fixture
def mem_path(tmp_path, data):
    """A memory file holding `data`, built with the CLI (so the module reads what the CLI writes)."""
    path = tmp_path / "mem.db"
    np.save(tmp_path / "x.npy", data["x"])
    run_cli("create", path, "--dim", data["d"])
    run_cli("add", path, "--embeddings", tmp_path / "x.npy", "--labels", write_lines(tmp_path / "l.txt", data["labels"]),
            "--ids", write_lines(tmp_path / "i.txt", data["ids"]))
    return path
