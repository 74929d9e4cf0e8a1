#!/usr/bin/env python3
"""bench_python: the cost of calling vismem from Python, against the C++ call.

Times Memory.search through `import vismem` and Memory::search called directly
from C++ (build/bench_search_call, same memory file, same queries, same
threads and BLAS kernels), for a single query and a 1,024-query batch.
Python is timed twice: the call alone (a SearchResult; its arrays are built
on first access) and the call plus reading distances, ids and labels as numpy
arrays (what a user does next). Rounds alternate the C++ program and Python;
each figure is the median over rounds of the median call, and the fastest
call of all (on a busy machine the better estimate of the cost itself).

    PYTHONPATH=build/python /usr/bin/python3 bench/bench_python.py [--items 20000] [--dim 1024] [--k 100]
        [--single 200] [--reps 5] [--calls 3] [--threads 0] [--memory MEM.db]

Without --memory it builds a synthetic memory (random unit vectors, 100
labels) in a temporary folder; queries are items plus a little noise.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import vismem

ROOT = Path(__file__).resolve().parents[1]


def time_us(fn, calls):
    """(median, min) microseconds per call."""
    times = []
    for args in calls:
        t0 = time.perf_counter_ns()
        result = fn(*args)
        times.append(time.perf_counter_ns() - t0)
        del result  # freed outside the timing, as the C++ program's result is
    return statistics.median(times) / 1e3, min(times) / 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--memory", type=Path, help="an existing memory (default: a synthetic one)")
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--single", type=int, default=200, help="single-query calls per repetition")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=5, help="rounds (C++ program, then Python)")
    ap.add_argument("--calls", type=int, default=3, help="batch calls per round (and single-query passes in C++)")
    ap.add_argument("--threads", type=int, default=0, help="search threads (0: all cores)")
    ap.add_argument("--cpp", type=Path, default=ROOT / "build" / "bench_search_call")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    rng = np.random.default_rng(7)
    if args.memory:
        mem = vismem.Memory.open(args.memory)
        path = args.memory
        ids = mem.items()["ids"]
        base = np.stack([mem.embedding(ids[i]) for i in rng.integers(len(ids), size=max(args.single, args.batch))])
    else:
        path = Path(tmp.name) / "bench.db"
        x = rng.standard_normal((args.items, args.dim)).astype(np.float32)
        mem = vismem.Memory.create(path, dim=args.dim, model_id="synthetic")
        for s in range(0, args.items, 10000):
            e = min(args.items, s + 10000)
            mem.add(["item%d" % i for i in range(s, e)], ["label%d" % (i % 100) for i in range(s, e)], x[s:e])
        base = x[rng.integers(args.items, size=max(args.single, args.batch))]
    q = (base + 0.05 * rng.standard_normal(base.shape)).astype(np.float32)
    qfile = Path(tmp.name) / "q.npy"
    np.save(qfile, q)

    def search(qq):
        return mem.search(qq, k=args.k, threads=args.threads)

    def search_arrays(qq):
        r = mem.search(qq, k=args.k, threads=args.threads)
        return r.distances, r.ids, r.labels

    search_arrays(q[:args.batch])  # warm up, as the C++ program does
    singles = [(q[i],) for i in range(args.single)]
    batch = [(q[:args.batch],)] * args.calls
    # Rounds alternate C++ and Python so that a busy machine slows both alike;
    # each figure is the median of the rounds' medians.
    got = {key: [] for key in ("cpp1", "py1", "pya1", "cppb", "pyb", "pyab")}
    for _ in range(args.reps):
        cpp = subprocess.run([str(args.cpp), str(path), str(qfile), "--k", str(args.k), "--single", str(args.single),
                              "--batch", str(args.batch), "--reps", str(args.calls), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        c = json.loads(cpp.stdout)
        got["cpp1"].append((c["single_us"], c["single_min_us"]))
        got["cppb"].append((c["batch_ms"] * 1e3, c["batch_min_ms"] * 1e3))
        got["py1"].append(time_us(search, singles))
        got["pya1"].append(time_us(search_arrays, singles))
        got["pyb"].append(time_us(search, batch))
        got["pyab"].append(time_us(search_arrays, batch))
    # (median over rounds of the median call, fastest call of all)
    m = {key: (statistics.median(a for a, _ in v), min(b for _, b in v)) for key, v in got.items()}
    rows = [
        ("single query", m["cpp1"], m["py1"], m["pya1"]),
        ("batch of %d" % args.batch, m["cppb"], m["pyb"], m["pyab"]),
    ]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print("memory %d items, d=%d, k=%d, threads=%d (%d cores), OpenBLAS %s, %s" % (
        c["items"], c["dim"], args.k, args.threads, os.cpu_count(), vismem.blas_core(), cpu))
    print("median call (fastest call in brackets); ratio = Python / C++")
    print("| call | C++ Memory::search | Python search() | ratio | + arrays (distances, ids, labels) | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, cc, py, pya in rows:
        scale, u = (1e3, "ms") if cc[0] >= 1e4 else (1.0, "us")
        cell = lambda t: "%.1f (%.1f) %s" % (t[0] / scale, t[1] / scale, u)
        print("| %s | %s | %s | %.3f (%.3f) | %s | %.3f (%.3f) |" % (
            name, cell(cc), cell(py), py[0] / cc[0], py[1] / cc[1], cell(pya), pya[0] / cc[0], pya[1] / cc[1]))


if __name__ == "__main__":
    main()
