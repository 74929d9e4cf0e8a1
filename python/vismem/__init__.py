"""vismem: a visual memory for image classification (kNN over encoder embeddings).

Basic usage::

    import numpy as np, vismem
    mem = vismem.Memory.create("mem.db", dim=1024)            # or model="model.tflite"
    mem.add(["a", "b"], ["cat", "dog"], x)                     # x: float32 (2, 1024), any norm
    res = mem.search(q, k=10)                                  # q: (nq, 1024)
    res.distances, res.ids, res.labels                         # (nq, 10) arrays
    mem.classify(q[0], k=10, vote="rank")["prediction"]
    pred = vismem.vote(res.labels, res.distances, "rank")      # (nq, 10): prediction at every k
    vismem.evaluate("neighbors.json")                          # accuracy@k, the four rules

    enc = vismem.load_encoder("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
    x = enc.embed(["cat.jpg", "dog.png"])                      # float32 (2, 1024), L2-normalized

Semantics (voting rules, ties, neighbor files) follow SPEC.md; results are the
same bits as the `vismem` command line for the same inputs. Errors: ValueError
for bad input, OSError (FileNotFoundError, FileExistsError) for files, with the
library's message.
"""
from __future__ import annotations

import json as _json
import os as _os
from dataclasses import dataclass as _dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as _np


from . import _vismem  # noqa: E402
from ._vismem import Encoder, Memory, SearchResult, blas_core, load_encoder, scan_image_folder  # noqa: E402

__all__ = [
    "Memory", "SearchResult", "Encoder", "load_encoder", "scan_image_folder", "vote", "vote_breakdown",
    "accuracy_at_k", "evaluate", "read_neighbors", "NeighborArrays", "RULES", "blas_core",
]
__version__ = "0.1.0"


def _warn_slow_blas() -> None:
    """OpenBLAS 0.3.21 (Debian 12) falls back to its slow SSE3 "Prescott" kernels on
    CPUs it does not know. The `vismem` command restarts itself with
    OPENBLAS_CORETYPE set; a Python process cannot (numpy has loaded the same
    OpenBLAS already), so say how to choose the kernels."""
    if blas_core() != "Prescott" or "OPENBLAS_CORETYPE" in _os.environ:
        return
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((set(l.split(":", 1)[1].split()) for l in f if l.startswith("flags")), set())
    except OSError:
        return
    core = "SkylakeX" if "avx512f" in flags else "Haswell" if "avx2" in flags else None
    if core:
        import warnings
        warnings.warn("OpenBLAS runs its slow generic kernels on this CPU (search about 5x slower, and not the same "
                      "bits as the vismem command); start Python with OPENBLAS_CORETYPE=%s" % core, RuntimeWarning)


_warn_slow_blas()

#: The four voting rules (SPEC section 3).
RULES = ("plurality", "distance", "softmax", "rank")

PathLike = Union[str, "_os.PathLike[str]"]


def _codes(labels: Any) -> "tuple[_np.ndarray, _np.ndarray]":
    """Interns labels: (unique values, int32 codes of labels' shape)."""
    arr = _np.asarray(labels)
    uniques, inverse = _np.unique(arr, return_inverse=True)
    return uniques, inverse.reshape(arr.shape).astype(_np.int32)


def vote(labels: Any, distances: Any, rule: str = "rank", *, excluded: Any = None, reliability: Any = None,
         normalize_distances: bool = False, distance_power: float = 1.0, temperature: float = 0.07,
         rank_offset: float = 2.0) -> _np.ndarray:
    """Predictions at every k = 1..K in one pass (SPEC section 3).

    labels:      (nq, K) neighbor labels (any dtype numpy can compare: str, int, ...),
                 or (K,) for one query; each row in ascending distance.
    distances:   (nq, K) cosine distances (1 - dot), float.
    rule:        "plurality" (w = 1), "distance" (exp(-d)^distance_power),
                 "softmax" (exp((1 - d) / temperature)) or "rank" (1 / (r + rank_offset)).
    excluded:    bool (nq, K): hard pruning (excluded neighbors count toward k but
                 add nothing; a query with every neighbor excluded is voted unpruned).
    reliability: float (nq, K): soft-pruning weights rho multiplying w.
    normalize_distances: min-max normalize all distances to [0, 1] first.

    Returns an array of labels' dtype, shape (nq, K) (or (K,)): column k-1 is the
    prediction after the first k neighbors. Ties keep the label that reached the
    score first. Raises ValueError for mismatched shapes or an unknown rule.
    """
    lab = _np.asarray(labels)
    single = lab.ndim == 1
    if single:
        lab = lab[None, :]
    if lab.ndim != 2:
        raise ValueError("labels: expected shape (nq, K) or (K,), got %r" % (lab.shape,))

    def rows(a: Any, dtype: Any) -> Optional[_np.ndarray]:
        if a is None:
            return None
        a = _np.asarray(a, dtype=dtype)
        return a[None, :] if single and a.ndim == 1 else a

    uniques, codes = _codes(lab)
    pred = _vismem._vote_codes(codes, rows(distances, _np.float64), rule, rows(excluded, _np.uint8),
                               rows(reliability, _np.float64), normalize_distances, distance_power, temperature,
                               rank_offset)
    out = uniques[pred]
    return out[0] if single else out


def vote_breakdown(labels: Sequence[Any], distances: Sequence[float], k: int, rule: str = "rank", *,
                   excluded: Any = None, reliability: Any = None, distance_power: float = 1.0,
                   temperature: float = 0.07, rank_offset: float = 2.0) -> Dict[str, Any]:
    """One query's vote after its first k neighbors, explained.

    labels, distances: the query's K neighbors (ascending distance); k: 1..K.
    Returns {"prediction": label, "scores": [(label, score)] in the order labels
    first scored, "weights": float64 (k,) each neighbor's weight (0 if excluded)}.
    """
    uniques, codes = _codes(_np.asarray(labels).reshape(-1))
    ex = [] if excluded is None else _np.asarray(excluded, dtype=_np.uint8).reshape(-1).tolist()
    rel = [] if reliability is None else _np.asarray(reliability, dtype=_np.float64).reshape(-1).tolist()
    pred, scores, weights = _vismem._vote_breakdown(codes.tolist(), _np.asarray(distances, dtype=_np.float64).tolist(),
                                                    k, rule, ex, rel, distance_power, temperature, rank_offset)
    return {"prediction": uniques[pred].item(), "scores": [(uniques[c].item(), s) for c, s in scores],
            "weights": _np.asarray(weights, dtype=_np.float64)}


def accuracy_at_k(predictions: Any, truths: Any) -> _np.ndarray:
    """Accuracy in percent at every k: float64 (K,).

    predictions: (nq, K) from vote(). truths: nq true labels, or nq collections of
    labels (a prediction in the set counts, as ImageNet-ReaL). Computed as
    `vismem eval` does: 100 * correct / nq.
    """
    pred = _np.asarray(predictions)
    if pred.ndim != 2:
        raise ValueError("predictions: expected shape (nq, K), got %r" % (pred.shape,))
    if len(truths) != pred.shape[0]:
        raise ValueError("truths: %d labels for %d queries" % (len(truths), pred.shape[0]))
    correct = _np.zeros(pred.shape[1], dtype=_np.int64)
    for row, t in zip(pred, truths):
        if isinstance(t, (str, bytes)) or _np.ndim(t) == 0:
            correct += row == t
        else:
            correct += _np.isin(row, list(t))
    return 100.0 * correct.astype(_np.float64) / float(pred.shape[0])


def evaluate(neighbors: Union[PathLike, Dict[str, Any]], *, k: int = 0, exclude: Optional[Sequence[str]] = None,
             reliability: Optional[Dict[str, float]] = None, normalize_distances: bool = False,
             rules: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Accuracy@k of the voting rules over a neighbor file (SPEC section 7).

    neighbors:   a path to a neighbor file (the paper's published files read as
                 they are), or the dict such a file holds (e.g. SearchResult.to_dict(...)).
    k:           largest k (0: the lists' length).
    exclude:     memory ids to exclude (hard pruning). reliability: id -> rho (soft pruning).
    normalize_distances: min-max normalize all distances first.
    rules:       subset of RULES (default all four).
    Returns what `vismem eval --neighbors FILE --json` prints: {"queries": nq,
    "methods": {rule: {"accuracy_at_k": [percent, k = 1..K], "best": percent, "best_k": k}}}.
    Raises OSError for an unreadable file, ValueError for invalid content.
    """
    if isinstance(neighbors, dict):
        return _vismem._evaluate_neighbors(_json.dumps(neighbors), True, k, exclude, reliability, normalize_distances,
                                           rules)
    return _vismem._evaluate_neighbors(_os.fspath(neighbors), False, k, exclude, reliability, normalize_distances,
                                       rules)


@_dataclass
class NeighborArrays:
    """A neighbor file as columns (read_neighbors).

    query_ids:   nq str (the file's keys, in file order).
    image_ids:   nq str.
    true_labels: nq lists of str (image_class; integers in the file become text, "3").
    featurizers: nq str.
    ids:         object (nq, K) neighbor item ids.
    labels:      object (nq, K) neighbor labels (str).
    distances:   float64 (nq, K), ascending per row.
    """
    query_ids: List[str]
    image_ids: List[str]
    true_labels: List[List[str]]
    featurizers: List[str]
    ids: _np.ndarray
    labels: _np.ndarray
    distances: _np.ndarray

    @property
    def truths(self) -> List[str]:
        """The first true label of each query (for accuracy_at_k with single labels)."""
        return [t[0] if t else "" for t in self.true_labels]


def read_neighbors(neighbors: Union[PathLike, Dict[str, Any]]) -> NeighborArrays:
    """Reads and validates a neighbor file (path or dict) into arrays for vote().

    Every query must have the same number of neighbors K. Raises OSError for an
    unreadable file, ValueError for invalid content (as `vismem eval --neighbors`).
    """
    if isinstance(neighbors, dict):
        cols = _vismem._read_neighbors(_json.dumps(neighbors), True)
    else:
        cols = _vismem._read_neighbors(_os.fspath(neighbors), False)
    return NeighborArrays(*cols)
