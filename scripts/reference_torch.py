#!/usr/bin/env python3
"""Cross-checks a fixture written by reference_numpy.py against PyTorch.

Loads OUT/weights.safetensors (with the `safetensors` package, so the
hand-written file format is checked too) and OUT/input.npy, runs the same
AlexNet built from torch.nn modules (Conv2d, ReLU, LocalResponseNorm,
MaxPool2d, Flatten, Dropout, Linear) in evaluation mode, in float64 and in
float32, and compares the result with OUT/logits.npy.

Reported per precision:
  max |torch - numpy| / max |numpy logit|     (the tolerance the Rust test uses)
  max elementwise |torch - numpy| / |numpy|   (over logits with |numpy| > 1e-3 * max)

Not run by CI; needs `pip install torch safetensors numpy`.

    python3 scripts/reference_torch.py tests/fixtures/alexnet-tiny
"""

import sys

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn


def alexnet(shapes):
    c1 = shapes["conv1.weight"][0]
    c2 = shapes["conv2.weight"][0]
    c3 = shapes["conv3.weight"][0]
    c4 = shapes["conv4.weight"][0]
    c5 = shapes["conv5.weight"][0]
    f6 = shapes["fc6.weight"][0]
    f7 = shapes["fc7.weight"][0]
    classes = shapes["fc8.weight"][0]
    layers = [
        ("conv1", nn.Conv2d(3, c1, 11, stride=4, padding=2)),
        ("relu1", nn.ReLU()),
        ("lrn1", nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)),
        ("pool1", nn.MaxPool2d(3, 2)),
        ("conv2", nn.Conv2d(c1, c2, 5, padding=2)),
        ("relu2", nn.ReLU()),
        ("lrn2", nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)),
        ("pool2", nn.MaxPool2d(3, 2)),
        ("conv3", nn.Conv2d(c2, c3, 3, padding=1)),
        ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(c3, c4, 3, padding=1)),
        ("relu4", nn.ReLU()),
        ("conv5", nn.Conv2d(c4, c5, 3, padding=1)),
        ("relu5", nn.ReLU()),
        ("pool5", nn.MaxPool2d(3, 2)),
        ("flatten", nn.Flatten()),
        ("drop6", nn.Dropout(0.5)),
        ("fc6", nn.Linear(c5 * 6 * 6, f6)),
        ("relu6", nn.ReLU()),
        ("drop7", nn.Dropout(0.5)),
        ("fc7", nn.Linear(f6, f7)),
        ("relu7", nn.ReLU()),
        ("fc8", nn.Linear(f7, classes)),
    ]
    from collections import OrderedDict

    return nn.Sequential(OrderedDict(layers))


def main():
    folder = sys.argv[1]
    state = load_file(f"{folder}/weights.safetensors")
    x = torch.from_numpy(np.load(f"{folder}/input.npy"))
    expected = np.load(f"{folder}/logits.npy").astype(np.float64)
    model = alexnet({k: tuple(v.shape) for k, v in state.items()})
    missing, unexpected = model.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    model.eval()
    scale = np.abs(expected).max()
    mask = np.abs(expected) > 1e-3 * scale
    print(f"{folder}: logits {expected.shape}, max |logit| {scale:.6g}")
    for dtype in (torch.float64, torch.float32):
        m = model.to(dtype)
        with torch.no_grad():
            got = m(x.to(dtype)).double().numpy()
        diff = np.abs(got - expected)
        print(
            f"  torch {str(dtype).split('.')[-1]}: "
            f"max abs diff / max |logit| = {diff.max() / scale:.3e}, "
            f"max elementwise rel diff = {(diff[mask] / np.abs(expected[mask])).max():.3e}, "
            f"argmax equal: {bool((got.argmax(1) == expected.argmax(1)).all())}"
        )


if __name__ == "__main__":
    main()
