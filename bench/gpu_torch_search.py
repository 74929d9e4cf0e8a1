"""The anchor of bench_gpu_search: exact top-k with PyTorch on the same GPU.

Random unit rows [n, d] float32 on the GPU; per batch, the median wall time of
one call as a caller sees it: the queries copied in, s = q @ x.T in float32
(TF32 off: the same arithmetic class as ours), torch.topk(s, k) (the largest
similarities, i.e. the smallest 1 - s), the values and indices copied out.
Prints one line per batch: "batch B ms M".

    python3 bench/gpu_torch_search.py --n 500000 --d 1024 --k 100 --batches 1,16,256 --reps 20
"""

import argparse
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500000)
    ap.add_argument("--d", type=int, default=1024)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--batches", default="1,16,256")
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("torch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.rand(a.n, a.d, device="cuda", generator=g) * 2 - 1
    x = torch.nn.functional.normalize(x, dim=1)
    for b in (int(s) for s in a.batches.split(",")):
        qh = torch.nn.functional.normalize(torch.rand(b, a.d) * 2 - 1, dim=1)

        def once():
            q = qh.to("cuda")
            s = q @ x.T
            v, i = torch.topk(s, a.k, dim=1)
            return v.cpu(), i.cpu()  # .cpu() waits for the GPU

        for _ in range(3):
            once()
        times = []
        for _ in range(a.reps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            once()
            times.append(time.perf_counter() - t0)
        print(f"batch {b} ms {statistics.median(times) * 1e3:.4f}", flush=True)


if __name__ == "__main__":
    main()
