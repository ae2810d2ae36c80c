#!/usr/bin/env python3
"""An independent NumPy reference for AlexNet's forward pass (PyTorch semantics).

Writes a test fixture for the alexc reference interpreter:

    OUT/weights.safetensors   PyTorch state-dict names (conv1.weight, ..., fc8.bias), F32
    OUT/input.npy             float32 [batch, 3, 224, 224]
    OUT/logits.npy            float32 [batch, classes], computed in float64

The network is torchvision's AlexNet in evaluation mode with the LRN layers
of the original paper (as in models/alexnet.ron), with configurable widths:

    conv1 3->c1 k11 s4 p2, ReLU, LRN(5, 1e-4, 0.75, k=2), max-pool 3/2
    conv2 c1->c2 k5 p2,    ReLU, LRN,                    max-pool 3/2
    conv3 c2->c3 k3 p1, ReLU; conv4 c3->c4 k3 p1, ReLU; conv5 c4->c5 k3 p1, ReLU
    max-pool 3/2, flatten (c5*6*6)
    fc6 -> f6, ReLU; fc7 -> f7, ReLU; fc8 -> classes   (dropout: identity in eval)

LRN follows torch.nn.LocalResponseNorm exactly:
    b[c] = a[c] / (k + alpha/size * sum_{j=max(0, c-size//2)}^{min(C-1, c+(size-1)//2)} a[j]^2)^beta
(PyTorch zero-pads the channel axis and averages over a fixed window of `size`,
so the divisor stays `size` at the edges.)

Everything is computed in float64 from the float32 values that are written
(weights and input are rounded to float32 first), so the stored logits are the
exact-arithmetic answer for the stored inputs, up to float64 rounding.

Weights are He-normal (std = sqrt(2 / fan_in)) so that activations keep their
scale through the ReLU layers and the logits are informative; N(0, 0.01), as
in the paper, would shrink them towards zero. Biases are N(0, 0.05). The input
is mean-subtracted 8-bit pixels, u8 - 128, the scale the paper's network saw:
it makes the activations entering LRN large enough (sums of squares ~ 1e4 and
more) that the alpha term is comparable to k, so the fixture actually tests
LRN's window and alpha convention (with inputs of order 1, LRN is the constant
factor 2^-0.75 to within 1e-4). The values are exact in float32 and compress
well in git.

Only NumPy is needed; the safetensors file is written by hand (8-byte
little-endian header length, JSON header, raw little-endian data).

Example (the committed fixture):
    python3 scripts/reference_numpy.py --out tests/fixtures/alexnet-tiny \\
        --c1 8 --c2 16 --c3 24 --c4 24 --c5 16 --f6 64 --f7 64 --classes 10
"""

import argparse
import json
import os
import struct

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv2d(x, w, b, stride, pad):
    """Cross-correlation as torch.nn.functional.conv2d (groups=1, dilation=1)."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    kh, kw = w.shape[2], w.shape[3]
    # windows: [N, C, H', W', kh, kw], then keep every stride-th position
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))  # [N, oh, ow, O]
    return y.transpose(0, 3, 1, 2) + b[None, :, None, None]


def relu(x):
    return np.maximum(x, 0.0)


def lrn(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """torch.nn.LocalResponseNorm(size, alpha, beta, k) across channels."""
    channels = x.shape[1]
    sq = x * x
    out = np.empty_like(x)
    for c in range(channels):
        lo = max(0, c - size // 2)
        hi = min(channels - 1, c + (size - 1) // 2)
        s = sq[:, lo : hi + 1].sum(axis=1)
        out[:, c] = x[:, c] / (k + alpha / size * s) ** beta
    return out


def max_pool(x, kernel=3, stride=2):
    """torch.nn.MaxPool2d(kernel, stride), no padding, floor mode."""
    win = sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    return win.max(axis=(4, 5))


def linear(x, w, b):
    return x @ w.T + b


def forward(p, x):
    """AlexNet forward pass in evaluation mode; p maps state-dict names to float64 arrays."""
    x = max_pool(lrn(relu(conv2d(x, p["conv1.weight"], p["conv1.bias"], 4, 2))))
    x = max_pool(lrn(relu(conv2d(x, p["conv2.weight"], p["conv2.bias"], 1, 2))))
    x = relu(conv2d(x, p["conv3.weight"], p["conv3.bias"], 1, 1))
    x = relu(conv2d(x, p["conv4.weight"], p["conv4.bias"], 1, 1))
    x = max_pool(relu(conv2d(x, p["conv5.weight"], p["conv5.bias"], 1, 1)))
    x = x.reshape(x.shape[0], -1)
    x = relu(linear(x, p["fc6.weight"], p["fc6.bias"]))  # dropout: identity in eval
    x = relu(linear(x, p["fc7.weight"], p["fc7.bias"]))  # dropout: identity in eval
    return linear(x, p["fc8.weight"], p["fc8.bias"])


def parameter_shapes(a):
    return [
        ("conv1.weight", (a.c1, 3, 11, 11)),
        ("conv1.bias", (a.c1,)),
        ("conv2.weight", (a.c2, a.c1, 5, 5)),
        ("conv2.bias", (a.c2,)),
        ("conv3.weight", (a.c3, a.c2, 3, 3)),
        ("conv3.bias", (a.c3,)),
        ("conv4.weight", (a.c4, a.c3, 3, 3)),
        ("conv4.bias", (a.c4,)),
        ("conv5.weight", (a.c5, a.c4, 3, 3)),
        ("conv5.bias", (a.c5,)),
        ("fc6.weight", (a.f6, a.c5 * 6 * 6)),
        ("fc6.bias", (a.f6,)),
        ("fc7.weight", (a.f7, a.f6)),
        ("fc7.bias", (a.f7,)),
        ("fc8.weight", (a.classes, a.f7)),
        ("fc8.bias", (a.classes,)),
    ]


def write_safetensors(path, tensors):
    """Writes a dict of float32 arrays in safetensors format."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder")
    for name, default in [("c1", 96), ("c2", 256), ("c3", 384), ("c4", 384), ("c5", 256),
                          ("f6", 4096), ("f7", 4096), ("classes", 1000)]:
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    rng = np.random.default_rng(a.seed)
    params32 = {}
    for name, shape in parameter_shapes(a):
        if name.endswith(".weight"):
            fan_in = int(np.prod(shape[1:]))
            values = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
        else:
            values = rng.normal(0.0, 0.05, size=shape)
        params32[name] = values.astype(np.float32)
    pixels = rng.integers(0, 256, size=(a.batch, 3, 224, 224))
    x32 = (pixels - 128).astype(np.float32)

    params64 = {k: v.astype(np.float64) for k, v in params32.items()}
    logits = forward(params64, x32.astype(np.float64))

    os.makedirs(a.out, exist_ok=True)
    write_safetensors(os.path.join(a.out, "weights.safetensors"), params32)
    np.save(os.path.join(a.out, "input.npy"), x32)
    np.save(os.path.join(a.out, "logits.npy"), logits.astype(np.float32))
    print(f"wrote {a.out}: {sum(v.size for v in params32.values())} parameters, "
          f"logits {logits.shape}, max |logit| {np.abs(logits).max():.4g}, "
          f"logit std {logits.std():.4g}")
    print("argmax per sample:", logits.argmax(axis=1).tolist())


if __name__ == "__main__":
    main()
