#!/usr/bin/env python3
"""Accuracy vs k for the four voting rules, as the paper's figure, from the demo data.

Builds (once) a memory of Imagenette train with the default encoder
(MobileNet V1), embeds Imagenette val, searches the 100 nearest neighbors of
every val photo, votes with each rule at every k = 1..100 and plots accuracy
against k with matplotlib (saved as PNG, numbers beside it as JSON).

    PYTHONPATH=build/python /usr/bin/python3 examples/accuracy_vs_k.py        # or after pip install
    # -> .cache/examples/accuracy_vs_k.png, .cache/examples/accuracy_vs_k.json

First run about 35 s on 2 cores (4,000 photos embedded); later runs reuse the
memory file and take seconds for the memory (the val photos are embedded again).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import vismem

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VISMEM_SHARED", ROOT.parent / "shared"))


def embed_folder(enc, folder, per_class=0):
    """(paths, ids, labels, x) of an ImageFolder; per_class > 0 keeps the first N per class."""
    found = vismem.scan_image_folder(folder)
    if per_class:
        seen = {}
        found = [f for f in found if seen.setdefault(f[2], []).append(f) or len(seen[f[2]]) <= per_class]
    paths, ids, labels = (list(c) for c in zip(*found))
    xs = []
    for start in range(0, len(paths), 2048):  # the chunks `vismem add` commits: same batches, same bits
        xs.append(enc.embed(paths[start:start + 2048]))
        print("  embedded %d/%d" % (min(start + 2048, len(paths)), len(paths)), file=sys.stderr)
    return paths, ids, labels, np.concatenate(xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = SHARED / "data" / "imagenette2"
    ap.add_argument("--train", default=data / "train", type=Path, help="ImageFolder for the memory")
    ap.add_argument("--val", default=data / "val", type=Path, help="ImageFolder of labeled queries")
    ap.add_argument("--model", default=SHARED / "models" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
                    type=Path)
    ap.add_argument("--memory", default=ROOT / ".cache" / "examples" / "imagenette_train.db", type=Path)
    ap.add_argument("--out", default=ROOT / ".cache" / "examples" / "accuracy_vs_k.png", type=Path)
    ap.add_argument("--k", default=100, type=int, help="largest k")
    ap.add_argument("--per-class", default=0, type=int, help="use only the first N images per class (quick runs)")
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.memory.parent.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    if not args.memory.exists():
        print("memory: %s from %s" % (args.memory, args.train), file=sys.stderr)
        mem = vismem.Memory.create(args.memory, model=args.model)
        enc = mem.encoder()
        _, ids, labels, x = embed_folder(enc, args.train, args.per_class)
        mem.add(ids, labels, x)
    else:
        mem = vismem.Memory.open(args.memory)
        enc = mem.encoder(args.model)
    print("memory: %d items, %d labels" % (len(mem), len(mem.labels())), file=sys.stderr)

    _, qids, qlabels, q = embed_folder(enc, args.val, args.per_class)
    res = mem.search(q, k=args.k)
    k = res.k
    accuracy = {}
    for rule in vismem.RULES:
        pred = vismem.vote(res.labels, res.distances, rule)       # (nq, k): prediction at every k
        accuracy[rule] = vismem.accuracy_at_k(pred, qlabels)      # percent, k = 1..K
    numbers = {"queries": len(qlabels), "memory": len(mem), "k": k,
               "methods": {r: {"accuracy_at_k": a.tolist(), "best": float(a.max()), "best_k": int(a.argmax()) + 1}
                           for r, a in accuracy.items()}}

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ks = np.arange(1, k + 1)
    for rule, a in accuracy.items():
        ax.plot(ks, a, label="%s (best %.2f @ k=%d)" % (rule.capitalize() + "Voting", a.max(), a.argmax() + 1))
    ax.set_xlabel("k (neighbors)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("%s: %d queries, memory of %d (%s)" % (args.val.parent.name, len(qlabels), len(mem), enc.name))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out)
    args.out.with_suffix(".json").write_text(json.dumps(numbers))
    for rule, m in numbers["methods"].items():
        print("%-9s best %.2f at k=%d, k=1 %.2f, k=%d %.2f" % (rule, m["best"], m["best_k"], m["accuracy_at_k"][0], k,
                                                             m["accuracy_at_k"][-1]))
    print("wrote %s and %s (%.1f s)" % (args.out, args.out.with_suffix(".json"), time.time() - t0))


if __name__ == "__main__":
    main()
