#!/usr/bin/env python3
"""Evaluates a neighbor file (SPEC section 7): ours or the paper's published ones.

    PYTHONPATH=build/python /usr/bin/python3 examples/evaluate_neighbor_file.py .cache/demo/val_neighbors.json
    ... --exclude pruned_ids.txt --k 50 --json

Prints accuracy@k of the four voting rules (the same numbers as
`vismem eval --neighbors FILE`), then shows the same evaluation done by hand
from arrays (read_neighbors + vote + accuracy_at_k), the way a notebook would
slice it, e.g. per class.
"""
import argparse
import json
from collections import Counter

import numpy as np

import vismem


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("neighbors", help="neighbor file (JSON)")
    ap.add_argument("--k", type=int, default=0, help="largest k (default: the lists' length)")
    ap.add_argument("--exclude", help="memory ids to leave out (hard pruning), one per line")
    ap.add_argument("--json", action="store_true", help="print only the evaluation as JSON (as vismem eval --json)")
    args = ap.parse_args()
    exclude = open(args.exclude).read().split() if args.exclude else None

    result = vismem.evaluate(args.neighbors, k=args.k, exclude=exclude)
    if args.json:
        print(json.dumps(result))
        return
    print("%d queries" % result["queries"])
    for rule, m in result["methods"].items():
        acc = m["accuracy_at_k"]
        at = "  ".join("@%d %.2f" % (k, acc[k - 1]) for k in (1, 10, 20, 50, 100) if k <= len(acc))
        print("%-9s best %.2f (k=%d)  %s" % (rule, m["best"], m["best_k"], at))

    # The same from arrays.
    nb = vismem.read_neighbors(args.neighbors)
    K = args.k or nb.labels.shape[1]
    excluded = np.isin(nb.ids[:, :K], exclude) if exclude else None
    pred = vismem.vote(nb.labels[:, :K], nb.distances[:, :K], "rank", excluded=excluded)
    acc = vismem.accuracy_at_k(pred, nb.true_labels)
    assert acc.tolist() == result["methods"]["rank"]["accuracy_at_k"]
    k = result["methods"]["rank"]["best_k"]
    right = np.array([p in t for p, t in zip(pred[:, k - 1], nb.true_labels)])
    print("\nrank voting at k=%d, from arrays: %.2f%% (same as above); hardest true classes:" % (k, 100 * right.mean()))
    wrong = Counter(t[0] for t, ok in zip(nb.true_labels, right) if not ok)
    total = Counter(t[0] for t in nb.true_labels)
    for label, n in wrong.most_common(5):
        print("  %-12s %3d of %3d wrong" % (label, n, total[label]))


if __name__ == "__main__":
    main()
