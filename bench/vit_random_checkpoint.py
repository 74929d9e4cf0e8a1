#!/usr/bin/python3
"""vit_random_checkpoint.py: an HF Dinov2Model folder (config.json +
model.safetensors) with random weights of a real DINOv2 shape, for measuring
what the int8 mode changes end to end (`vismem create --model FOLDER`, `add`,
`eval`) where no trained DINOv2 checkpoint is at hand.

Usage: /usr/bin/python3 bench/vit_random_checkpoint.py OUT_DIR [--size s|b] [--seed 1]

Weights as vismem::random_vit_model draws them (normal, std 0.02; LayerNorm
and LayerScale weights 1), image_size 224 (16 x 16 patch grid). Needs numpy only.
"""
import argparse
import json
import os
import struct

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--size", choices=["s", "b"], default="s")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    d, heads = (384, 6) if args.size == "s" else (768, 12)
    layers, mlp, patch, grid = 12, 4 * d, 14, 16
    rng = np.random.default_rng(args.seed)

    def rnd(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def ones(n):
        return np.ones(n, np.float32)

    t = {
        "embeddings.cls_token": rnd(1, 1, d),
        "embeddings.mask_token": np.zeros((1, d), np.float32),
        "embeddings.patch_embeddings.projection.weight": rnd(d, 3, patch, patch),
        "embeddings.patch_embeddings.projection.bias": rnd(d),
        "embeddings.position_embeddings": rnd(1, 1 + grid * grid, d),
        "layernorm.weight": ones(d),
        "layernorm.bias": rnd(d),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            t[p + f"attention.attention.{name}.weight"] = rnd(d, d)
            t[p + f"attention.attention.{name}.bias"] = rnd(d)
        t[p + "attention.output.dense.weight"] = rnd(d, d)
        t[p + "attention.output.dense.bias"] = rnd(d)
        t[p + "layer_scale1.lambda1"] = ones(d)
        t[p + "layer_scale2.lambda1"] = ones(d)
        t[p + "mlp.fc1.weight"] = rnd(mlp, d)
        t[p + "mlp.fc1.bias"] = rnd(mlp)
        t[p + "mlp.fc2.weight"] = rnd(d, mlp)
        t[p + "mlp.fc2.bias"] = rnd(d)
        t[p + "norm1.weight"] = ones(d)
        t[p + "norm1.bias"] = rnd(d)
        t[p + "norm2.weight"] = ones(d)
        t[p + "norm2.bias"] = rnd(d)

    # safetensors: u64 header length, JSON header (dtype, shape, byte offsets), raw little-endian data.
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, a in t.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for a in t.values():
            f.write(np.ascontiguousarray(a).tobytes())
    config = {"model_type": "dinov2", "architectures": ["Dinov2Model"], "hidden_size": d,
              "num_attention_heads": heads, "num_hidden_layers": layers, "mlp_ratio": 4, "patch_size": patch,
              "image_size": grid * patch, "layer_norm_eps": 1e-6, "hidden_act": "gelu", "qkv_bias": True,
              "use_swiglu_ffn": False}
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    print(f"{args.out}: random DINOv2 ViT-{args.size.upper()}/14, {sum(a.size for a in t.values()) / 1e6:.1f}M weights")


if __name__ == "__main__":
    main()
