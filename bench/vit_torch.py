#!/usr/bin/python3
"""vit_torch.py: the PyTorch anchor of bench_vit (bench/bench_vit.cpp runs it).

The same DINOv2 ViT as vismem's native encoder, built from standard torch.nn
layers the way the official DINOv2 code does it (Conv2d patch embedding,
pre-norm blocks with a fused qkv Linear, q k^T softmax v attention, exact GELU
MLP, LayerScale, final LayerNorm of the CLS token), loaded with the weights
bench_vit wrote, so the two runs can be timed side by side and their outputs
cross-checked.

Usage (bench_vit does this; by hand only to debug):
  /usr/bin/python3 bench/vit_torch.py MODEL_DIR
    MODEL_DIR: config.json + one .npy per weight (bench_vit's --keep-torch-dir),
               input.npy [n, 3, s, s] and ours.npy [n, D] (vismem's embeddings).
  It prints "check max_abs A max_rel R", then answers lines on stdin:
    time THREADS BATCH REPS  ->  "seconds S torch_threads A blas_threads B": the
      median of REPS runs after one warm-up, for the best split of THREADS between
      torch's threads (A) and OpenBLAS's (B)
    once A B BATCH  ->  "seconds S": one run (no warm-up) with torch at A threads
      and OpenBLAS at B (bench_vit interleaves these with its own runs)
    quit
Needs Debian's python3-torch (scripts/setup.sh installs it as an optional
benchmark dependency); the test suite does not.
"""
import ast
import ctypes
import ctypes.util
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.ls1 = nn.Parameter(torch.ones(dim))
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, mlp)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp, dim)
        self.ls2 = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x = x + self.ls1 * self.attn(self.norm1(x))
        return x + self.ls2 * self.fc2(self.act(self.fc1(self.norm2(x))))


class Dinov2(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, p = cfg["hidden"], cfg["patch"]
        self.patch = p
        self.grid = cfg["grid"]
        self.patch_embed = nn.Conv2d(3, d, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid * self.grid, d))
        self.blocks = nn.ModuleList(
            Block(d, cfg["heads"], cfg["mlp"], cfg["eps"]) for _ in range(cfg["layers"]))
        self.norm = nn.LayerNorm(d, eps=cfg["eps"])

    def pos_for(self, gh, gw):
        # HF Dinov2's interpolate_pos_encoding (size=, bicubic, align_corners=False),
        # which vismem follows.
        if gh == self.grid and gw == self.grid:
            return self.pos_embed
        d = self.pos_embed.shape[-1]
        grid = self.pos_embed[:, 1:].reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([self.pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, gh * gw, d)], dim=1)

    def forward(self, px):
        b, _, h, w = px.shape
        x = self.patch_embed(px).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        x = x + self.pos_for(h // self.patch, w // self.patch)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 0]


def load_npy(path):
    """A float32 .npy file (as bench_vit writes them) as a tensor; no numpy
    needed (some torch installs have none)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        raise SystemExit(f"{path}: not a .npy file")
    hlen = int.from_bytes(data[8:10], "little") if data[6] == 1 else int.from_bytes(data[8:12], "little")
    start = (10 if data[6] == 1 else 12) + hlen
    header = ast.literal_eval(data[(10 if data[6] == 1 else 12):start].decode("latin1"))
    if header["descr"] != "<f4" or header["fortran_order"]:
        raise SystemExit(f"{path}: expected little-endian float32 in C order, got {header}")
    return torch.frombuffer(bytearray(data[start:]), dtype=torch.float32).reshape(header["shape"])


def load(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    m = Dinov2(cfg).eval()

    def t(name):
        return load_npy(os.path.join(model_dir, name + ".npy"))

    d = cfg["hidden"]
    sd = {
        "patch_embed.weight": t("patch_w").reshape(d, 3, cfg["patch"], cfg["patch"]),
        "patch_embed.bias": t("patch_b"),
        "cls_token": t("cls").reshape(1, 1, d),
        "pos_embed": t("pos").reshape(1, -1, d),
        "norm.weight": t("final_ln_w"),
        "norm.bias": t("final_ln_b"),
    }
    names = {"norm1.weight": "ln1_w", "norm1.bias": "ln1_b", "attn.qkv.weight": "qkv_w",
             "attn.qkv.bias": "qkv_b", "attn.proj.weight": "out_w", "attn.proj.bias": "out_b",
             "ls1": "ls1", "norm2.weight": "ln2_w", "norm2.bias": "ln2_b", "fc1.weight": "fc1_w",
             "fc1.bias": "fc1_b", "fc2.weight": "fc2_w", "fc2.bias": "fc2_b", "ls2": "ls2"}
    for i in range(cfg["layers"]):
        for ours_name, file in names.items():
            sd[f"blocks.{i}.{ours_name}"] = t(f"layer{i}.{file}")
    m.load_state_dict(sd, strict=True)
    return m


def openblas_threads_setter():
    # torch (Debian, BLAS_INFO=generic) runs nn.Linear on OpenBLAS, whose own
    # thread count torch.set_num_threads does not change: set both.
    for name in ("openblas", "blas"):
        path = ctypes.util.find_library(name)
        if path:
            lib = ctypes.CDLL(path)
            if hasattr(lib, "openblas_set_num_threads"):
                return lib.openblas_set_num_threads
    return None


def batch_of(px, batch):
    """The first `batch` inputs, repeated when there are fewer."""
    if batch <= px.shape[0]:
        return px[:batch]
    return px.repeat((batch + px.shape[0] - 1) // px.shape[0], 1, 1, 1)[:batch]


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    model_dir = sys.argv[1]
    torch.set_grad_enabled(False)
    m = load(model_dir)
    blas_threads = openblas_threads_setter()
    px = load_npy(os.path.join(model_dir, "input.npy"))
    ours = load_npy(os.path.join(model_dir, "ours.npy")).double()
    with torch.inference_mode():
        ref = m(px).double()
    diff = (ref - ours).abs()
    print(f"check max_abs {diff.max().item():.3g} max_rel {(diff.max() / ref.abs().max()).item():.3g} "
          f"torch {torch.__version__}", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "once":
            intra, blas, batch = int(words[1]), int(words[2]), int(words[3])
            torch.set_num_threads(intra)
            if blas_threads:
                blas_threads(blas)
            with torch.inference_mode():
                t0 = time.perf_counter()
                m(batch_of(px, batch))
                t = time.perf_counter() - t0
            print(f"seconds {t:.6f}", flush=True)
            continue
        threads, batch, reps = int(words[1]), int(words[2]), int(words[3])
        x = batch_of(px, batch)
        # torch's own threads and OpenBLAS's inside nn.Linear: both at `threads`
        # oversubscribes the cores (OpenMP threads spin while OpenBLAS works), so
        # each split is tried and the best one answers.
        splits = [(threads, threads)] if threads == 1 or not blas_threads else \
            [(threads, threads), (1, threads), (threads, 1)]
        best = None
        for intra, blas in splits:
            torch.set_num_threads(intra)
            if blas_threads:
                blas_threads(blas)
            times = []
            with torch.inference_mode():
                for r in range(reps + 1):
                    t0 = time.perf_counter()
                    m(x)
                    if r > 0:  # the first run is the warm-up
                        times.append(time.perf_counter() - t0)
            t = statistics.median(times)
            if best is None or t < best[0]:
                best = (t, intra, blas)
        print(f"seconds {best[0]:.6f} torch_threads {best[1]} blas_threads {best[2]}", flush=True)


if __name__ == "__main__":
    main()
