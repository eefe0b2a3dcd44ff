"""How much a *randomly initialised* network already knows about the synthetic labels.

Linear probes on the frozen features of the small ConvNet at its random init (and, as references, on
raw pixels and on the ConvNet trained with the labels), for the shipped design or another one. The
random init is a *reference*, not a ceiling: the comparisons that teach are between trained models
(docs/research_log.md tells how the design was chosen, with the trained measurements behind it).

For each seed of the random init: build the small ConvNet (``equimod_edu.models.ConvNet``: 4 blocks
conv3x3-BN-ReLU, widths 32-64-128-256, strides 1-2-2-2, global average pool -> 256-d), extract
frozen features in eval mode, standardise them, and fit
- a logistic-regression probe (accuracy, %) per class label: shape, colour;
- a ridge-regression probe (R^2 on the test split) per continuous factor: x, y, scale, rotation.
``--supervised E`` also trains the ConvNet with labels for E epochs per class label: the label is
learnable from the image (an upper reference).

Run (2 CPU cores):
    python benchmarks/dataset_probe.py --seeds 0 --n-train 8000 --n-test 4000 --pixels 0 --supervised 2
    python benchmarks/dataset_probe.py --design first --seeds 0 --n-train 8000 --n-test 4000 --pixels 0
    python benchmarks/dataset_probe.py --set bg_sat=0.0,0.3   # try another design

Measured (torch 2.14.1, scikit-learn 1.9.1, one thread, the first two commands):

    design                                 shape    colour         x         y     scale  rotation
                                           acc %     acc %       R^2       R^2       R^2       R^2
    shipped (grey backgrounds), random      30.1      87.3     0.447     0.420     0.344    -0.001
    shipped, supervised ConvNet, 2 ep       84.6     100.0
    first design (coloured backgrounds)     23.2      58.3     0.128     0.133     0.069    -0.001
    chance                                  12.5       8.3     0.000     0.000     0.000     0.000

With grey backgrounds the random init reads the object's colour well (the mean colour of the image
is nearly the object's colour): fine, since the invariance is read against the same SimCLR trained
without colour augmentation, not against random init.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.preprocessing import StandardScaler

from equimod_edu.synthetic import SyntheticSpec, make_synthetic

try:
    from equimod_edu.models import ConvNet
except ImportError:  # models.py not there yet: the same architecture, defined here
    class ConvNet(nn.Module):
        """4 blocks conv3x3-BN-ReLU (widths w..8w, strides 1,2,2,2), global average pool."""

        def __init__(self, width: int = 32):
            super().__init__()
            layers, last = [], 3
            for w, s in zip((width, 2 * width, 4 * width, 8 * width), (1, 2, 2, 2)):
                layers += [nn.Conv2d(last, w, 3, s, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                last = w
            self.features, self.feature_dim = nn.Sequential(*layers), last

        def forward(self, x):
            return self.features(x).mean((2, 3))


CLASS_LABELS = ("shape", "colour")
FACTORS = ("x", "y", "scale", "rotation")

# The first shipped design: backgrounds blending two random *saturated* colours (a per-image
# identifier that survives crops and a small hue jitter; docs/research_log.md).
FIRST_DESIGN = SyntheticSpec(bg_sat=(0.2, 0.9), version=1)

# The first prototype, for comparison: 6 shapes x 8 saturated, bright hues on coloured noise.
PROTOTYPE = SyntheticSpec(
    n_shapes=6, n_hues=8, hue_jitter=5.0, obj_sat=(0.85, 1.0), obj_val=(0.85, 1.0),
    scale=(0.2, 0.32), position=(0.3, 0.7), rotation=(-30.0, 30.0), outline=0.0,
    bg_sat=(0.2, 0.6), bg_val=(0.2, 0.6), bg_blobs=8, texture=0.1,
)


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W) uint8 -> (N, 3, H, W) float``, per-channel standardised."""
    return (images.float() / 255 - mean[:, None, None]) / std[:, None, None]


@torch.no_grad()
def features(net: nn.Module, images: torch.Tensor, mean, std, batch: int = 500) -> np.ndarray:
    """Frozen features ``(N, D) float`` of ``images`` ``(N, 3, H, W) uint8`` (eval mode)."""
    net.eval()
    return torch.cat([net(normalise(x, mean, std)) for x in images.split(batch)]).numpy()


def probe(f_train, f_test, train, test) -> dict[str, float]:
    """Linear probes on standardised features: accuracy (%) per class label, R^2 per factor."""
    scaler = StandardScaler().fit(f_train)
    a, b = scaler.transform(f_train), scaler.transform(f_test)
    out = {}
    for k in CLASS_LABELS:
        clf = LogisticRegression(max_iter=300, C=1.0).fit(a, train.labels[k].numpy())
        out[k] = 100 * clf.score(b, test.labels[k].numpy())
    for k in FACTORS:
        ridge = RidgeCV(alphas=np.logspace(-1, 5, 7)).fit(a, train.labels[k].numpy())
        out[k] = ridge.score(b, test.labels[k].numpy())
    return out


def supervised(train, test, label: str, epochs: int, mean, std, seed: int = 0) -> float:
    """Test accuracy (%) of the ConvNet + linear head trained with labels (Adam, batch 128)."""
    torch.manual_seed(seed)
    backbone = ConvNet()
    net = nn.Sequential(backbone, nn.Linear(backbone.feature_dim, len(train.classes[label])))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * ((len(train) + 127) // 128))
    y = train.labels[label]
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(train)).split(128):
            loss = nn.functional.cross_entropy(net(normalise(train.images[idx], mean, std)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(normalise(x, mean, std)).argmax(1) for x in test.images.split(500)])
    return 100 * (pred == test.labels[label]).float().mean().item()


def parse_knob(text: str) -> tuple[str, object]:
    """"scale=0.16,0.3" -> ("scale", (0.16, 0.3)); "n_hues=10" -> ("n_hues", 10)."""
    key, value = text.split("=", 1)
    numbers = tuple(int(v) if v.lstrip("-").isdigit() else float(v) for v in value.split(","))
    return key, numbers if len(numbers) > 1 else numbers[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--design", choices=["default", "first", "prototype"], default="default")
    p.add_argument("--n-train", type=int, default=16_000)
    p.add_argument("--n-test", type=int, default=4_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the random init")
    p.add_argument("--pixels", type=int, default=6_000, help="train images for the raw-pixel probe (0: skip)")
    p.add_argument("--supervised", type=int, default=0, help="epochs of supervised training (0: skip)")
    p.add_argument("--set", nargs="*", default=[], metavar="KNOB=VALUE",
                   help="override SyntheticSpec knobs, e.g. --set n_hues=10 scale=0.16,0.3")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # sklearn's ill-conditioning notes on raw pixels
    spec = {"default": SyntheticSpec(), "first": FIRST_DESIGN, "prototype": PROTOTYPE}[args.design]
    spec = dataclasses.replace(spec, **dict(parse_knob(kv) for kv in args.set))

    t = time.process_time()
    train, test = make_synthetic(args.n_train, 32, 0, spec), make_synthetic(args.n_test, 32, 1, spec)
    print(f"design {args.design}: {len(train)} train / {len(test)} test, built in "
          f"{time.process_time() - t:.1f} s of CPU time; spec = {spec}")
    x = train.images.float() / 255
    mean, std = x.mean((0, 2, 3)), x.std((0, 2, 3))

    rows = {}
    for seed in args.seeds:
        torch.manual_seed(seed)
        net = ConvNet()
        rows[f"random ConvNet, seed {seed}"] = probe(features(net, train.images, mean, std),
                                                     features(net, test.images, mean, std), train, test)
    if args.pixels:
        sub = train.subset(slice(0, args.pixels))
        flat = lambda d: normalise(d.images, mean, std).flatten(1).numpy()  # noqa: E731
        rows[f"raw pixels ({len(sub)} train)"] = probe(flat(sub), flat(test), sub, test)
    if args.supervised:
        rows[f"supervised ConvNet, {args.supervised} ep"] = {
            k: supervised(train, test, k, args.supervised, mean, std) for k in CLASS_LABELS}

    chance = {k: 100 / len(train.classes[k]) for k in CLASS_LABELS} | {k: 0.0 for k in FACTORS}
    cols = CLASS_LABELS + FACTORS
    print(f"\n{'features':34s}" + "".join(f"{c:>10s}" for c in cols))
    print(f"{'':34s}" + "".join(f"{'acc %' if c in CLASS_LABELS else 'R^2':>10s}" for c in cols))
    for name, r in list(rows.items()) + [("chance", chance)]:
        print(f"{name:34s}" + "".join(f"{r[c]:10.3f}" if c in FACTORS and c in r else
                                      f"{r[c]:10.1f}" if c in r else f"{'':>10s}" for c in cols))
    print(f"\ntotal CPU time {time.process_time() - t:.0f} s")


if __name__ == "__main__":
    main()
